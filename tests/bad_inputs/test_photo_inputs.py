"""Bad photo inputs (issue 20): exit status, a message naming the problem, no traceback, no
output left behind; 16-bit photos scaled properly; memory bounded on a 12000 x 12000 JPEG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import medseg.photo.predict as predict_module
from medseg.cli import main
from medseg.photo.checkpoint import save_checkpoint
from medseg.photo.datasets import MAX_PHOTO_PIXELS, read_mask, read_photo
from medseg.photo.models import ModelSpec, build_maskrcnn

WOUND = "0011"  # a FUSeg photo the shipped wound model segments well


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised light Mask R-CNN saved in the medseg photo checkpoint format.

    Defined here, not in a ``conftest.py`` of this folder: a second ``conftest`` module collected
    before ``tests/conftest.py`` breaks the suite's collection (``--doctest-modules``).
    """
    torch.manual_seed(0)
    spec = ModelSpec("mobilenet_v3_fpn", 2, 64, ("wound",))
    model = build_maskrcnn(spec.architecture, num_classes=2, image_size=64)
    path = tmp_path_factory.mktemp("photo_ckpt") / "tiny.pt"
    return save_checkpoint(path, {"model": model.state_dict(), "spec": spec.to_dict()}, half=True)


def _fuseg(shared_data: Path, stem: str = WOUND) -> tuple[Path, Path]:
    root = shared_data / "fuseg_wound" / "train"
    return root / "images" / f"{stem}.png", root / "labels" / f"{stem}.png"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _predict(photos: list[Path], out: Path, *extra: str) -> list[str]:
    return ["photo", "predict", *map(str, photos), "-o", str(out), "--no-progress", *extra]


# -- 16-bit photos ------------------------------------------------------------------------------


