"""Bad input to every command (issue 20): each case is built in ``tmp_path`` from the shared real
data, runs the real CLI in-process and must end with exit status 2, exactly one line
``medseg <command>: error: ...`` naming the problem (and the way out), no traceback, and no file
written or changed anywhere under ``tmp_path``.

The other files of this folder hold the reader corpus (``test_reader_inputs.py``,
``test_io_inputs.py``), ``segment``'s output/modality checks, ``evaluate``'s and the photo
commands' own corpora, and the kill tests. The cases here are those the other files do not
have; ``test_corpus_covers_every_command`` keeps the count per command honest.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import tiny_checkpoint

from medseg.cli import main

WOUND = "0011"  # a FUSeg training photo with its reference mask


@dataclass(frozen=True)
class Assets:
    """Things several cases need, made once per module."""

    shared: Path
    ckpt: Path  # tiny CT model (seven OpenKBP organs)
    photo_ckpt: Path  # tiny photo Mask R-CNN
    batch: Path  # a contour batch folder: studies/<key>/ from medseg segment (read-only use)


Build = Callable[[Path, Assets], list[str]]  # (tmp_path, assets) -> argv


@dataclass(frozen=True)
class Case:
    """One bad input: the argv it builds, and what the error line must say."""

    id: str
    command: str  # "segment", "photo measure", ...
    build: Build
    expect: tuple[str, ...]  # substrings of the error output (the problem, then the fix)


CASES: list[Case] = []


def case(id: str, command: str, *expect: str) -> Callable[[Build], Build]:
    """Register the decorated builder as a case."""

    def register(build: Build) -> Build:
        CASES.append(Case(id, command, build, expect))
        return build

    return register


# -- helpers ------------------------------------------------------------------------------------


def _ct(a: Assets) -> Path:
    return a.shared / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"


def _photo(a: Assets) -> Path:
    return a.shared / "fuseg_wound" / "train" / "images" / f"{WOUND}.png"


def _mask(a: Assets) -> Path:
    return a.shared / "fuseg_wound" / "train" / "labels" / f"{WOUND}.png"


def _copy_batch(t: Path, a: Assets) -> Path:
    out = t / "batch"
    shutil.copytree(a.batch, out, symlinks=True)
    return out


def _train_yaml(t: Path, a: Assets, extra: str = "", root: Path | None = None) -> Path:
    if root is None:  # two patients: the data loads in a second
        root = t / "data"
        root.mkdir()
        for name in ("pt_4", "pt_100"):
            (root / name).symlink_to(a.shared / "openkbp_hn_ct" / "train-pats" / name)
    data = root
    cfg = t / "train.yaml"
    cfg.write_text(
        f"name: tiny\noutput_dir: {t / 'run'}\nnum_threads: 1\n"
        f"data: {{root: {data}, val_cases: [pt_100]}}\n"
        "preprocessing: {spacing_mm: [6.0, 8.0, 8.0], roi_size: [16, 32, 32]}\n"
        "model: {name: unet3d, options: {channels: [4, 8]}}\n"
        "optim: {epochs: 1, samples_per_case: 1, val_every: 1, amp: false}\n" + extra
    )
    return cfg


def _photo_yaml(t: Path, a: Assets, extra: str = "", datasets: str = "[medetec_wound]") -> Path:
    cfg = t / "photo.yaml"
    cfg.write_text(
        f"name: tiny\ndatasets: {datasets}\ndata_root: {a.shared}\noutput_dir: {t / 'run'}\n"
        "architecture: mobilenet_v3_fpn\nimage_size: 64\nbatch_size: 4\niterations: 1\n"
        "bf16: false\ndevice: cpu\nnum_threads: 1\n" + extra
    )
    return cfg


def _node_yaml(t: Path, extra: str) -> Path:
    cfg = t / "node.yaml"
    cfg.write_text(
        f"output_dir: {t / 'node'}\nport: 11112\n"
        "callers: [{ae_title: PACS, host: 127.0.0.1, port: 104}]\n" + extra
    )
    return cfg


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- segment ------------------------------------------------------------------------------------


@case("model-file-missing", "segment", "missing.pt")
def _(t: Path, a: Assets) -> list[str]:
    return ["segment", str(_ct(a)), "-o", str(t / "out"), "--model", str(t / "missing.pt")]


@case("model-file-not-a-checkpoint", "segment", "garbage.pt")
def _(t: Path, a: Assets) -> list[str]:
    (t / "garbage.pt").write_bytes(b"not a torch checkpoint\n" * 50)
    return ["segment", str(_ct(a)), "-o", str(t / "out"), "--model", str(t / "garbage.pt")]


@case("model-checkpoint-truncated", "segment", "cut.pt")
def _(t: Path, a: Assets) -> list[str]:
    data = a.ckpt.read_bytes()
    (t / "cut.pt").write_bytes(data[: len(data) // 2])
    return ["segment", str(_ct(a)), "-o", str(t / "out"), "--model", str(t / "cut.pt")]


@case("input-missing", "segment", "nothing.nii.gz")
def _(t: Path, a: Assets) -> list[str]:
    return ["segment", str(t / "nothing.nii.gz"), "-o", str(t / "out"), "--model", str(a.ckpt)]


@case("input-text-file", "segment", "notes.txt")
def _(t: Path, a: Assets) -> list[str]:
    (t / "notes.txt").write_text("not an image\n")
    return ["segment", str(t / "notes.txt"), "-o", str(t / "out"), "--model", str(a.ckpt)]


@case("tta-on-a-model-trained-without-mirroring", "segment", "trained without mirrored", "--tta")
def _(t: Path, a: Assets) -> list[str]:  # the shipped hn_oar: mirrored TTA would lose organs
    return ["segment", str(_ct(a)), "-o", str(t / "out"), "--tta"]


@case("empty-input-folder", "segment", "empty")
def _(t: Path, a: Assets) -> list[str]:
    (t / "empty").mkdir()
    return ["segment", str(t / "empty"), "-o", str(t / "out"), "--model", str(a.ckpt)]


# -- info ---------------------------------------------------------------------------------------


@case("path-missing", "info", "nothing")
def _(t: Path, a: Assets) -> list[str]:
    return ["info", str(t / "nothing")]


@case("empty-folder", "info", "empty")
def _(t: Path, a: Assets) -> list[str]:
    (t / "empty").mkdir()
    return ["info", str(t / "empty")]


@case("folder-of-photos", "info", "photos")
def _(t: Path, a: Assets) -> list[str]:
    (t / "photos").mkdir()
    shutil.copy(_photo(a), t / "photos")
    return ["info", str(t / "photos")]


# -- evaluate -----------------------------------------------------------------------------------


def _dm(a: Assets, who: str) -> Path:
    test = a.shared / "deepmind_hn_oar_masks" / "test"
    return test / who / "0522c0017"


@case("prediction-missing", "evaluate", "nothing")
def _(t: Path, a: Assets) -> list[str]:
    return ["evaluate", str(t / "nothing"), str(_dm(a, "oncologist"))]


@case("json-output-exists", "evaluate", "metrics.json", "--overwrite")
def _(t: Path, a: Assets) -> list[str]:
    (t / "metrics.json").write_text("{}")
    pred, ref = _dm(a, "radiographer"), _dm(a, "oncologist")
    return ["evaluate", str(pred), str(ref), "--json", str(t / "metrics.json")]


@case("json-output-under-a-file", "evaluate", "a_file")
def _(t: Path, a: Assets) -> list[str]:
    (t / "a_file").write_text("x")
    pred, ref = _dm(a, "radiographer"), _dm(a, "oncologist")
    return ["evaluate", str(pred), str(ref), "--json", str(t / "a_file" / "m.json")]


@case("negative-tolerance", "evaluate", "tolerance")
def _(t: Path, a: Assets) -> list[str]:
    pred, ref = _dm(a, "radiographer"), _dm(a, "oncologist")
    return ["evaluate", str(pred), str(ref), "--tolerance-mm", "-1"]


@case("config-unknown-key", "evaluate", "tolerence_mm")
def _(t: Path, a: Assets) -> list[str]:
    (t / "m.yaml").write_text("tolerence_mm: 2\n")
    pred, ref = _dm(a, "radiographer"), _dm(a, "oncologist")
    return ["evaluate", str(pred), str(ref), "--config", str(t / "m.yaml")]


# -- export -------------------------------------------------------------------------------------


def _dcmqi(a: Assets) -> Path:
    return a.shared / "dcmqi_ct3slice_seg"


@case("labels-missing", "export", "nothing.nrrd")
def _(t: Path, a: Assets) -> list[str]:
    ref = _dcmqi(a) / "ct-3slice"
    return ["export", str(t / "nothing.nrrd"), "--reference", str(ref), "--format", "seg",
            "-o", str(t / "seg.dcm")]  # fmt: skip


@case("reference-missing", "export", "no_series")
def _(t: Path, a: Assets) -> list[str]:
    seg = _dcmqi(a) / "liver_seg.nrrd"
    return ["export", str(seg), "--reference", str(t / "no_series"), "--format", "seg",
            "-o", str(t / "seg.dcm")]  # fmt: skip


@case("reference-empty-folder", "export", "empty")
def _(t: Path, a: Assets) -> list[str]:
    (t / "empty").mkdir()
    seg = _dcmqi(a) / "liver_seg.nrrd"
    return ["export", str(seg), "--reference", str(t / "empty"), "--format", "rtstruct",
            "-o", str(t / "rt.dcm")]  # fmt: skip


@case("output-exists", "export", "seg.dcm", "--overwrite")
def _(t: Path, a: Assets) -> list[str]:
    (t / "seg.dcm").write_bytes(b"an earlier export")
    seg, ref = _dcmqi(a) / "liver_seg.nrrd", _dcmqi(a) / "ct-3slice"
    return ["export", str(seg), "--reference", str(ref), "--format", "seg",
            "-o", str(t / "seg.dcm")]  # fmt: skip


@case("output-under-a-file", "export", "a_file")
def _(t: Path, a: Assets) -> list[str]:
    (t / "a_file").write_text("x")
    seg, ref = _dcmqi(a) / "liver_seg.nrrd", _dcmqi(a) / "ct-3slice"
    return ["export", str(seg), "--reference", str(ref), "--format", "seg",
            "-o", str(t / "a_file" / "seg.dcm")]  # fmt: skip


@case("labels-truncated", "export", "cut.nrrd")
def _(t: Path, a: Assets) -> list[str]:
    data = (_dcmqi(a) / "liver_seg.nrrd").read_bytes()
    (t / "cut.nrrd").write_bytes(data[: len(data) * 2 // 3])
    ref = _dcmqi(a) / "ct-3slice"
    return ["export", str(t / "cut.nrrd"), "--reference", str(ref), "--format", "seg",
            "-o", str(t / "seg.dcm")]  # fmt: skip


@case("labels-all-background", "export", "label map is empty", "at least one segment")
def _(t: Path, a: Assets) -> list[str]:
    import numpy as np

    from medseg.io import load_labels, save_labels
    from medseg.volume import LabelVolume

    labels = load_labels(_dcmqi(a) / "liver_seg.nrrd")
    empty = LabelVolume(labels.volume.with_array(np.zeros_like(labels.array)), labels.label_map)
    save_labels(empty, t / "empty.nii.gz")
    ref = _dcmqi(a) / "ct-3slice"
    return ["export", str(t / "empty.nii.gz"), "--reference", str(ref), "--format", "seg",
            "-o", str(t / "seg.dcm")]  # fmt: skip


# -- contour ------------------------------------------------------------------------------------


@case("output-is-a-file", "contour", "a_file")
def _(t: Path, a: Assets) -> list[str]:
    (t / "a_file").write_text("x")
    return ["contour", str(_ct(a)), "-o", str(t / "a_file")]


@case("config-malformed-yaml", "contour", "c.yaml")
def _(t: Path, a: Assets) -> list[str]:
    (t / "c.yaml").write_text("inference: {overlap: [0.5\n")
    return ["contour", str(_ct(a)), "-o", str(t / "out"), "--config", str(t / "c.yaml")]


@case("config-missing", "contour", "none.yaml")
def _(t: Path, a: Assets) -> list[str]:
    return ["contour", str(_ct(a)), "-o", str(t / "out"), "--config", str(t / "none.yaml")]


@case("tta-on-a-model-trained-without-mirroring", "contour", "hn_oar", "inference.tta: false")
def _(t: Path, a: Assets) -> list[str]:
    (t / "c.yaml").write_text("inference: {tta: true}\n")
    return ["contour", str(_ct(a)), "-o", str(t / "out"), "--config", str(t / "c.yaml")]


@case("csv-list-without-path-column", "contour", "list.csv", "path")
def _(t: Path, a: Assets) -> list[str]:
    (t / "list.csv").write_text(f"file\n{_ct(a)}\n")
    return ["contour", str(t / "list.csv"), "-o", str(t / "out")]


@case("csv-list-names-a-missing-file", "contour", "gone.nii.gz")
def _(t: Path, a: Assets) -> list[str]:
    (t / "list.csv").write_text(f"path\n{_ct(a)}\n{t / 'gone.nii.gz'}\n")
    return ["contour", str(t / "list.csv"), "-o", str(t / "out")]


@case("folder-without-studies", "contour", "no study found", "Check the paths")
def _(t: Path, a: Assets) -> list[str]:
    (t / "empty").mkdir()
    return ["contour", str(t / "empty"), "-o", str(t / "out")]


@case("negative-workers", "contour", "cluster.workers must be ≥ 0")
def _(t: Path, a: Assets) -> list[str]:
    return ["contour", str(_ct(a)), "-o", str(t / "out"), "--workers", "-1"]


# -- report -------------------------------------------------------------------------------------


@case("batch-folder-missing", "report", "nothing", "-o folder of medseg contour")
def _(t: Path, a: Assets) -> list[str]:
    return ["report", str(t / "nothing")]


@case("folder-is-no-batch", "report", "neither manifest.sqlite nor studies/")
def _(t: Path, a: Assets) -> list[str]:
    (t / "other").mkdir()
    (t / "other" / "notes.txt").write_text("x")
    return ["report", str(t / "other")]


@case("batch-is-a-file", "report", "batch.txt")
def _(t: Path, a: Assets) -> list[str]:
    (t / "batch.txt").write_text("x")
    return ["report", str(t / "batch.txt")]


@case("manifest-not-sqlite", "report", "manifest.sqlite")
def _(t: Path, a: Assets) -> list[str]:
    out = _copy_batch(t, a)
    (out / "manifest.sqlite").write_bytes(b"this is not a database" * 100)
    return ["report", str(out)]


@case("manifest-of-another-program", "report", "manifest.sqlite")
def _(t: Path, a: Assets) -> list[str]:
    out = _copy_batch(t, a)
    with sqlite3.connect(out / "manifest.sqlite") as db:
        db.execute("CREATE TABLE things (a INTEGER)")
    return ["report", str(out)]


@case("inputs-missing", "report", "gone")
def _(t: Path, a: Assets) -> list[str]:
    out = _copy_batch(t, a)
    return ["report", str(out), "--inputs", str(t / "gone")]


# -- train --------------------------------------------------------------------------------------


@case("config-missing", "train", "none.yaml")
def _(t: Path, a: Assets) -> list[str]:
    return ["train", str(t / "none.yaml"), "--no-progress"]


@case("config-malformed-yaml", "train", "train.yaml")
def _(t: Path, a: Assets) -> list[str]:
    cfg = _train_yaml(t, a)
    cfg.write_text(cfg.read_text() + "optim: [1\n")
    return ["train", str(cfg), "--no-progress"]


@case("data-root-missing", "train", "no_data")
def _(t: Path, a: Assets) -> list[str]:
    return ["train", str(_train_yaml(t, a, root=t / "no_data")), "--no-progress"]


@case("resume-checkpoint-missing", "train", "last.pt", "no such checkpoint")
def _(t: Path, a: Assets) -> list[str]:
    return ["train", str(_train_yaml(t, a)), "--resume", str(t / "last.pt"), "--no-progress"]


@case("zero-epochs", "train", "--epochs 0", "at least 1")
def _(t: Path, a: Assets) -> list[str]:
    return ["train", str(_train_yaml(t, a)), "--epochs", "0", "--no-progress"]


@case("yaml-zero-epochs", "train", "optim.epochs must be an integer ≥ 1", "got 0")
def _(t: Path, a: Assets) -> list[str]:
    cfg = _train_yaml(t, a)
    cfg.write_text(cfg.read_text().replace("optim: {epochs: 1,", "optim: {epochs: 0,"))
    return ["train", str(cfg), "--no-progress"]


@case("val-case-unknown", "train", "pt_9999", "not among the patients")
def _(t: Path, a: Assets) -> list[str]:
    cfg = _train_yaml(t, a)
    cfg.write_text(cfg.read_text().replace("val_cases: [pt_100]", "val_cases: [pt_9999]"))
    return ["train", str(cfg), "--no-progress"]


@case("resume-from-a-final-checkpoint", "train", "cannot resume", "Pass the run's last.pt")
def _(t: Path, a: Assets) -> list[str]:  # a released checkpoint has no training state
    return ["train", str(_train_yaml(t, a)), "--resume", str(a.ckpt), "--no-progress"]


# -- photo train --------------------------------------------------------------------------------


@case("config-missing", "photo train", "none.yaml")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "train", str(t / "none.yaml")]


@case("config-unknown-key", "photo train", "iteratons")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "train", str(_photo_yaml(t, a, "iteratons: 5\n"))]


@case("dataset-folder-missing", "photo train", "no_such_set")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "train", str(_photo_yaml(t, a, datasets="[no_such_set]"))]


@case("dataset-without-labels", "photo train", "photos")
def _(t: Path, a: Assets) -> list[str]:
    root = t / "data" / "photos" / "train" / "images"
    root.mkdir(parents=True)
    shutil.copy(_photo(a), root)
    cfg = _photo_yaml(t, a, datasets="[photos]")
    cfg.write_text(cfg.read_text().replace(f"data_root: {a.shared}", f"data_root: {t / 'data'}"))
    return ["photo", "train", str(cfg)]


@case("image-size-too-small", "photo train", "image_size")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "train", str(_photo_yaml(t, a)), "--set", "image_size=32"]


@case("override-without-value", "photo train", "KEY=VALUE")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "train", str(_photo_yaml(t, a)), "--set", "iterations"]


@case("weights-file-missing", "photo train", "nothing.pth")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "train", str(_photo_yaml(t, a, f"weights: {t / 'nothing.pth'}\n"))]


# -- photo predict ------------------------------------------------------------------------------


@case("photo-missing", "photo predict", "gone.png")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "predict", str(t / "gone.png"), "-o", str(t / "out"),
            "--model", str(a.photo_ckpt), "--no-progress"]  # fmt: skip


@case("model-file-not-a-checkpoint", "photo predict", "garbage.pt")
def _(t: Path, a: Assets) -> list[str]:
    (t / "garbage.pt").write_bytes(b"garbage" * 100)
    return ["photo", "predict", str(_photo(a)), "-o", str(t / "out"),
            "--model", str(t / "garbage.pt"), "--no-progress"]  # fmt: skip


@case("ct-checkpoint-as-photo-model", "photo predict", "tiny.pt")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "predict", str(_photo(a)), "-o", str(t / "out"),
            "--model", str(a.ckpt), "--no-progress"]  # fmt: skip


@case("two-photos-same-stem", "photo predict", "0011")
def _(t: Path, a: Assets) -> list[str]:
    (t / "b").mkdir()
    shutil.copy(_photo(a), t / "b" / f"{WOUND}.png")
    return ["photo", "predict", str(_photo(a)), str(t / "b" / f"{WOUND}.png"), "-o",
            str(t / "out"), "--model", str(a.photo_ckpt), "--no-progress"]  # fmt: skip


@case("truncated-jpeg", "photo predict", "cut.jpg")
def _(t: Path, a: Assets) -> list[str]:
    Image.open(_photo(a)).convert("RGB").save(t / "full.jpg", quality=90)
    data = (t / "full.jpg").read_bytes()
    (t / "cut.jpg").write_bytes(data[: len(data) // 2])
    (t / "full.jpg").unlink()
    return ["photo", "predict", str(t / "cut.jpg"), "-o", str(t / "out"),
            "--model", str(a.photo_ckpt), "--no-progress"]  # fmt: skip


# -- photo measure ------------------------------------------------------------------------------


@case("mask-missing", "photo measure", "gone.png")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "measure", str(t / "gone.png"), "--mm-per-pixel", "0.5"]


@case("mask-not-an-image", "photo measure", "mask.png")
def _(t: Path, a: Assets) -> list[str]:
    (t / "mask.png").write_text("not a png")
    return ["photo", "measure", str(t / "mask.png"), "-o", str(t / "m.json")]


@case("zero-scale", "photo measure", "mm-per-pixel")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "measure", str(_mask(a)), "--mm-per-pixel", "0", "-o", str(t / "m.json")]


@case("two-scales", "photo measure", "not both")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "measure", str(_mask(a)), "--mm-per-pixel", "0.5", "--photo",
            str(_photo(a)), "--marker-diameter-mm", "10", "-o", str(t / "m.json")]  # fmt: skip


@case("marker-without-photo", "photo measure", "--photo")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "measure", str(_mask(a)), "--marker-diameter-mm", "10",
            "-o", str(t / "m.json")]  # fmt: skip


@case("no-marker-in-photo", "photo measure", "marker")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "measure", str(_mask(a)), "--photo", str(_photo(a)),
            "--marker-diameter-mm", "10", "-o", str(t / "m.json")]  # fmt: skip


@case("bad-marker-colour", "photo measure", "purpleish")
def _(t: Path, a: Assets) -> list[str]:
    return ["photo", "measure", str(_mask(a)), "--photo", str(_photo(a)),
            "--marker-diameter-mm", "10", "--marker-color", "purpleish",
            "-o", str(t / "m.json")]  # fmt: skip


@case("output-is-a-folder", "photo measure", "m.json")
def _(t: Path, a: Assets) -> list[str]:
    (t / "m.json").mkdir()
    return ["photo", "measure", str(_mask(a)), "--mm-per-pixel", "0.5", "-o", str(t / "m.json")]


# -- photo track --------------------------------------------------------------------------------


def _track_folder(t: Path, a: Assets, with_mask: bool = True) -> tuple[Path, Path]:
    photos, masks = t / "photos", t / "masks"
    photos.mkdir()
    masks.mkdir()
    (photos / "day1.png").symlink_to(_photo(a))
    if with_mask:
        (masks / "day1.png").symlink_to(_mask(a))
    return photos / "day1.png", masks


@case("mask-not-found", "photo track", "day1")
def _(t: Path, a: Assets) -> list[str]:
    photo, masks = _track_folder(t, a, with_mask=False)
    return ["photo", "track", str(photo), "--masks", str(masks), "-o", str(t / "out")]


@case("masks-folder-missing", "photo track", "no_masks is not a folder")
def _(t: Path, a: Assets) -> list[str]:
    photo, _ = _track_folder(t, a)
    return ["photo", "track", str(photo), "--masks", str(t / "no_masks"), "-o", str(t / "out")]


@case("photo-missing", "photo track", "gone.png does not exist")
def _(t: Path, a: Assets) -> list[str]:
    _, masks = _track_folder(t, a)
    return ["photo", "track", str(t / "gone.png"), "--masks", str(masks), "-o", str(t / "out")]


@case("outputs-exist", "photo track", "--overwrite")
def _(t: Path, a: Assets) -> list[str]:
    photo, masks = _track_folder(t, a)
    (t / "out").mkdir()
    (t / "out" / "area_series.json").write_text('{"rows": []}')
    (t / "out" / "area_series.csv").write_text("photo\n")
    return ["photo", "track", str(photo), "--masks", str(masks), "-o", str(t / "out"),
            "--mm-per-pixel", "0.5"]  # fmt: skip


@case("output-is-a-file", "photo track", "a_file")
def _(t: Path, a: Assets) -> list[str]:
    photo, masks = _track_folder(t, a)
    (t / "a_file").write_text("x")
    return ["photo", "track", str(photo), "--masks", str(masks), "-o", str(t / "a_file")]


@case("mask-of-another-size", "photo track", "day1")
def _(t: Path, a: Assets) -> list[str]:
    photo, masks = _track_folder(t, a, with_mask=False)
    Image.open(_mask(a)).resize((100, 80)).save(masks / "day1.png")
    return ["photo", "track", str(photo), "--masks", str(masks), "-o", str(t / "out")]


# -- photo evaluate -----------------------------------------------------------------------------


def _eval_dirs(t: Path, a: Assets) -> tuple[Path, Path]:
    pred, ref = t / "pred", t / "ref"
    pred.mkdir()
    ref.mkdir()
    (ref / f"{WOUND}.png").symlink_to(_mask(a))
    return pred, ref


@case("prediction-folder-missing", "photo evaluate", "no_pred")
def _(t: Path, a: Assets) -> list[str]:
    _, ref = _eval_dirs(t, a)
    return ["photo", "evaluate", str(t / "no_pred"), str(ref)]


@case("no-common-stem", "photo evaluate", "pred")
def _(t: Path, a: Assets) -> list[str]:
    pred, ref = _eval_dirs(t, a)
    (pred / "other_mask.png").symlink_to(_mask(a))
    return ["photo", "evaluate", str(pred), str(ref), "-o", str(t / "scores.json")]


@case("mask-sizes-differ", "photo evaluate", "0011")
def _(t: Path, a: Assets) -> list[str]:
    pred, ref = _eval_dirs(t, a)
    Image.open(_mask(a)).resize((100, 80)).save(pred / f"{WOUND}_mask.png")
    return ["photo", "evaluate", str(pred), str(ref), "-o", str(t / "scores.json")]


@case("mask-damaged", "photo evaluate", "0011")
def _(t: Path, a: Assets) -> list[str]:
    pred, ref = _eval_dirs(t, a)
    data = _mask(a).read_bytes()
    (pred / f"{WOUND}_mask.png").write_bytes(data[: len(data) // 2])
    return ["photo", "evaluate", str(pred), str(ref), "-o", str(t / "scores.json")]


# -- DICOM network: echo, send, listen ----------------------------------------------------------


@case("address-without-ae-title", "echo", "AE@HOST:PORT")
def _(t: Path, a: Assets) -> list[str]:
    return ["echo", "127.0.0.1:4242"]


@case("port-out-of-range", "echo", "70000")
def _(t: Path, a: Assets) -> list[str]:
    return ["echo", "PACS@127.0.0.1:70000"]


@case("ae-title-too-long", "echo", "17 characters", "at most 16")
def _(t: Path, a: Assets) -> list[str]:
    return ["echo", f"{'A' * 17}@127.0.0.1:4242"]


@case("nobody-listening", "echo", "127.0.0.1")
def _(t: Path, a: Assets) -> list[str]:
    return ["echo", f"PACS@127.0.0.1:{_free_port()}", "--timeout", "3"]


@case("file-missing", "send", "gone.dcm")
def _(t: Path, a: Assets) -> list[str]:
    return ["send", str(t / "gone.dcm"), "--to", f"PACS@127.0.0.1:{_free_port()}"]


@case("bad-address", "send", "AE@HOST:PORT")
def _(t: Path, a: Assets) -> list[str]:
    return ["send", str(a.shared / "dicompyler_breast_rtstruct" / "ct.0.dcm"), "--to", "PACS"]


@case("nobody-listening", "send", "127.0.0.1")
def _(t: Path, a: Assets) -> list[str]:
    ct = a.shared / "dicompyler_breast_rtstruct" / "ct.0.dcm"
    return ["send", str(ct), "--to", f"PACS@127.0.0.1:{_free_port()}", "--timeout", "3"]


@case("config-malformed-yaml", "listen", "node.yaml")
def _(t: Path, a: Assets) -> list[str]:
    cfg = _node_yaml(t, "retry: {initial_s: [\n")
    return ["listen", "--config", str(cfg)]


@case("no-port-for-results", "listen", "have no port")
def _(t: Path, a: Assets) -> list[str]:
    cfg = t / "node.yaml"
    cfg.write_text(f"output_dir: {t / 'node'}\ncallers: [{{ae_title: PACS, host: 127.0.0.1}}]\n")
    return ["listen", "--config", str(cfg)]


@case("output-is-a-file", "listen", "a_file")
def _(t: Path, a: Assets) -> list[str]:
    (t / "a_file").write_text("x")
    return ["listen", "--config", str(_node_yaml(t, "")), "-o", str(t / "a_file")]


_HELD: list[object] = []  # sockets kept open while a case runs


@case("port-in-use", "listen", "port")
def _(t: Path, a: Assets) -> list[str]:
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    _HELD.append(held)
    cfg = t / "node.yaml"
    cfg.write_text(
        f"output_dir: {t / 'node'}\nhost: 127.0.0.1\nport: {held.getsockname()[1]}\n"
        "callers: [{ae_title: PACS, host: 127.0.0.1, port: 104}]\n"
    )
    return ["listen", "--config", str(cfg)]


@case("empty-folder", "send", "nothing to send", "no files")
def _(t: Path, a: Assets) -> list[str]:
    (t / "empty").mkdir()
    return ["send", str(t / "empty"), "--to", f"PACS@127.0.0.1:{_free_port()}"]


# -- the test -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assets(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Assets:
    root = tmp_path_factory.mktemp("assets")
    ckpt = tiny_checkpoint(root / "tiny.pt", (6.0, 8.0, 8.0), (16, 32, 32))
    from medseg.photo.checkpoint import save_checkpoint
    from medseg.photo.models import ModelSpec, build_maskrcnn

    torch.manual_seed(0)
    spec = ModelSpec("mobilenet_v3_fpn", 2, 64, ("wound",))
    model = build_maskrcnn(spec.architecture, num_classes=2, image_size=64)
    photo_ckpt = save_checkpoint(
        root / "photo.pt", {"model": model.state_dict(), "spec": spec.to_dict()}, half=True
    )
    ct = shared_data / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"
    for key in ("study_a", "study_b"):
        out = root / "batch" / "studies" / key
        argv = ["segment", str(ct), "-o", str(out), "--model", str(ckpt), "--overlap", "0"]
        assert main(["-q", *argv]) == 0
    return Assets(shared_data, ckpt, photo_ckpt, root / "batch")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in folder.rglob("*")
    }


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c.command.replace(' ', '-')}:{c.id}" for c in CASES]
)
def test_command_refuses_bad_input(
    case: Case, assets: Assets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = case.build(tmp_path, assets)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error:" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"medseg {case.command.split()[0]}: error:"), err
    for text in case.expect:
        assert text in errors[0], (text, errors[0])
    assert _snapshot(tmp_path) == before  # nothing written, nothing changed


def test_corpus_covers_every_command() -> None:
    """Every sub-command of the CLI has bad-input cases here (a new command needs some)."""
    import argparse

    from medseg.cli import build_parser

    parser = build_parser()
    commands: set[str] = set()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        assert isinstance(action, argparse._SubParsersAction)
        for name, sub in action.choices.items():
            inner = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
            commands |= {f"{name} {n}" for a in inner for n in a.choices} or {name}
    counts = {c: sum(case.command == c for case in CASES) for c in sorted(commands)}
    assert min(counts.values()) >= 3, counts
    assert len(CASES) == len({(c.command, c.id) for c in CASES})  # ids are unique per command


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("json", "its segmentation.json cannot be read"),
        ("labels", "its segmentation.nii.gz is missing"),
    ],
)
def test_report_lists_a_study_with_damaged_outputs_as_failed(
    damage: str, message: str, assets: Assets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study whose outputs were damaged after the batch is never shown as done without flags
    (before: a damaged JSON dropped the study from the report silently, a missing label map
    showed it as done and unflagged)."""
    out = _copy_batch(tmp_path, assets)
    study = out / "studies" / "study_a"
    if damage == "json":
        side = study / "segmentation.json"
        side.write_text(side.read_text()[:200])
    else:
        (study / "segmentation.nii.gz").unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"study study_a: {message}" in err
    studies = {
        s["key"]: s for s in json.loads((out / "report" / "review.json").read_text())["studies"]
    }
    assert set(studies) == {"study_a", "study_b"}
    assert studies["study_a"]["state"] == "failed" and message in studies["study_a"]["reason"]
    assert "run medseg contour again" in studies["study_a"]["reason"]
    assert studies["study_b"]["state"] == "done"
    assert (
        not (out / "report" / "study_a.html").exists()
        and (out / "report" / "study_b.html").is_file()
    )
