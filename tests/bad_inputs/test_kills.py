"""SIGKILL at the worst moments of every command that writes: complete or absent, rerun works,
no leftovers (issue 20).

Each case runs the real CLI in a child process that kills itself with SIGKILL at a chosen
moment (a patched library function sends the signal: deterministic, unlike a timer). Then the
output must be either complete or absent (never a label map without its JSON, never a hidden
temporary file or folder left for ever), and running the same command again must succeed and
leave nothing behind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tiny_models import tiny_checkpoint

from medseg.cli import main
from medseg.study import is_complete_output

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    moment, argv = sys.argv[1], sys.argv[2:]

    def die(*_a, **_k):
        os.kill(os.getpid(), signal.SIGKILL)

    import medseg.io as mio
    import medseg.io.atomic as atomic
    if moment == "after_nifti":  # the label map is written, its JSON not yet
        import medseg.io.image_files as files
        real_write = files.write_image_file
        def write_then_die(*a, **k):
            real_write(*a, **k)
            die()
        files.write_image_file = write_then_die
        mio.write_image_file = write_then_die
    elif moment == "before_rename":  # a complete temporary folder/file, not yet renamed
        atomic.os.rename = die
        atomic.os.replace = die
    elif moment == "mid_replace":  # the old output moved aside, the new one not yet in place
        real_rename = atomic.os.rename
        calls = []
        def rename_twice(a, b):
            calls.append(a)
            if len(calls) == 2:
                die()
            real_rename(a, b)
        atomic.os.rename = rename_twice
    elif moment == "third_write":  # some files of a multi-file output written, not all
        real_write = atomic.write_atomic
        count = []
        def write_twice(path, writer):
            count.append(path)
            if len(count) == 3:  # the temporary file is complete, the rename never happens
                def then_die(tmp):
                    writer(tmp)
                    die()
                return real_write(path, then_die)
            return real_write(path, writer)
        atomic.write_atomic = write_twice
        import medseg.photo.outputs as outputs
        import medseg.photo.predict as predict
        for module in (outputs, predict):
            if hasattr(module, "write_atomic"):
                module.write_atomic = write_twice
    elif moment == "mid_predict":
        from medseg.inference import sliding_window as sw
        real = sw.gaussian_importance_map
        def then_die(*a, **k):
            real(*a, **k)
            die()
        sw.gaussian_importance_map = then_die
    from medseg.cli import main
    sys.exit(main(argv))
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight checkpoint naming the seven OpenKBP organs."""
    return tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny.pt", (6.0, 8.0, 8.0), (16, 32, 32)
    )


def _run(moment: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, moment, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.name != ".")


@pytest.mark.parametrize("moment", ["mid_predict", "after_nifti", "before_rename"])
def test_segment_killed_then_rerun(
    moment: str, checkpoint: Path, shared_data: Path, tmp_path: Path
) -> None:
    ct = shared_data / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"
    out = tmp_path / "out"
    argv = ["segment", str(ct), "-o", str(out), "--model", str(checkpoint), "--overlap", "0"]
    killed = _run(moment, argv)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists() or is_complete_output(out)  # never half written
    assert not out.exists(), "killed before the rename: the folder must be absent"
    assert main(argv) == 0  # the rerun (in this process: a child costs a torch import)
    assert is_complete_output(out)
    assert json.loads((out / "segmentation.json").read_text())["labels"][0]["name"] == "Brainstem"
    assert _hidden(tmp_path) == [], "the rerun must remove what the killed run left"