def test_16bit_rgb_photo_gives_the_8bit_result(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo, label = _fuseg(shared_data)
    rgb = read_photo(photo)
    deep = tmp_path / "deep.tif"
    tifffile.imwrite(deep, rgb.astype(np.uint16) * 257, photometric="rgb")
    assert np.array_equal(read_photo(deep), rgb)
    code, _ = _run(_predict([photo, deep], tmp_path / "o", "--model", "wound"), capsys)
    assert code == 0
    masks = [read_mask(tmp_path / "o" / f"{s}_mask.png") for s in (WOUND, "deep")]
    assert np.array_equal(masks[0], masks[1])
    ref = read_mask(label)
    dice = 2 * (masks[1] & ref).sum() / (masks[1].sum() + ref.sum())
    assert dice > 0.7  # the wound is found on the 16-bit file


def test_16bit_greyscale_png_keeps_its_grey_levels(
    tmp_path: Path, shared_data: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo, _ = _fuseg(shared_data)
    grey = np.asarray(Image.open(photo).convert("L"))
    eight, sixteen = tmp_path / "eight.png", tmp_path / "sixteen.png"
    Image.fromarray(grey).save(eight)
    Image.fromarray(grey.astype(np.uint16) * 257).save(sixteen)
    assert Image.open(sixteen).mode == "I;16"
    # the bug: Pillow's own conversion clips 16-bit values to (nearly) two grey levels
    assert len(np.unique(np.asarray(Image.open(sixteen).convert("RGB")))) <= 3
    scaled = read_photo(sixteen)
    assert scaled.shape == (512, 512, 3) and np.array_equal(scaled, read_photo(eight))
    assert len(np.unique(scaled)) == len(np.unique(grey)) > 100
    args = ["--model", str(tiny_checkpoint), "--score-threshold", "0"]
    code, _ = _run(_predict([eight, sixteen], tmp_path / "o", *args), capsys)
    assert code == 0
    records = json.loads((tmp_path / "o" / "predictions.json").read_text())["images"]
    assert records[0]["instances"] == records[1]["instances"] != []


def test_32bit_and_float_images_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = tmp_path / "wide.tif"
    Image.fromarray(np.full((64, 64), 100_000, np.int32)).save(wide)
    floating = tmp_path / "float.tif"
    Image.fromarray(np.full((64, 64), 3.5, np.float32)).save(floating)
    for path, words in ((wide, "32-bit integer"), (floating, "floating-point")):
        out = tmp_path / f"o_{path.stem}"
        code, err = _run(_predict([path], out, "--model", "wound"), capsys)
        assert code == 2 and words in err and path.name in err
        assert not out.exists()


# -- sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "words"),
    [((20, 600), "at least 32 pixels"), ((1, 500), "at least 32 pixels"), ((40, 400), "8:1")],
)
def test_thin_or_elongated_photo_is_refused(
    tmp_path: Path, shape: tuple[int, int], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    thin = tmp_path / "thin.png"
    Image.new("RGB", (shape[1], shape[0]), (180, 120, 100)).save(thin)
    out = tmp_path / "out"
    code, err = _run(_predict([thin], out, "--model", "wound"), capsys)
    assert code == 2
    assert "thin.png" in err and f"{shape[1]} x {shape[0]}" in err and words in err
    assert not out.exists()  # no empty output folder


@pytest.mark.parametrize("side", [12_500, 14_000])  # ours (150 MP), then Pillow's bomb limit
def test_huge_photo_is_refused_before_decoding(
    tmp_path: Path, side: int, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = tmp_path / "huge.png"
    Image.new("L", (side, side)).save(huge)
    assert side * side > MAX_PHOTO_PIXELS
    out = tmp_path / "out"
    code, err = _run(_predict([huge], out, "--model", "wound"), capsys)
    assert code == 2 and "huge.png" in err and "megapixels" in err and "Downscale" in err
    assert not out.exists()


def test_one_bad_photo_in_a_batch_writes_nothing(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, _ = _fuseg(shared_data)
    truncated = tmp_path / "cut.jpg"
    Image.open(good).convert("RGB").save(tmp_path / "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:5000])
    out = tmp_path / "out"
    code, err = _run(_predict([good, truncated], out, "--model", "wound"), capsys)
    assert code == 2 and "cut.jpg" in err and "cannot read" in err
    assert not out.exists()


def test_failure_while_predicting_removes_what_the_run_wrote(
    tmp_path: Path,
    shared_data: Path,
    tiny_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, _ = _fuseg(shared_data)
    second, _ = _fuseg(shared_data, "0012")
    real = predict_module.predict_array
    calls: list[int] = []

    def fail_second(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(predict_module, "predict_array", fail_second)
    out = tmp_path / "out"
    code, err = _run(_predict([first, second], out, "--model", str(tiny_checkpoint)), capsys)
    assert code == 2 and "0012.png" in err and "network failed" in err and "simulated" in err
    assert len(calls) == 2 and not out.exists()  # the first photo's outputs are gone too
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("user file")
    calls.clear()
    code, _ = _run(_predict([first, second], kept, "--model", str(tiny_checkpoint)), capsys)
    assert code == 2 and sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


# -- output paths -------------------------------------------------------------------------------


def test_predict_output_that_is_a_file_or_exists(
    tmp_path: Path, shared_data: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo, _ = _fuseg(shared_data)
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, err = _run(_predict([photo], afile, "--model", str(tiny_checkpoint)), capsys)
    assert code == 2 and "is a file, not a folder" in err and afile.read_text() == "x"
    out = tmp_path / "out"
    assert _run(_predict([photo], out, "--model", str(tiny_checkpoint)), capsys)[0] == 0
    before = (out / "predictions.json").read_text()
    code, err = _run(_predict([photo], out, "--model", str(tiny_checkpoint)), capsys)
    assert code == 2 and "--overwrite" in err and (out / "predictions.json").read_text() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files
    args = _predict([photo], out, "--model", str(tiny_checkpoint), "--overwrite")
    assert _run(args, capsys)[0] == 0


def test_measure_refuses_to_overwrite(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, label = _fuseg(shared_data)
    out = tmp_path / "m.json"
    args = ["photo", "measure", str(label), "--mm-per-pixel", "0.2", "-o", str(out)]
    assert _run(args, capsys)[0] == 0
    first = json.loads(out.read_text())
    assert first[str(label)]["total"]["area_px"] == int(read_mask(label).sum())
    out.write_text("previous results")
    code, err = _run(args, capsys)
    assert code == 2 and "m.json exists" in err and "--overwrite" in err
    assert out.read_text() == "previous results"
    assert _run([*args, "--overwrite"], capsys)[0] == 0
    assert json.loads(out.read_text()) == first
    folder = tmp_path / "afolder"
    folder.mkdir()
    code, err = _run([*args[:-1], str(folder)], capsys)
    assert code == 2 and "is a folder" in err


def test_evaluate_refuses_to_overwrite_before_scoring(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, label = _fuseg(shared_data)
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for folder in (pred, ref):
        folder.mkdir()
    Image.open(label).save(pred / f"{WOUND}_mask.png")
    Image.open(label).save(ref / f"{WOUND}.png")
    out = tmp_path / "scores.json"
    out.write_text("old")
    code, err = _run(["photo", "evaluate", str(pred), str(ref), "-o", str(out)], capsys)
    assert code == 2 and "--overwrite" in err and out.read_text() == "old"
    args = ["photo", "evaluate", str(pred), str(ref), "-o", str(out), "--overwrite"]
    assert _run(args, capsys)[0] == 0
    assert json.loads(out.read_text())["summary"]["mean_dice"] == 1.0


# -- memory -------------------------------------------------------------------------------------

_PEAK_SCRIPT = """
import json, resource, sys
from medseg.photo.predict import predict_files
result = predict_files([sys.argv[1]], sys.argv[2], model="wound", tta=False)
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": peak_kib / 1024, "instances": result["images"][0]["instances"]}))
"""


@pytest.mark.slow
def test_12000_pixel_jpeg_is_predicted_at_full_resolution_in_bounded_memory(
    tmp_path: Path, shared_data: Path
) -> None:
    photo, label = _fuseg(shared_data)
    big = tmp_path / "big.jpg"
    Image.open(photo).convert("RGB").resize((12000, 12000), Image.Resampling.BILINEAR).save(
        big, quality=90
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(big), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    # was about 7 GB before the downscaled path; measured 1.9 GB alone and up to 3.3 GB inside
    # the full suite on a loaded machine (allocator behaviour), so the bound has that margin
    assert report["peak_mib"] < 4000, report
    mask = read_mask(out / "big_mask.png")
    assert mask.shape == (12000, 12000)
    # the wound measured at full resolution: its area scales with the 12000 / 512 zoom
    ref = read_mask(label)
    scale = (12000 / 512) ** 2
    assert 0.8 < mask.sum() / (ref.sum() * scale) < 1.25
