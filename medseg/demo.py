"""``python -m medseg.demo``: the main job, end to end, on real shared sample data.

What it does (``make demo``):

0. The batch job (``medseg contour``): three OpenKBP CTs written as a PACS-style DICOM export (one
   file cut short), contoured on the embedded Dask cluster with a SQLite manifest and the review
   report; the broken study fails with its reason, the others are done.
1. Takes one OpenKBP head-and-neck CT (``../shared/data/openkbp_hn_ct``; by default pt_112, one of
   the six patients the shipped ``hn_oar`` model did not see in training) and writes it as an
   anonymised DICOM CT series, the way a planning system would hand it over.
2. Runs ``medseg segment`` on that series with the shipped ``hn_oar`` model, writing the label
   map (NIfTI + JSON), a DICOM-SEG and an RTSTRUCT.
3. Reads the RTSTRUCT back onto the CT grid and scores it against the clinical OpenKBP contours
   with ``medseg.metrics`` (Dice, HD95, ASSD in mm).
4. Renders an axial overlay PNG (prediction vs clinical contours).
5. Runs the shipped wound model on a few FUSeg photographs (``medseg photo predict``).

Everything goes under ``--out`` (default ``demo_output/``), replacing an earlier demo run.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["main", "run_demo"]

DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_demo(shared: Path, out: Path, *, patient: str = "pt_112", n_photos: int = 3) -> dict:
    """Run the demo; return a summary dict (also written to ``out/demo_summary.json``)."""
    from medseg.cli import main as cli_main
    from medseg.io import load_labels, load_volume
    from medseg.io.dicom_write import SeriesInfo, write_dicom_series
    from medseg.metrics import MetricsConfig, compute_metrics, format_table, results_to_json

    patient_dir = shared / "openkbp_hn_ct" / "train-pats" / patient
    if not patient_dir.is_dir():
        raise InputError(
            f"demo data not found: {patient_dir}. The demo reads ../shared/data beside the "
            "checkout; pass --shared PATH to point elsewhere."
        )
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"patient": patient}

    # 1. OpenKBP CT -> anonymised DICOM series
    t0 = time.perf_counter()
    ct = load_volume(patient_dir)
    reference = load_labels(patient_dir)
    dicom_dir = out / "ct_dicom"
    write_dicom_series(
        ct, dicom_dir, info=SeriesInfo(patient_id="DEMO0001", series_description="demo CT")
    )
    _say(
        f"[1/5] {patient}: CT {ct.shape} at {tuple(round(s, 2) for s in ct.spacing_mm)} mm "
        f"written as a DICOM series ({ct.shape[0]} files) in {time.perf_counter() - t0:.1f} s"
    )

    # 2. medseg segment (in-process CLI)
    seg_dir = out / "segmentation"
    t0 = time.perf_counter()
    code = cli_main(
        ["segment", str(dicom_dir), "-o", str(seg_dir), "--format", "nifti,seg,rtstruct"]
    )
    if code != 0:
        raise InputError(f"medseg segment failed with exit code {code}")
    seconds = time.perf_counter() - t0
    written = sorted(p.name for p in seg_dir.iterdir())
    _say(f"[2/5] medseg segment: {seconds:.1f} s -> {', '.join(written)}")
    summary["segment_seconds"] = round(seconds, 2)
    info = json.loads((seg_dir / "segmentation.json").read_text())
    for w in info.get("warnings", []):
        _say(f"      warning: {w}")

    # 3. RTSTRUCT back in, scored against the clinical contours
    series = load_volume(dicom_dir)
    rtstruct = seg_dir / "rtstruct.dcm"
    predicted = load_labels(rtstruct, reference=series)
    result = compute_metrics(
        predicted, reference, config=MetricsConfig(tolerance_mm=2.0), case=patient
    )
    _say("[3/5] RTSTRUCT read back and scored against the clinical OpenKBP contours:")
    _say(format_table([result]))
    summary["metrics"] = json.loads(results_to_json([result]))["cases"][0]

    # 4. overlay PNG
    png = out / "overlay_axial.png"
    _render_overlay(ct, predicted, reference, png)
    _say(f"[4/5] overlay: {png}")

    # 5. photos
    photos = sorted((shared / "fuseg_wound" / "train" / "images").glob("*.png"))[:n_photos]
    photo_out = out / "photos"
    t0 = time.perf_counter()
    code = cli_main(
        ["photo", "predict", *map(str, photos), "-o", str(photo_out), "--model", "wound"]
    )
    if code != 0:
        raise InputError(f"medseg photo predict failed with exit code {code}")
    preds = json.loads((photo_out / "predictions.json").read_text())
    _say(
        f"[5/5] wound photos: {len(photos)} predicted in {time.perf_counter() - t0:.1f} s -> "
        f"{photo_out}"
    )
    summary["photos"] = preds
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _say(f"done: outputs in {out}")
    return summary


def _render_overlay(ct, predicted, reference, png: Path) -> None:  # type: ignore[no-untyped-def]
    """Axial slice through the most labelled slice: CT, predicted (solid) vs clinical (dashed)."""
    from medseg.plotting import new_figure

    counts = (reference.array > 0).sum(axis=(1, 2))
    k = int(np.argmax(counts))
    rows, cols = np.nonzero(ct.array[k] > -500)
    if rows.size:  # crop to the body with a margin
        r0, r1 = max(rows.min() - 4, 0), rows.max() + 5
        c0, c1 = max(cols.min() - 4, 0), cols.max() + 5
    else:
        r0, r1, c0, c1 = 0, ct.shape[1], 0, ct.shape[2]
    fig, ax = new_figure((7, 7))
    ax.imshow(np.clip(ct.array[k, r0:r1, c0:c1], -200, 300), cmap="gray")
    for entry in predicted.label_map:
        color = np.array(entry.color) / 255.0
        if color.min() > 0.8:  # near-white organ colours vanish on bone: draw them in red
            color = np.array([1.0, 0.2, 0.2])
        m = predicted.array[k, r0:r1, c0:c1] == entry.id
        if m.any():
            ax.contour(m, levels=[0.5], colors=[color], linewidths=2.0)
        try:
            r = reference.array[k, r0:r1, c0:c1] == reference.label_map.id_of(entry.name)
        except InputError:
            continue
        if r.any():
            ax.contour(r, levels=[0.5], colors=[color], linewidths=1.2, linestyles="dashed")
    ax.set_title(f"slice {k}: predicted (solid) vs clinical (dashed)")
    ax.axis("off")
    fig.savefig(png, dpi=100, bbox_inches="tight")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m medseg.demo``."""
    parser = argparse.ArgumentParser(prog="python -m medseg.demo", description=__doc__)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="shared data folder")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    parser.add_argument(
        "--patient",
        default="pt_112",
        help="OpenKBP patient (default pt_112: held out from the shipped model's training fold)",
    )
    args = parser.parse_args(argv)
    try:
        if args.out.exists():  # replace an earlier demo run
            shutil.rmtree(args.out)
        # the main job as a department runs it: a batch of studies from a PACS export
        run_contour_demo(args.shared, args.out / "contour")
        # one study step by step: segment, export, read the RTSTRUCT back, score, overlay; photos
        run_demo(args.shared, args.out, patient=args.patient)
    except InputError as exc:
        sys.stderr.write(f"demo: error: {exc}\n")
        return 2
    return 0


