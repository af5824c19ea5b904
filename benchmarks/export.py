"""Benchmark: DICOM-SEG and RTSTRUCT export of a 10-organ 160×512×512 label map.

medseg's :func:`~medseg.export.write_dicom_seg` vs plain highdicom with its defaults (one-hot
``(frames, rows, columns, segments)`` boolean array, the usage its documentation shows), and
medseg's :func:`~medseg.export.write_rtstruct` vs rt-utils (``RTStructBuilder.create_new`` +
``add_roi`` per organ + ``save``).

Data: a synthetic axial CT series (160 slices of 512×512, 0.9766 mm pixels, 2 mm apart) written with
:func:`medseg.io.dicom_write.write_dicom_series` into a temporary folder, and ten organ-like
ellipsoids (0.7 to 1,400 cm³, one hollow so that every slice through it has a hole).

Each tool runs in the same process after one unmeasured warm-up export of a small series
(imports and highdicom's standard tables loaded for everyone); the four exports run interleaved
twice and the best time of each is printed (the 2-core machine is shared, single timings vary
by ±50 %). Times
include reading the source headers. rt-utils always reads the whole series with pixels, so its
time is shown with and without that load. Outputs are validated: dciodvfy error counts, SEG read
back voxel for voxel (both SEGs), RTSTRUCT rasterised back with medseg's reader (Dice per organ).

Run from the repository root::

    .venv/bin/python benchmarks/export.py
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from medseg.export import write_dicom_seg, write_rtstruct
from medseg.io.dicom_labels import load_dicom_labels
from medseg.io.dicom_write import SeriesInfo, write_dicom_series
from medseg.volume import DicomSource, LabelMap, LabelVolume, Volume, affine_from_geometry

REPEATS = 2
ORGANS = ("Liver", "Spleen", "Heart", "Esophagus", "Brainstem", "SpinalCord", "LeftParotid",
          "RightParotid", "Larynx", "hollow_organ")  # fmt: skip


def build_case(
    folder: Path, shape: tuple[int, int, int] = (160, 512, 512)
) -> tuple[Volume, LabelVolume]:
    """Write the synthetic series and return (reference Volume with DicomSource, labels)."""
    spacing = (2.0, 0.9766, 0.9766)
    affine = affine_from_geometry(spacing, origin_mm=(-249.5, -249.5, -160.0))
    rng = np.random.default_rng(6)
    k, r, c = np.ogrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint8)
    for i in range(len(ORGANS)):
        centre = rng.uniform(0.25, 0.75, 3) * np.asarray(shape)
        radius_mm = rng.uniform(6, 80 if i == 0 else 45, 3)
        radii = radius_mm / np.asarray(spacing)
        d = ((k - centre[0]) / radii[0]) ** 2 + ((r - centre[1]) / radii[1]) ** 2
        d = d + ((c - centre[2]) / radii[2]) ** 2
        organ = d < 1.0
        if ORGANS[i] == "hollow_organ":
            organ &= d > 0.4
        labels[organ] = i + 1
    ct = np.where(labels > 0, 40, -1000).astype(np.int16)
    paths = write_dicom_series(Volume(ct, affine, modality="CT"), folder, info=SeriesInfo())
    heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    src = DicomSource(
        str(heads[0].StudyInstanceUID), str(heads[0].SeriesInstanceUID),
        str(heads[0].FrameOfReferenceUID), str(heads[0].SOPClassUID),
        tuple(str(h.SOPInstanceUID) for h in heads), tuple(str(p) for p in paths),
    )  # fmt: skip
    reference = Volume(ct, affine, modality="CT", source=src)
    label_map = LabelMap.from_names(list(ORGANS))
    return reference, LabelVolume(Volume(labels, affine, modality="SEG"), label_map)


def plain_highdicom_seg(
    labels: LabelVolume, reference: Volume, out: Path, *, onehot: bool = True
) -> None:
    """highdicom with its defaults, as its documentation shows.

    ``onehot``: a ``(frames, rows, columns, segments)`` boolean stack; else the integer label
    array (segment numbers 1..n), highdicom's other documented input for exclusive segments.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    assert reference.source is not None
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in reference.source.files]
    present = [e for e in labels.label_map if (labels.array == e.id).any()]
    if onehot:
        pixels = np.stack([labels.array == e.id for e in present], axis=-1)
    else:
        lut = np.zeros(int(labels.array.max()) + 1, np.uint8)
        lut[[e.id for e in present]] = np.arange(1, len(present) + 1)
        pixels = lut[labels.array]
    algorithm = hd.AlgorithmIdentificationSequence(
        name="bench", family=codes.cid7162.ArtificialIntelligence, version="1"
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=e.name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for n, e in enumerate(present, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=2,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="bench",
        manufacturer_model_name="bench", software_versions="1", device_serial_number="1",
    )  # fmt: skip
    seg.save_as(out)


def rt_utils_rtstruct(labels: LabelVolume, folder: Path, out: Path) -> tuple[float, float]:
    """rt-utils: load the series (timed apart), add one ROI per organ, save."""
    from rt_utils import RTStructBuilder

    t0 = time.perf_counter()
    rt = RTStructBuilder.create_new(dicom_series_path=str(folder))
    t1 = time.perf_counter()
    for e in labels.label_map:
        mask = np.transpose(labels.array == e.id, (1, 2, 0))  # rt-utils wants (rows, cols, slices)
        rt.add_roi(mask=mask, color=list(e.color), name=e.name)
    rt.save(str(out))
    return t1 - t0, time.perf_counter() - t1


def dciodvfy_errors(path: Path) -> str:
    """Number of dciodvfy errors and the most frequent kind."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        return "dciodvfy missing"
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)
    errors = [x for x in (res.stdout + res.stderr).splitlines() if x.startswith("Error")]
    if not errors:
        return "0"
    kinds = Counter(re.sub(r"<[^>]*>|\[[^\]]*\]|= \d+", "…", e)[:110] for e in errors)
    return f"{len(errors)} (most: {kinds.most_common(1)[0][0]!r})"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        small_ref, small = build_case(tmp / "warm", (8, 64, 64))
        write_dicom_seg(small, small_ref, tmp / "w.dcm")
        plain_highdicom_seg(small, small_ref, tmp / "w2.dcm")
        write_rtstruct(small, small_ref, tmp / "w3.dcm")
        rt_utils_rtstruct(small, tmp / "warm", tmp / "w4.dcm")

        reference, labels = build_case(tmp / "ct")
        vox_cm3 = np.prod(reference.spacing_mm) / 1000
        sizes = [round(float((labels.array == e.id).sum() * vox_cm3), 1) for e in labels.label_map]
        print(f"label map {labels.array.shape}, {len(ORGANS)} organs, volumes cm3: {sizes}")

        best: dict[str, float] = {}

        def timed(key: str, fn: Callable[[], object]) -> None:
            t = time.perf_counter()
            fn()
            best[key] = min(best.get(key, np.inf), time.perf_counter() - t)

        for _ in range(REPEATS):  # interleaved; best of REPEATS (the machine is shared)
            timed(
                "seg",
                lambda: write_dicom_seg(labels, reference, tmp / "medseg_seg.dcm", overwrite=True),
            )
            timed("hd", lambda: plain_highdicom_seg(labels, reference, tmp / "highdicom_seg.dcm"))
            timed(
                "hd_lm",
                lambda: plain_highdicom_seg(
                    labels, reference, tmp / "highdicom_lm_seg.dcm", onehot=False
                ),
            )
            timed(
                "rt",
                lambda: write_rtstruct(labels, reference, tmp / "medseg_rt.dcm", overwrite=True),
            )
            load, add = rt_utils_rtstruct(labels, tmp / "ct", tmp / "rtutils_rt.dcm")
            best["load"] = min(best.get("load", np.inf), load)
            best["rtu"] = min(best.get("rtu", np.inf), add)
        t_seg, t_hd, t_hd_lm, t_rt = best["seg"], best["hd"], best["hd_lm"], best["rt"]
        t_load, t_rtu = best["load"], best["rtu"]

        mb = {p: (tmp / p).stat().st_size / 1e6 for p in
              ("medseg_seg.dcm", "highdicom_seg.dcm", "highdicom_lm_seg.dcm", "medseg_rt.dcm",
               "rtutils_rt.dcm")}  # fmt: skip
        print("\nDICOM-SEG (BINARY)")
        print(f"  medseg write_dicom_seg   {t_seg:6.2f} s  {mb['medseg_seg.dcm']:6.1f} MB  "
              f"dciodvfy errors {dciodvfy_errors(tmp / 'medseg_seg.dcm')}")  # fmt: skip
        print(f"  highdicom defaults       {t_hd:6.2f} s  {mb['highdicom_seg.dcm']:6.1f} MB  "
              f"dciodvfy errors {dciodvfy_errors(tmp / 'highdicom_seg.dcm')}")  # fmt: skip
        print(f"  highdicom, integer input {t_hd_lm:6.2f} s  {mb['highdicom_lm_seg.dcm']:6.1f} MB  "
              f"dciodvfy errors {dciodvfy_errors(tmp / 'highdicom_lm_seg.dcm')}")  # fmt: skip
        print(f"  ratio highdicom/medseg   {t_hd / t_seg:6.2f}x one-hot, "
              f"{t_hd_lm / t_seg:.2f}x integer input")  # fmt: skip
        print("\nRTSTRUCT")
        print(f"  medseg write_rtstruct    {t_rt:6.2f} s  {mb['medseg_rt.dcm']:6.1f} MB  "
              f"dciodvfy errors {dciodvfy_errors(tmp / 'medseg_rt.dcm')}")  # fmt: skip
        print(f"  rt-utils add_roi+save    {t_rtu:6.2f} s  {mb['rtutils_rt.dcm']:6.1f} MB  "
              f"dciodvfy errors {dciodvfy_errors(tmp / 'rtutils_rt.dcm')}")  # fmt: skip
        print(f"  rt-utils series load     {t_load:6.2f} s (medseg: reference already in memory)")
        print(f"  ratio rt-utils/medseg    {t_rtu / t_rt:6.2f}x (with its load "
              f"{(t_rtu + t_load) / t_rt:.2f}x)")  # fmt: skip

        print("\nvalidation (read back with medseg's readers)")
        for name in ("medseg_seg.dcm", "highdicom_seg.dcm", "highdicom_lm_seg.dcm"):
            back = load_dicom_labels(tmp / name, reference)
            same = all(
                np.array_equal(back.mask(e.name), labels.mask(e.id)) for e in labels.label_map
            )
            print(f"  {name:18s} voxel-for-voxel equal: {same}")
        for name in ("medseg_rt.dcm", "rtutils_rt.dcm"):
            back = load_dicom_labels(tmp / name, reference)
            ds = [dice(back.mask(e.name), labels.mask(e.id)) for e in labels.label_map]
            print(f"  {name:18s} Dice min {min(ds):.4f} mean {np.mean(ds):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
