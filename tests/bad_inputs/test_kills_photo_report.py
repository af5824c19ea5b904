"""SIGKILL tests for ``medseg photo train``, ``photo measure``, ``photo track`` and ``medseg
report`` (issue 20): killed at two or more moments each, then the output is complete or
recognisably incomplete (never taken as complete), the rerun succeeds, its outputs are read back
and checked, and no hidden temporary file or folder is left.

The child process runs the real CLI and kills itself with SIGKILL at a counted moment (patched
``os`` / ``tempfile`` calls, deterministic, unlike a timer):

- ``mid_write:N`` -- the N-th atomic file write has its temporary file half written;
- ``replace:N`` -- the N-th atomic file is complete in its temporary file, never renamed;
- ``after:N`` -- the N-th atomic file is in place, the files after it are not written;
- ``rename:N`` -- the N-th folder rename (``write_folder_atomic``) never happens.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image
from tiny_models import tiny_checkpoint

from medseg.cli import main

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import os, signal, sys, tempfile
    moment, argv = sys.argv[1], sys.argv[2:]
    kind, n = moment.split(":")
    n = int(n)
    seen = []

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def is_atomic_tmp(path):
        name = os.path.basename(os.fspath(path))
        return name.startswith(".") and ".tmp" in name

    if kind == "mid_write":
        real_mkstemp = tempfile.mkstemp
        def mkstemp(*a, **k):
            fd, name = real_mkstemp(*a, **k)
            if is_atomic_tmp(name):
                seen.append(name)
                if len(seen) == n:
                    os.write(fd, b"half a file")
                    die()
            return fd, name
        tempfile.mkstemp = mkstemp
    elif kind in ("replace", "after"):
        real_replace = os.replace
        def replace(src, dst, *a, **k):
            if is_atomic_tmp(src):
                seen.append(src)
                if len(seen) == n and kind == "replace":
                    die()
                real_replace(src, dst, *a, **k)
                if len(seen) == n:
                    die()
                return None
            return real_replace(src, dst, *a, **k)
        os.replace = replace
    elif kind == "rename":
        real_rename = os.rename
        def rename(src, dst, *a, **k):
            seen.append(src)
            if len(seen) == n:
                die()
            return real_rename(src, dst, *a, **k)
        os.rename = rename
    from medseg.cli import main
    sys.exit(main(argv))
    """
)

WOUNDS = ("0011", "0012", "0015")  # FUSeg training photos with their reference masks