CONTOUR_PATIENTS = ("pt_112", "pt_115", "pt_122")  # held out by the shipped model


def run_contour_demo(shared: Path, out: Path) -> int:
    """The batch job: ``medseg contour`` on three studies written as DICOM, one of them broken.

    Three OpenKBP CTs become anonymised DICOM studies with shuffled file names in one tree; one
    slice file of the last is cut short (a truncated transfer). The batch runs on the embedded
    Dask cluster: two studies are done, the broken one is ``failed`` with its reason (exit
    status 1), and the summary names the outputs and the manifest.
    """
    import random

    from medseg.cli import main as cli_main
    from medseg.io import load_volume
    from medseg.io.dicom_write import SeriesInfo, write_dicom_series

    tree = out / "pacs_export"
    if out.exists():
        shutil.rmtree(out)
    _say(f"contour batch: writing {len(CONTOUR_PATIENTS)} CT studies as DICOM into {tree}")
    rng = random.Random(3)
    for n, patient in enumerate(CONTOUR_PATIENTS):
        ct = load_volume(shared / "openkbp_hn_ct" / "train-pats" / patient)
        info = SeriesInfo(patient_name=f"Demo^{n}", patient_id=f"DEMO{n:04d}")
        paths = write_dicom_series(ct, tree / f"export_{n}", info=info)
        for p in paths:  # file names as a PACS export leaves them: meaningless and shuffled
            p.rename(p.with_name(f"{rng.randrange(10**9):09d}.dcm"))
    broken = sorted((tree / f"export_{len(CONTOUR_PATIENTS) - 1}").iterdir())[40]
    broken.write_bytes(broken.read_bytes()[:-9000])
    config = out / "contour_demo.yaml"
    config.write_text(
        "# pipelines/contour_hn_oar.yaml with window overlap 0.25 to keep the demo short\n"
        "inference: {overlap: 0.25}\n"
    )
    _say("contour batch: medseg contour (embedded Dask cluster, model loaded once per worker)")
    t0 = time.perf_counter()
    code = cli_main(["contour", str(tree), "-o", str(out / "batch"), "--config", str(config)])
    _say(
        f"contour batch: exit status {code} (1 = some study failed: the truncated one) in "
        f"{time.perf_counter() - t0:.0f} s; outputs in {out / 'batch' / 'studies'}, manifest "
        f"{out / 'batch' / 'manifest.sqlite'} (medseg contour status {out / 'batch'}), review "
        f"report {out / 'batch' / 'report' / 'index.html'}"
    )
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
