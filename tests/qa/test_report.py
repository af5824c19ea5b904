"""The review report of a real batch (``medseg contour`` on shared CTs), checked on disk and in
headless Chromium (Debian's chromium + chromium-driver)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.contour import ContourConfig, run_contour
from medseg.io import save_volume
from medseg.io.openkbp import load_openkbp_ct
from medseg.qa import write_report

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "openkbp_hn_ct" / "train-pats"
ARTEFACTS = Path("/tmp/medseg-test-artefacts")
ROW_KEYS = (
    "return Array.from(document.querySelectorAll('#studies tbody tr')).map(r => r.dataset.key)"
)


def _inputs(folder: Path) -> list[Path]:
    """pt_100, pt_112 (OpenKBP with clinical contours), pt_13 as NIfTI cut below the skull base
    (brainstem and parotids outside the scan: flagged), and a truncated NIfTI (failed)."""
    folder.mkdir(parents=True, exist_ok=True)
    ct = load_openkbp_ct(DATA / "pt_13")
    axis = int(np.argmax(np.abs(ct.affine[2, :3])))  # the axis closest to superior
    up = ct.affine[2, axis] > 0
    n = ct.shape[axis]
    keep = slice(0, int(n * 0.42)) if up else slice(n - int(n * 0.42), n)
    index: list[slice] = [slice(None)] * 3
    index[axis] = keep
    start = np.zeros(4)
    start[axis] = keep.start
    start[3] = 1.0
    affine = ct.affine.copy()
    affine[:3, 3] = (ct.affine @ start)[:3]
    cut = dataclasses.replace(ct, array=np.ascontiguousarray(ct.array[tuple(index)]), affine=affine)
    save_volume(cut, folder / "neck_only.nii.gz", overwrite=True)
    whole = folder / "whole.nii.gz"
    save_volume(ct, whole, overwrite=True)
    (folder / "truncated.nii.gz").write_bytes(whole.read_bytes()[:4000])
    whole.unlink()
    return [
        DATA / "pt_100",
        DATA / "pt_112",
        folder / "neck_only.nii.gz",
        folder / "truncated.nii.gz",
    ]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("qa_batch")
    inputs = _inputs(root / "in")
    out = root / "out"
    config = ContourConfig.from_dict(
        {
            "inference": {"overlap": 0.25},
            "cluster": {"workers": 1, "threads_per_worker": 2, "torch_threads": 2},
        }
    )
    result = run_contour(inputs, out, config)
    assert result.counts["done"] == 3 and result.counts["failed"] == 1
    write_report(out, inputs=inputs)
    return out, inputs


def test_report_files_and_content(batch: tuple[Path, list[Path]]) -> None:
    out, _ = batch
    report = out / "report"
    data = json.loads((report / "review.json").read_text())
    studies = {s["key"]: s for s in data["studies"]}
    assert len(studies) == 4
    states = sorted(s["state"] for s in studies.values())
    assert states == ["done", "done", "done", "failed"]
    # the neck-only CT: brainstem and parotids missing, flagged with the reason
    cut = [s for s in studies.values() if s["state"] == "done" and not s["metrics"]]
    assert len(cut) == 1
    cut_organs = cut[0]["organs"]
    assert "Brainstem" in cut[0]["flagged"]
    assert cut_organs["Brainstem"]["flags"][0]["name"] == "missing"
    assert cut_organs["Brainstem"]["score"] == 10.0
    # the OpenKBP studies carry reference metrics from their clinical contours
    scored = [s for s in studies.values() if s["metrics"]]
    assert len(scored) == 2
    for s in scored:
        assert set(s["metrics"]) == {
            "Brainstem",
            "SpinalCord",
            "LeftParotid",
            "RightParotid",
            "Esophagus",
            "Larynx",
            "Mandible",
        }
        assert np.mean([m["dice"] for m in s["metrics"].values()]) > 0.5
    index = (report / "index.html").read_text()
    # failed first, then the flagged study
    keys = re.findall(r'<tr class="(\w+)" data-key="([\w-]+)"', index)
    assert [k[0] for k in keys[:2]] == ["failed", "flagged"]
    assert keys[1][1] == cut[0]["key"]
    # no identifiers: no input path or patient folder name anywhere in the report
    for page in report.glob("*.html"):
        text = page.read_text()
        assert "pt_100" not in text and "neck_only" not in text and "truncated.nii" not in text
        assert "http://" not in text and "https://" not in text  # nothing fetched from a network
    assert "truncated.nii" not in (report / "review.json").read_text()
    for key in studies:
        if studies[key]["state"] == "done":
            assert (report / f"{key}.html").is_file()
            assert (report / "img" / key / "volumes.png").is_file()


def test_identifiers_only_when_asked(batch: tuple[Path, list[Path]], tmp_path: Path) -> None:
    out, inputs = batch
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report"))
    from medseg.cli import main

    args = ["report", str(copy), "--show-identifiers", "--inputs", *map(str, inputs)]
    assert main(args) == 0
    index = (copy / "report" / "index.html").read_text()
    assert "truncated.nii.gz" in index  # the failure reason keeps its path
    page = next(p for p in (copy / "report").glob("f-*.html"))
    assert "input:" in page.read_text()


def test_report_in_headless_chromium(batch: tuple[Path, list[Path]]) -> None:
    from qa_webdriver import Browser

    out, _ = batch
    report = out / "report"
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    data = json.loads((report / "review.json").read_text())
    flagged_key = next(s["key"] for s in data["studies"] if "Brainstem" in s["flagged"])
    scored_key = next(s["key"] for s in data["studies"] if s["metrics"])
    with Browser() as b:
        b.get((report / "index.html").as_uri())
        assert b.run("return document.readyState") == "complete"
        assert [e for e in b.console() if e.get("level") == "SEVERE"] == []
        assert b.run("return document.querySelectorAll('#studies tbody tr').length") == 4
        widths = b.run("return Array.from(document.images).map(i => i.naturalWidth)")
        assert widths and all(w > 0 for w in widths)
        # the flagged study shows as flagged (badge and its flags)
        row = b.run(
            "var r = document.querySelector('tr[data-key=\"' + arguments[0] + '\"]');"
            "return [r.className, r.cells[1].innerText, r.cells[3].innerText];",
            flagged_key,
        )
        assert row[0] == "flagged" and "flagged" in row[1] and "Brainstem: missing" in row[2]
        b.screenshot(ARTEFACTS / "qa_batch.png")
        # sorting by a column reorders the rows
        before = b.run(ROW_KEYS)
        b.click("#studies th:nth-child(1)")
        after = b.run(ROW_KEYS)
        assert sorted(before) == sorted(after) and after == sorted(after)
        # every study link opens a page whose images decode and whose back link works
        links = b.run("return Array.from(document.querySelectorAll('#studies a')).map(a => a.href)")
        assert len(links) == 3
        for link in links:
            b.get(link)
            assert [e for e in b.console() if e.get("level") == "SEVERE"] == []
            widths = b.run("return Array.from(document.images).map(i => i.naturalWidth)")
            assert len(widths) >= 2 and all(w > 0 for w in widths)
            assert b.run("return document.querySelectorAll('#organs tbody tr').length") == 7
            if flagged_key in link:
                text = b.run("return document.body.innerText")
                assert "missing: no voxel of this organ was segmented" in text
                b.screenshot(ARTEFACTS / "qa_study_flagged.png")
            if scored_key in link:
                # reference contours drawn (dashed) and scored in the organ table
                cells = b.run(
                    "return Array.from(document.querySelectorAll('#organs tbody tr'))"
                    ".map(r => r.cells[9].innerText)"
                )
                assert all(float(c) > 0 for c in cells)
                b.screenshot(ARTEFACTS / "qa_study_reference.png")
        b.click("a[href='index.html']")
        assert b.url.endswith("/index.html")
        assert b.run("return document.querySelectorAll('#studies tbody tr').length") == 4
    assert (ARTEFACTS / "qa_batch.png").stat().st_size > 10_000
