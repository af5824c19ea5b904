"""``medseg contour INPUT... -o OUT``: contour organs at risk for a batch of studies, on Dask.

INPUT: DICOM trees (any layout), NIfTI files, OpenKBP folders, or CSV lists of inputs (a
``path`` column). Per study, ``OUT/studies/<key>/`` gets the outputs of ``medseg segment``
(written atomically) and ``OUT/manifest.sqlite`` records states, reasons, attempts, timings
and reference metrics. Running the same command again resumes: done studies (same input and
model) are kept, failed ones rerun only with ``--retry-failed``.

``medseg contour status OUT [--json|--csv]`` summarises a batch's manifest.

Exit status: 0 every study done or skipped, 1 some study failed, 2 usage or configuration
error (nothing run). See docs/contour.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medseg.contour.runner import BatchResult

__all__ = ["register", "run_contour_command", "run_status"]


def register(subparsers: Any) -> None:
    """Add the ``contour`` sub-command."""
    p = subparsers.add_parser(
        "contour",
        help="contour a batch of studies (DICOM trees, NIfTI, OpenKBP) with a resumable manifest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="DICOM trees/files, NIfTI files, OpenKBP folders, CSV lists; or: status OUT",
    )
    p.add_argument("-o", "--output", type=Path, help="batch output folder")
    p.add_argument("--config", type=Path, help="YAML config (e.g. pipelines/contour_hn_oar.yaml)")
    p.add_argument("--workers", type=int, help="worker processes of the embedded cluster")
    p.add_argument("--threads-per-worker", type=int, help="Dask threads per worker")
    p.add_argument("--scheduler", help="tcp://HOST:PORT or scheduler file of a running cluster")
    p.add_argument("--retry-failed", action="store_true", help="run failed studies again")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where workers predict")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="status: print JSON")
    fmt.add_argument("--csv", action="store_true", help="status: print CSV (one row per study)")
    p.set_defaults(func=run_contour_command)


def run_contour_command(args: argparse.Namespace) -> int:
    """Handler: ``status`` or a batch run."""
    from medseg.errors import ConfigError

    if args.inputs[0] == "status" and args.output is None:
        if len(args.inputs) != 2:
            raise ConfigError("usage: medseg contour status OUT [--json|--csv]")
        return run_status(Path(args.inputs[1]), as_json=args.json, as_csv=args.csv)
    if args.output is None:
        raise ConfigError("medseg contour: give the batch output folder with -o OUT.")
    return _run_batch(args)


def _run_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from medseg.contour import load_contour_config, run_contour

    config = load_contour_config(args.config).with_overrides(
        workers=args.workers, threads_per_worker=args.threads_per_worker, device=args.device
    )
    bars: list[Any] = []
    start = time.monotonic()

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="study", file=sys.stderr, disable=args.quiet))
        bar = bars[0]
        bar.update(done - bar.n)
        hours = (time.monotonic() - start) / 3600.0
        if done and hours > 0:
            bar.set_postfix_str(f"{done / hours:.1f} studies/h")

    try:
        result = run_contour(
            args.inputs,
            args.output,
            config,
            scheduler=args.scheduler,
            retry_failed=args.retry_failed,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    _print_table(result.studies)
    report = _write_report(result)
    c = result.counts
    sys.stdout.write(
        f"{c['done']} done, {c['failed']} failed, {c['skipped']} skipped "
        f"({len(result.ran)} run now, {len(result.kept)} kept from earlier runs) in "
        f"{result.wall_s:.1f} s\noutputs: {result.output_dir / 'studies'}\n"
        f"manifest: {result.manifest}  (medseg contour status {result.output_dir})\n"
        + (f"report: {report}  (medseg report {result.output_dir})\n" if report else "")
    )
    return result.exit_code


def _write_report(result: BatchResult) -> Path | None:
    """The batch's review report (medseg.qa); one that cannot be written is only a warning.

    The studies found by the batch are passed on, so the inputs are not scanned again.
    """
    import logging

    from medseg.errors import MedsegError
    from medseg.qa import write_report

    try:
        return write_report(result.output_dir, plans=result.plans)
    except MedsegError as exc:
        logging.getLogger(__name__).warning("review report not written: %s", exc)
        return None


def _mean_dice(row: dict[str, Any]) -> str:
    if not row.get("metrics_json"):
        return ""
    organs = (json.loads(row["metrics_json"]) or {}).get("organs") or {}
    vals = [v["dice"] for v in organs.values() if v.get("dice") is not None]
    return f"{sum(vals) / len(vals):.3f}" if vals else ""


def _print_table(rows: list[dict[str, Any]]) -> None:
    out = sys.stdout
    out.write(f"{'study':<24} {'state':<8} {'tries':>5} {'total_s':>8} {'dice':>6}  reason\n")
    for r in rows:
        total = f"{r['total_s']:.1f}" if r.get("total_s") is not None else ""
        reason = (r.get("reason") or "").replace("\n", " ")
        if len(reason) > 90:
            reason = reason[:87] + "..."
        out.write(
            f"{r['key']:<24} {r['state']:<8} {r['attempts']:>5} {total:>8} "
            f"{_mean_dice(r):>6}  {reason}\n"
        )


def run_status(output: Path, *, as_json: bool = False, as_csv: bool = False) -> int:
    """Print the manifest of the batch in ``output`` (table, JSON or CSV)."""
    from medseg.contour import MANIFEST_NAME, Manifest

    with Manifest(output / MANIFEST_NAME, readonly=True) as m:
        studies, counts, runs = m.studies(), m.counts(), m.runs()
        attempts = m.attempts()
    if as_json:
        for s in studies:
            for k in ("selection_json", "metrics_json", "warnings_json"):
                s[k.removesuffix("_json")] = json.loads(s.pop(k)) if s.get(k) else None
        doc = {"counts": counts, "studies": studies, "runs": runs, "attempts": attempts}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    if as_csv:
        cols = ["key", "state", "reason", "attempts", "worker", "load_s", "predict_s",
                "write_s", "total_s", "fingerprint", "model_sha256", "mean_dice"]  # fmt: skip
        w = csv.DictWriter(sys.stdout, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for s in studies:
            w.writerow({**s, "mean_dice": _mean_dice(s)})
        return 0
    _print_table(studies)
    last = runs[-1] if runs else {}
    sys.stdout.write(
        ", ".join(f"{n} {k}" for k, n in counts.items())
        + f"; {len(runs)} run(s), last {last.get('outcome', '-')}\n"
    )
    return 0