def _run(moment: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, moment, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _killed(moment: str, argv: list[str]) -> None:
    result = _run(moment, argv)
    assert result.returncode == -signal.SIGKILL, (moment, result.returncode, result.stderr[-3000:])


def _hidden(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def _rerun(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    return err


# -- photo measure ------------------------------------------------------------------------------


def _measure_argv(shared_data: Path, out: Path) -> list[str]:
    labels = shared_data / "fuseg_wound" / "train" / "labels"
    masks = [str(labels / f"{s}.png") for s in WOUNDS]
    return ["photo", "measure", *masks, "--mm-per-pixel", "0.5", "-o", str(out)]


def _check_measurements(out: Path, shared_data: Path) -> None:
    from medseg.photo.datasets import read_mask

    results = json.loads(out.read_text())
    labels = shared_data / "fuseg_wound" / "train" / "labels"
    assert list(results) == [str(labels / f"{s}.png") for s in WOUNDS]
    for stem in WOUNDS:
        result = results[str(labels / f"{stem}.png")]
        area = int(read_mask(labels / f"{stem}.png").sum())
        assert area > 100 and result["total"]["area_px"] == area
        assert result["total"]["area_mm2"] == pytest.approx(area * 0.25)
        assert sum(r["area_px"] for r in result["regions"]) == area


@pytest.mark.parametrize("moment", ["mid_write:1", "replace:1"])
def test_photo_measure_killed_then_rerun(
    moment: str, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m" / "measurements.json"
    argv = _measure_argv(shared_data, out)
    _killed(moment, argv)
    assert not out.exists()  # never a half-written JSON in place
    assert _hidden(tmp_path) != []  # the killed writer's temporary file...
    _rerun(argv, capsys)  # the output is absent: no --overwrite needed
    _check_measurements(out, shared_data)
    assert _hidden(tmp_path) == []  # ...is removed by the rerun


def test_photo_measure_killed_while_overwriting_keeps_the_old_file(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "measurements.json"
    argv = _measure_argv(shared_data, out)
    _rerun(argv, capsys)
    before = out.read_bytes()
    _killed("replace:1", [*argv, "--overwrite"])
    assert out.read_bytes() == before  # the complete old file, untouched
    _rerun([*argv, "--overwrite"], capsys)
    _check_measurements(out, shared_data)
    assert _hidden(tmp_path) == []


# -- photo track --------------------------------------------------------------------------------


def _track_inputs(shared_data: Path, tmp_path: Path) -> tuple[list[str], Path]:
    root = shared_data / "fuseg_wound" / "train"
    photos, masks = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir()
    masks.mkdir()
    names = []
    for day, stem in zip(("2024-01-01", "2024-01-15", "2024-02-01"), WOUNDS, strict=True):
        name = f"wound_{day}"
        (photos / f"{name}.png").symlink_to(root / "images" / f"{stem}.png")
        (masks / f"{name}.png").symlink_to(root / "labels" / f"{stem}.png")
        names.append(str(photos / f"{name}.png"))
    return names, masks


def _check_series(out: Path, shared_data: Path) -> None:
    labels = shared_data / "fuseg_wound" / "train" / "labels"
    from medseg.photo.datasets import read_mask

    expected = [int(read_mask(labels / f"{s}.png").sum()) * 0.25 / 100 for s in WOUNDS]
    rows = json.loads((out / "area_series.json").read_text())["rows"]
    assert [r["area_cm2"] for r in rows] == pytest.approx(expected, rel=1e-3)
    table = list(csv.DictReader((out / "area_series.csv").open()))
    assert [float(r["area_cm2"]) for r in table] == pytest.approx(expected, rel=1e-3)
    assert Image.open(out / "area_series.png").size[0] > 100
    assert sorted(p.name for p in out.iterdir()) == [
        "area_series.csv",
        "area_series.json",
        "area_series.png",
    ]


@pytest.mark.parametrize("moment", ["mid_write:1", "after:1", "replace:3"])
def test_photo_track_killed_then_rerun(
    moment: str, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos, masks = _track_inputs(shared_data, tmp_path)
    out = tmp_path / "series"
    argv = ["photo", "track", *photos, "--masks", str(masks), "-o", str(out)]
    argv += ["--mm-per-pixel", "0.5"]
    _killed(moment, argv)
    # an interrupted set never has its index (area_series.json, written last)
    assert not (out / "area_series.json").exists()
    err = _rerun(argv, capsys)  # recognised as incomplete: replaced without --overwrite
    if moment != "mid_write:1":
        assert "did not finish" in err
    _check_series(out, shared_data)
    assert _hidden(tmp_path) == []


def test_photo_track_killed_while_overwriting_is_incomplete_not_mixed(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos, masks = _track_inputs(shared_data, tmp_path)
    out = tmp_path / "series"
    argv = ["photo", "track", *photos, "--masks", str(masks), "-o", str(out)]
    _rerun([*argv, "--mm-per-pixel", "0.5"], capsys)
    # a rerun at another scale, killed after its CSV is in place: old JSON + new CSV would be a
    # mixed set, so the old index goes first
    _killed("after:1", [*argv, "--mm-per-pixel", "1.0", "--overwrite"])
    assert not (out / "area_series.json").exists()
    _rerun([*argv, "--mm-per-pixel", "0.5"], capsys)
    _check_series(out, shared_data)
    assert _hidden(tmp_path) == []


# -- photo train --------------------------------------------------------------------------------


def _train_config(shared_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "name: tiny\ndatasets: [medetec_wound]\n"
        f"data_root: {shared_data}\noutput_dir: {run}\n"
        "architecture: mobilenet_v3_fpn\nimage_size: 64\nbatch_size: 4\n"
        "iterations: 2\neval_every: 1\nwarmup_iterations: 1\n"
        "bf16: false\ndevice: cpu\nnum_threads: 1\n"
    )
    return cfg, run


def _check_run(run: Path) -> None:
    from medseg.photo.checkpoint import load_photo_model, read_checkpoint

    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # one row per period, none repeated
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert all(float(r["loss"]) > 0 and 0 <= float(r["val_dice"]) <= 1 for r in rows)
    assert read_checkpoint(run / "last.pt")[0]["iteration"] == 2
    _, info = load_photo_model(run / "final.pt")
    assert info.metrics["iterations_trained"] == 2 and info.metrics["n_train"] == 12
    assert json.loads((run / "split.json").read_text())["held_out"]


# writes: split.json (1), config.json (2), then per period last.pt (3/5) and the curve (4/6),
# then final.pt (7)
@pytest.mark.parametrize(
    ("moment", "resume"),
    [("mid_write:3", False), ("replace:5", True), ("replace:7", True)],
    ids=["first-checkpoint-half-written", "second-checkpoint-resume", "final-checkpoint-resume"],
)
def test_photo_train_killed_then_rerun(
    moment: str,
    resume: bool,
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, run = _train_config(shared_data, tmp_path)
    argv = ["photo", "train", str(cfg)]
    _killed(moment, argv)
    assert not (run / "final.pt").exists()  # a killed run never looks finished
    assert _hidden(run) != []
    _rerun([*argv, "--resume"] if resume else argv, capsys)
    _check_run(run)
    assert _hidden(run) == []


# -- medseg report ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A contour batch without manifest: two studies segmented by a tiny model."""
    root = tmp_path_factory.mktemp("report_batch")
    ckpt = tiny_checkpoint(root / "tiny.pt", (6.0, 8.0, 8.0), (16, 32, 32))
    ct = shared_data / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"
    for key in ("study_a", "study_b"):
        out = root / "batch" / "studies" / key
        argv = ["segment", str(ct), "-o", str(out), "--model", str(ckpt), "--overlap", "0"]
        assert main(argv) == 0
    return root / "batch"


def _check_report(out: Path) -> None:
    report = out / "report"
    review = json.loads((report / "review.json").read_text())
    assert [s["key"] for s in review["studies"]] == ["study_a", "study_b"]
    index = (report / "index.html").read_text()
    assert index.rstrip().endswith("</html>") and "study_a" in index and "study_b" in index
    for key in ("study_a", "study_b"):
        assert (report / f"{key}.html").read_text().rstrip().endswith("</html>")
        assert (report / "img" / key / "volumes.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("moment", "first_report"),
    [("after:2", True), ("rename:1", True), ("after:2", False), ("rename:2", False)],
    ids=["mid-pages", "before-rename", "rebuild-mid-pages", "rebuild-old-moved-aside"],
)
def test_report_killed_then_rerun(
    moment: str,
    first_report: bool,
    batch: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    out = tmp_path / "batch"
    shutil.copytree(batch, out, symlinks=True)
    argv = ["report", str(out)]
    if not first_report:
        _rerun(argv, capsys)
        (out / "report" / "marker").write_text("from the first report")
    _killed(moment, argv)
    report = out / "report"
    if first_report:
        assert not report.exists()  # no report until it is complete
    else:  # the previous complete report, never a mix of old and new pages
        assert not report.exists() or (report / "marker").is_file()
    _rerun(argv, capsys)
    _check_report(out)
    assert not (report / "marker").exists()  # the rebuilt report, not the old one
    assert _hidden(out) == []
