"""A minimal W3C WebDriver client (stdlib only) for headless Chromium via chromedriver."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
CHROME_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


def find_browser() -> tuple[str, str]:
    """Paths of chromedriver and chromium (Debian's ``chromium`` + ``chromium-driver``)."""
    driver = shutil.which("chromedriver")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not driver or not browser:
        raise RuntimeError(
            "chromium and chromedriver are needed for the report's browser test: "
            "apt-get install chromium chromium-driver (make test installs them as root)."
        )
    return driver, browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """Headless Chromium driven over the WebDriver protocol; use as a context manager."""

    def __init__(self, *, width: int = 1366, height: int = 900) -> None:
        driver, browser = find_browser()
        self.port = _free_port()
        self.profile = tempfile.mkdtemp(prefix="medseg-chromium-")
        self.proc = subprocess.Popen(
            [driver, f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status").get("ready"):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromedriver did not start within 30 s")
            time.sleep(0.2)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": browser,
                        "args": [
                            *CHROME_ARGS,
                            f"--user-data-dir={self.profile}",
                            f"--window-size={width},{height}",
                        ],
                    },
                    "goog:loggingPrefs": {"browser": "ALL"},
                }
            }
        }
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read() or b"{}").get("value")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"WebDriver {method} {path}: {exc.read()[:500]!r}") from exc

    def cmd(self, method: str, path: str, body: Any = None) -> Any:
        """A command of this session (``path`` after ``/session/<id>``)."""
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        """Load a page and wait for it."""
        self.cmd("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Execute JavaScript (function body) and return its value."""
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    @property
    def url(self) -> str:
        return str(self.cmd("GET", "/url"))

    def console(self) -> list[dict[str, Any]]:
        """Browser console entries since the last call (level, message)."""
        return list(self.cmd("POST", "/se/log", {"type": "browser"}) or [])

    def click(self, css: str) -> None:
        """Click the first element matching a CSS selector."""
        el = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        self.cmd("POST", f"/element/{el[ELEMENT]}/click", {})

    def screenshot(self, path: str | os.PathLike[str], *, full_height: bool = True) -> Path:
        """Save a PNG of the page (the window grown to the page height when ``full_height``)."""
        if full_height:
            h = int(self.run("return document.documentElement.scrollHeight;") or 900)
            w = int(self.run("return window.outerWidth;") or 1366)
            self.cmd("POST", "/window/rect", {"width": w, "height": min(max(h + 120, 600), 6000)})
        png = base64.b64decode(self.cmd("GET", "/screenshot"))
        out = Path(path)
        out.write_bytes(png)
        return out

    def close(self) -> None:
        """End the session and stop chromedriver."""
        try:
            if getattr(self, "session", None):
                self._call("DELETE", f"/session/{self.session}")
        except (RuntimeError, urllib.error.URLError, ConnectionError):
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
