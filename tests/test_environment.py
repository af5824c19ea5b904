"""Two checkouts share the cached environment without re-pointing each other (issue 15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _medseg_file(venv_python: Path, cwd: Path) -> Path:
    out = subprocess.run(
        [str(venv_python), "-c", "import medseg; print(medseg.__file__)"],
        cwd="/",  # not the checkout: the import must come from the layered .venv, not the cwd
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def test_second_checkout_gets_its_own_layer(tmp_path: Path) -> None:
    layer = (REPO / ".venv" / ".layer").read_text().split()
    cache, owner = Path(layer[0]), Path(layer[1])
    assert owner == REPO and (cache / ".complete").is_file()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run(
        ["bash", "tools/bootstrap_env.sh", sys.executable, str(cache), ".venv"],
        cwd=clone,
        check=True,
        capture_output=True,
    )
    # each checkout runs its own code; the clone did not re-point the first checkout
    assert _medseg_file(clone / ".venv" / "bin" / "python", clone).is_relative_to(clone)
    assert _medseg_file(REPO / ".venv" / "bin" / "python", REPO).is_relative_to(REPO)
    assert (REPO / ".venv" / ".layer").read_text().split() == layer
    # the clone's layer is light: no packages of its own, the heavy ones come from the cache
    files = [p for p in (clone / ".venv").rglob("*") if p.is_file() and not p.is_symlink()]
    size = sum(p.stat().st_size for p in files)
    assert size < 5_000_000
    scripts = clone / ".venv" / "bin"
    assert (scripts / "medseg").read_text().startswith(f"#!{clone}/.venv/bin/python")
    version = subprocess.run(
        [str(scripts / "medseg"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == "medseg 0.1.0"
