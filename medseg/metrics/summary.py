"""Summaries across cases, and the JSON / CSV / table / box-plot outputs of ``medseg evaluate``.

Summary rules: per label (grouped by the name-matching key), ``n`` counts the cases where the
label occurs in either input; ``n_missed`` the cases where exactly one input is empty (their
worst-case distances and zero scores enter the mean, so a missed organ can only make the
mean worse); ``n_excluded`` the both-empty cases left out under ``both_empty="exclude"``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ExportError
from medseg.io.atomic import write_atomic
from medseg.metrics.case import CaseResult, label_key

logger = logging.getLogger(__name__)

__all__ = [
    "box_plots",
    "format_table",
    "metric_names",
    "results_to_csv",
    "results_to_json",
    "summarize",
    "write_text_atomic",
]

_TABLE_METRICS = ("dice", "hd", "HD_KEY", "assd", "masd", "nsd")


def metric_names(results: Sequence[CaseResult]) -> list[str]:
    """Metric names in output order (from the first label of the first case)."""
    for r in results:
        for lr in r.labels.values():
            return list(lr.values)
    return []


def summarize(results: Sequence[CaseResult]) -> dict[str, dict[str, Any]]:
    """Per-label mean, median and standard deviation of every metric across cases.

    Returns
    -------
    dict
        ``{name: {"mean": {...}, "median": {...}, "std": {...}, "n": int, "n_missed": int,
        "n_excluded": int}}``; a metric with no value in any case gets ``None``.
    """
    groups: dict[str, list[tuple[str, dict[str, float | None], bool]]] = {}
    display: dict[str, str] = {}
    for r in results:
        for name, lr in r.labels.items():
            key = label_key(name)
            display.setdefault(key, name)
            groups.setdefault(key, []).append((name, lr.values, lr.missed))
    metrics = metric_names(results)
    out: dict[str, dict[str, Any]] = {}
    for key, rows in groups.items():
        stats: dict[str, dict[str, float | None]] = {"mean": {}, "median": {}, "std": {}}
        for m in metrics:
            vals = np.array([v[m] for _, v, _ in rows if v.get(m) is not None], dtype=np.float64)
            if vals.size == 0:
                for s in stats.values():
                    s[m] = None
                continue
            stats["mean"][m] = float(np.mean(vals))
            stats["median"][m] = float(np.median(vals))
            stats["std"][m] = float(np.std(vals))
        out[display[key]] = {
            **stats,
            "n": sum(1 for _, v, _ in rows if v.get("dice") is not None),
            "n_missed": sum(1 for _, _, missed in rows if missed),
            "n_excluded": sum(1 for _, v, _ in rows if v.get("dice") is None),
        }
    return out


def results_to_json(results: Sequence[CaseResult], *, extra: dict[str, Any] | None = None) -> str:
    """The ``medseg evaluate`` JSON document (``cases``, ``summary``, ``config``, extras)."""
    doc: dict[str, Any] = {
        "cases": [r.to_json() for r in results],
        "summary": summarize(results),
        "config": results[0].config.to_dict() if results else None,
    }
    doc.update(extra or {})
    return json.dumps(doc, indent=2)


def results_to_csv(results: Sequence[CaseResult]) -> str:
    """One row per (case, label): ``case,label,missed,empty_in,<metrics...>``."""
    metrics = metric_names(results)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "label", "missed", "empty_in", *metrics])
    for r in results:
        for name, lr in r.labels.items():
            row = [r.case, name, str(lr.missed).lower(), lr.empty_in or ""]
            row += ["" if lr.values.get(m) is None else repr(lr.values[m]) for m in metrics]
            writer.writerow(row)
    return buf.getvalue()


def format_table(results: Sequence[CaseResult], *, summary_only: bool | None = None) -> str:
    """Plain-text table: per label for one case, the summary (mean over cases) for several."""
    if not results:
        return "(no cases)"
    hd_key = results[0].config.hd_key
    cols = [hd_key if m == "HD_KEY" else m for m in _TABLE_METRICS]
    single = len(results) == 1 if summary_only is None else not summary_only
    header = ["label", *cols, "missed"] if single else ["label", "n", *cols, "n_missed"]
    lines = []
    if single:
        for name, lr in results[0].labels.items():
            cells = [_fmt(lr.values.get(c)) for c in cols]
            lines.append([name, *cells, "yes" if lr.missed else ""])
    else:
        for name, s in summarize(results).items():
            cells = [_fmt(s["mean"].get(c)) for c in cols]
            lines.append([name, str(s["n"]), *cells, str(s["n_missed"])])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    fmt_row = "  ".join(("{:<%d}" if i == 0 else "{:>%d}") % w for i, w in enumerate(widths))
    out = [fmt_row.format(*header)]
    out += [fmt_row.format(*row) for row in lines]
    return "\n".join(out)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def write_text_atomic(text: str, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` via a temporary file and rename; keep existing files."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise ExportError(f"{p} exists; pass --overwrite to replace it.")
    return write_atomic(p, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def box_plots(
    results: Sequence[CaseResult],
    folder: str | os.PathLike[str],
    *,
    metrics: Sequence[str] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """One box-plot PNG per metric (labels on the x axis, one point per case).

    Returns the written paths (``<folder>/<metric>.png``).
    """
    from medseg.plotting import new_figure

    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not results:
        return []
    hd_key = results[0].config.hd_key
    chosen = list(metrics or [hd_key if m == "HD_KEY" else m for m in _TABLE_METRICS])
    names: list[str] = []
    seen: set[str] = set()
    for r in results:
        for n in r.labels:
            if label_key(n) not in seen:
                seen.add(label_key(n))
                names.append(n)
    written = []
    for m in chosen:
        data: list[list[float]] = []
        for n in names:
            k = label_key(n)
            vals = [
                float(lr.values[m] or 0.0)
                for r in results
                for ln, lr in r.labels.items()
                if label_key(ln) == k and lr.values.get(m) is not None
            ]
            data.append(vals)
        target = out_dir / f"{m}.png"
        if target.exists() and not overwrite:
            raise ExportError(f"{target} exists; pass --overwrite to replace it.")
        fig, ax = new_figure((max(6.0, 0.45 * len(names) + 2), 4.5))
        ax.boxplot([d if d else [np.nan] for d in data], showfliers=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=60, ha="right", fontsize=8)
        unit = "" if m in ("dice", "jaccard", "nsd", "sensitivity", "precision") else " (mm)"
        ax.set_ylabel(m + unit)
        ax.set_title(f"{m} across {len(results)} case(s)")
        fig.tight_layout()
        write_atomic(target, partial(fig.savefig, dpi=100, format="png"))
        written.append(target)
    return written