def test_segment_killed_while_replacing_keeps_a_complete_folder(
    checkpoint: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ct = shared_data / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"
    out = tmp_path / "out"
    argv = ["segment", str(ct), "-o", str(out), "--model", str(checkpoint), "--overlap", "0"]
    assert main(argv) == 0
    first = json.loads((out / "segmentation.json").read_text())["timings"]["total_s"]
    killed = _run("mid_replace", [*argv, "--overwrite"])
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()  # the old folder is aside, the new one not yet in place
    # the next run puts the old complete folder back before deciding what to do
    capsys.readouterr()
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert is_complete_output(out)
    assert json.loads((out / "segmentation.json").read_text())["timings"]["total_s"] == first
    assert main([*argv, "--overwrite"]) == 0
    assert is_complete_output(out) and _hidden(tmp_path) == []


def test_evaluate_and_export_killed_before_rename(shared_data: Path, tmp_path: Path) -> None:
    test = shared_data / "deepmind_hn_oar_masks" / "test"
    case = sorted(p.name for p in (test / "radiographer").iterdir() if p.is_dir())[0]
    pred, ref = test / "radiographer" / case, test / "oncologist" / case
    out_json = tmp_path / "metrics.json"
    argv = ["evaluate", str(pred), str(ref), "--json", str(out_json)]
    killed = _run("before_rename", argv)
    assert killed.returncode == -signal.SIGKILL
    assert not out_json.exists()
    assert _hidden(tmp_path) != []  # the killed writer's temporary file is there...
    assert main(argv) == 0
    assert json.loads(out_json.read_text())
    assert _hidden(tmp_path) == []  # ...and the rerun removed it


def test_photo_predict_killed_midway_then_rerun(shared_data: Path, tmp_path: Path) -> None:
    images = sorted((shared_data / "fuseg_wound" / "train" / "images").glob("*.png"))[:3]
    out = tmp_path / "photos"
    argv = ["photo", "predict", *map(str, images), "-o", str(out), "--device", "cpu"]
    killed = _run("third_write", [*argv, "--no-progress"])
    assert killed.returncode == -signal.SIGKILL
    left = sorted(p.name for p in out.iterdir())
    assert "predictions.json" not in left and left  # an incomplete set: some files, no index
    assert main([*argv, "--no-progress"]) == 0  # recognised and replaced without --overwrite
    index = json.loads((out / "predictions.json").read_text())
    assert [r["stem"] for r in index["images"]] == [p.stem for p in images]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["predictions.json", *(f"{p.stem}_{k}.png" for p in images for k in ("mask", "overlay"))]
    )


def test_export_killed_before_rename(shared_data: Path, tmp_path: Path) -> None:
    ct = shared_data / "dcmqi_ct3slice_seg"
    series, seg = ct / "ct-3slice", ct / "liver_seg.nrrd"
    out = tmp_path / "seg.dcm"
    argv = ["export", str(seg), "--reference", str(series), "--format", "seg", "-o", str(out)]
    killed = _run("before_rename", argv)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and _hidden(tmp_path) != []
    assert main(argv) == 0
    assert out.stat().st_size > 0 and _hidden(tmp_path) == []


def test_train_killed_while_saving_a_checkpoint_then_rerun(
    shared_data: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for name in ("pt_4", "pt_100"):
        (root / name).symlink_to(shared_data / "openkbp_hn_ct" / "train-pats" / name)
    cfg = tmp_path / "tiny.yaml"
    run = tmp_path / "run"
    cfg.write_text(
        f"name: tiny\noutput_dir: {run}\nnum_threads: 1\n"
        f"data: {{root: {root}, val_cases: [pt_100]}}\n"
        "preprocessing: {spacing_mm: [6.0, 8.0, 8.0], roi_size: [16, 32, 32]}\n"
        "model: {name: unet3d, options: {channels: [4, 8]}}\n"
        "optim: {epochs: 1, samples_per_case: 1, val_every: 1, amp: false}\n"
    )
    argv = ["train", str(cfg), "--no-progress"]
    killed = _run("third_write", argv)  # config.json, cases.json, then the first checkpoint
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "best.pt").exists() and _hidden(run) != []
    assert main(argv) == 0
    assert {"best.pt", "last.pt", "log.csv"} <= {p.name for p in run.iterdir()}
    assert _hidden(run) == []
