"""The static HTML review report of a contouring batch: ``OUT/report/index.html``.

:func:`write_report` reviews every study of a batch (:func:`medseg.qa.flags.review_labels`),
draws its figures and writes plain HTML files that open from disk (no server, no network, no
external script or style)::

    OUT/report/index.html           batch page: one row per study, failures and flagged first
    OUT/report/<key>.html           study page: overlays per organ, per-organ table, volumes
    OUT/report/img/...              PNG figures
    OUT/report/review.json          every study's review (machine-readable)

No patient name or ID is shown unless ``show_identifiers`` (then the study key shows the
Study/Series Instance UIDs and the input path).
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.atomic import write_atomic, write_folder_atomic
from medseg.qa.flags import FLAG_NAMES, OrganReview, review_labels
from medseg.qa.records import (
    StudyRecord,
    StudySources,
    load_study_image,
    load_study_reference,
    read_sidecar,
    records_from_folders,
    records_from_manifest,
    sources_from_plans,
)

logger = logging.getLogger(__name__)

__all__ = ["StudyReview", "review_study", "write_report"]

REPORT_DIR = "report"
_STATE_ORDER = {"failed": 0, "running": 1, "pending": 1, "skipped": 2, "done": 3}


@dataclass
class StudyReview:
    """A study's row and page content.

    Attributes
    ----------
    record
        The batch record.
    organs
        Organ → :class:`~medseg.qa.flags.OrganReview` (empty without a segmentation).
    metrics
        Organ → {"dice", "hd95"} against the reference (empty without one).
    images
        Organ → overlay PNG path relative to the report folder; ``"volumes"`` → volume chart.
    note
        What could not be shown (e.g. the CT was not available).
    """

    record: StudyRecord
    organs: dict[str, OrganReview] = field(default_factory=dict)
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def score(self) -> float:
        """Largest organ review score (0 without organs)."""
        return max((o.score for o in self.organs.values()), default=0.0)

    @property
    def flagged(self) -> list[str]:
        """Flagged organs, worst first."""
        items = sorted(self.organs.items(), key=lambda kv: -kv[1].score)
        return [n for n, o in items if o.flagged]

    @property
    def mean_dice(self) -> float | None:
        """Mean Dice over the organs with a reference."""
        vals = [float(d) for m in self.metrics.values() if (d := m.get("dice")) is not None]
        return float(np.mean(vals)) if vals else None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (no identifiers)."""
        r = self.record
        return {
            "key": r.key,
            "state": r.state,
            "reason": r.reason,
            "timings": r.timings,
            "score": self.score,
            "flagged": self.flagged,
            "organs": {n: o.to_json() for n, o in self.organs.items()},
            "metrics": self.metrics,
            "note": self.note,
        }


# ------------------------------------------------------------------------------------ review
def _reference_metrics(pred: Any, ref: Any) -> dict[str, dict[str, float | None]]:
    from medseg.metrics import compute_metrics
    from medseg.volume import LabelMap, LabelVolume

    present = [e for e in ref.label_map if np.any(ref.array == e.id)]
    if not present:
        return {}
    sub = LabelVolume(ref.volume, LabelMap(tuple(present)))
    names = [e.name for e in present]
    keep = np.isin(
        pred.array, [pred.label_map.id_of(n) for n in names if n in pred.label_map.names]
    )
    pv = LabelVolume(
        pred.volume.with_array(np.where(keep, pred.array, 0).astype(pred.array.dtype)),
        LabelMap(tuple(e for e in pred.label_map if e.name in names)),
    )
    res = compute_metrics(pv, sub, case="study")
    by_key = {k.lower(): v for k, v in res.labels.items()}
    out = {}
    for n in names:
        v = by_key.get(n.lower())
        if v is None:
            continue
        dice = v.values.get("dice")
        hd95 = v.values.get("hd95")
        out[n] = {
            "dice": None if dice is None else round(float(dice), 4),
            "hd95": None if hd95 is None or not np.isfinite(hd95) else round(float(hd95), 2),
        }
    return out


def _from_record_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """Organ → Dice/HD95 from the batch's reference metrics (``{"organs": {...}}`` or flat)."""
    organs = metrics.get("organs", metrics) if isinstance(metrics, Mapping) else {}
    out = {}
    for organ, vals in organs.items():
        if isinstance(vals, Mapping):
            out[str(organ)] = {k: vals[k] for k in ("dice", "hd95") if k in vals}
    return out


def _quality(record: StudyRecord) -> dict[str, dict[str, float]]:
    """Organ → expected Dice / TTA disagreement from the study's ``segmentation.json``."""
    if record.output_dir is None:
        return {}
    quality = read_sidecar(record.output_dir).get("quality")
    if not isinstance(quality, dict):
        return {}
    return {
        str(name): {k: float(v) for k, v in q.items() if isinstance(v, int | float)}
        for name, q in quality.items()
        if isinstance(q, dict)
    }


def review_study(
    record: StudyRecord,
    model: Any,
    report_dir: str | os.PathLike[str],
    *,
    render: bool = True,
) -> StudyReview:
    """Review one study and draw its figures into ``report_dir/img/<key>/``.

    Parameters
    ----------
    record
        The study (its ``segmentation.nii.gz`` is read; CT/references from ``record.sources``).
    model
        :class:`~medseg.qa.model.ReviewModel`.
    report_dir
        The report folder.
    render
        Draw the PNG figures (off in tests of the numbers only).
    """
    from medseg.io import load_labels
    from medseg.preprocess import reorient
    from medseg.qa.figures import organ_overlay, volume_chart
    from medseg.volume import LabelMap, LabelVolume

    review = StudyReview(record)
    seg = record.segmentation
    if seg is None:
        return review
    pred = load_labels(seg)
    label_map = LabelMap.from_names(list(model.labels))
    # the model's label ids, matched by name (a segmentation may number its labels otherwise)
    arr = np.zeros(pred.array.shape, np.uint8)
    for e in pred.label_map:
        if e.name in label_map.names:
            arr[pred.array == e.id] = label_map.id_of(e.name)
    colours = {e.name: e.color for e in pred.label_map}
    pred = LabelVolume(pred.volume.with_array(arr), label_map)
    quality = _quality(record)
    review.organs = review_labels(
        arr,
        pred.affine,
        model,
        expected_dice={n: q["expected_dice"] for n, q in quality.items() if "expected_dice" in q},
        tta={n: q["tta_disagreement"] for n, q in quality.items() if "tta_disagreement" in q}
        or None,
    )
    review.metrics = _from_record_metrics(record.metrics)
    ct = ref = None
    if record.sources is not None:
        try:
            ct = load_study_image(record.sources)
            ref = load_study_reference(record.sources, ct, tuple(model.labels))
        except Exception as exc:
            review.note = f"image not shown: {exc}"
            logger.warning("%s: %s", record.key, review.note)
            ct = ref = None
        if ct is not None and not ct.same_grid(pred.volume, tolerance_mm=0.1):
            review.note = "image not shown: the CT found is not on the segmentation's grid"
            ct = ref = None
    else:
        review.note = "CT not available to the report (rebuild with --inputs to show it)"
    if ref is not None and not review.metrics:
        review.metrics = _reference_metrics(pred, ref)
    if not render:
        return review
    img = Path(report_dir) / "img" / record.key
    lab_spl = reorient(pred.volume, "SPL")
    ct_spl = reorient(ct, "SPL").array if ct is not None else None
    ref_spl = reorient(ref.volume, "SPL").array if ref is not None else None
    for entry in label_map:
        if review.organs[entry.name].measure.voxels == 0 and (
            ref_spl is None or not np.any(ref_spl == entry.id)
        ):
            continue
        rel = f"img/{record.key}/{entry.name}.png"
        organ_overlay(
            ct_spl,
            lab_spl.array,
            ref_spl,
            entry.id,
            colours.get(entry.name, entry.color),
            lab_spl.spacing_mm,
            img / f"{entry.name}.png",
            title=entry.name + (" (reference dashed)" if ref_spl is not None else ""),
        )
        review.images[entry.name] = rel
    vols = {n: o.measure.volume_cm3 for n, o in review.organs.items()}
    volume_chart(vols, model.statistics, colours, img / "volumes.png")
    review.images["volumes"] = f"img/{record.key}/volumes.png"
    return review


# -------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.2em;color:#222;
max-width:1400px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.4em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td:first-child{white-space:nowrap}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0;cursor:pointer;user-select:none}
tr.failed td{background:#fde2e2}tr.flagged td{background:#fff4d6}
.badge{display:inline-block;padding:0 .4em;border-radius:.3em;font-size:.85em;color:#fff}
.b-failed{background:#c62828}.b-flagged{background:#e08600}.b-ok{background:#2e7d32}
.b-skipped{background:#777}.b-pending{background:#1565c0}
.num{text-align:right;font-variant-numeric:tabular-nums}
.small{color:#555;font-size:.85em}.swatch{display:inline-block;width:.9em;height:.9em;
border:1px solid #333;margin-right:.3em;vertical-align:middle}
img{max-width:100%;height:auto}figure{margin:.6em 0;display:inline-block}
"""
_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      var asc=th.getAttribute('data-dir')!=='asc';th.setAttribute('data-dir',asc?'asc':'desc');
      rows.sort(function(a,b){
        var x=a.cells[i].getAttribute('data-v'),y=b.cells[i].getAttribute('data-v');
        var nx=parseFloat(x),ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:String(x).localeCompare(String(y));
        return asc?c:-c;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


_PATH = re.compile(r"[^\s:'\"()]*[/\\][^\s:'\"()]*")


def redact_paths(text: str) -> str:
    """Replace file paths (which may name a patient) by ``<path>``.

    Examples
    --------
    >>> redact_paths("/data/Smith_John/ct.nii.gz: corrupt or truncated (Compressed file ended)")
    '<path>: corrupt or truncated (Compressed file ended)'
    """
    return _PATH.sub("<path>", text)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_e(title)}'
        f"</title><style>{_CSS}</style></head><body>\n{body}\n<script>{_SORT_JS}</script>"
        "</body></html>\n"
    )


def _status(r: StudyReview) -> tuple[str, str]:
    state = r.record.state
    if state == "failed":
        return "failed", "failed"
    if state != "done":
        return state, state if state in ("skipped", "pending") else "pending"
    if r.flagged:
        return "flagged", "flagged"
    return "ok", "ok"


def _sort_key(r: StudyReview) -> tuple[int, float, str]:
    status, _ = _status(r)
    rank = {"failed": 0, "flagged": 1, "pending": 2, "running": 2, "skipped": 3, "ok": 4}
    return (rank.get(status, 2), -r.score, r.record.key)


def _td(text: str, value: Any = None, cls: str = "") -> str:
    v = text if value is None else value
    c = f' class="{cls}"' if cls else ""
    return f'<td{c} data-v="{_e(v)}">{text}</td>'


def _key_cell(r: StudyReview, show_identifiers: bool, link: bool) -> str:
    key = _e(r.record.key)
    inner = f'<a href="{key}.html">{key}</a>' if link else key
    if show_identifiers and r.record.identifiers:
        ids = "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in r.record.identifiers.items())
        inner += f'<div class="small">{ids}</div>'
    return _td(inner, r.record.key)


def _batch_page(
    reviews: Sequence[StudyReview], timing_png: str | None, show_identifiers: bool, n_labels: int
) -> str:
    counts: dict[str, int] = {}
    for r in reviews:
        s, _ = _status(r)
        counts[s] = counts.get(s, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    rows = []
    for r in sorted(reviews, key=_sort_key):
        status, badge = _status(r)
        found = sum(o.measure.voxels > 0 for o in r.organs.values())
        flags = "; ".join(
            f"{_e(n)}: " + ", ".join(f.name for f in r.organs[n].flags if f.flagged)
            for n in r.flagged
        )
        dice = r.mean_dice
        total = r.record.timings.get("total_s")
        state = f'<span class="badge b-{badge}">{_e(status)}</span>'
        if r.record.reason:
            reason = r.record.reason if show_identifiers else redact_paths(r.record.reason)
            state += f'<div class="small">{_e(reason)}</div>'
        rows.append(
            f'<tr class="{status}" data-key="{_e(r.record.key)}">'
            + _key_cell(r, show_identifiers, link=r.record.segmentation is not None)
            + _td(state, _sort_key(r)[0])
            + _td(f"{found}/{n_labels}" if r.organs else "–", found, "num")
            + _td(flags or "–", len(r.flagged))
            + _td(f"{r.score:.2f}" if r.organs else "–", r.score, "num")
            + _td("–" if dice is None else f"{dice:.3f}", -1 if dice is None else dice, "num")
            + _td("–" if total is None else f"{total:.1f}", -1 if total is None else total, "num")
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("study", "state", "organs found", "flags", "review score", "ref. Dice", "seconds")
    )
    timing = (
        f'<h2>Batch timing</h2><figure><img src="{_e(timing_png)}" '
        'alt="batch timing and throughput">'
        "</figure>"
        if timing_png
        else ""
    )
    body = (
        f"<h1>Contouring batch review</h1><p>{len(reviews)} studies: {_e(summary)}. Failures and "
        "flagged studies first; click a column to sort. The review score is the largest flag "
        "severity of a study's organs (≥ 1 is flagged; see docs/qa.md for how well it finds bad "
        "contours).</p>"
        f'<table class="sortable" id="studies"><thead><tr>{head}</tr></thead><tbody>'
        + "\n".join(rows)
        + f"</tbody></table>{timing}"
    )
    return _page("Contouring batch review", body)


def _study_page(r: StudyReview, model: Any, show_identifiers: bool) -> str:
    rec = r.record
    status, badge = _status(r)
    ident = ""
    if show_identifiers and rec.identifiers:
        ident = (
            '<p class="small">'
            + "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in rec.identifiers.items())
            + "</p>"
        )
    rows = []
    for name, o in r.organs.items():
        m = o.measure
        stats = model.statistics.get(name, {}).get("volume_cm3")
        train = f"{stats['q05']:.1f}–{stats['q95']:.1f}" if stats else "–"
        met = r.metrics.get(name, {})
        dice = met.get("dice")
        hd95 = met.get("hd95")
        reasons = "<br>".join(_e(t) for t in o.reasons) or "–"
        cls = "flagged" if o.flagged else ""
        rows.append(
            f'<tr class="{cls}">'
            + _td(_e(name), name)
            + _td(f"{m.volume_cm3:.1f}", m.volume_cm3, "num")
            + _td(train, stats["q50"] if stats else -1, "num")
            + _td("–" if o.volume_z is None else f"{o.volume_z:+.1f}", o.volume_z or 0, "num")
            + _td(str(m.components), m.components, "num")
            + _td(_e(m.side or "–"), m.side or "")
            + _td(
                "–" if o.shape_error is None else f"{o.shape_error:.3f}", o.shape_error or 0, "num"
            )
            + _td(f"{o.score:.2f}", o.score, "num")
            + _td(reasons, len(o.reasons))
            + _td("–" if dice is None else f"{dice:.3f}", -1 if dice is None else dice, "num")
            + _td("–" if hd95 is None else f"{hd95:.1f}", -1 if hd95 is None else hd95, "num")
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "organ",
            "volume cm³",
            "training 5–95 %",
            "volume z",
            "components",
            "side",
            "shape error",
            "score",
            "flags",
            "Dice vs ref.",
            "HD95 mm",
        )
    )
    figs = []
    for name, o in r.organs.items():
        if name in r.images:
            flag = " — flagged" if o.flagged else ""
            figs.append(
                f'<figure id="fig-{_e(name)}"><img src="{_e(r.images[name])}" alt="{_e(name)} '
                f'overlays"><figcaption class="small">{_e(name)}{flag}</figcaption></figure>'
            )
    vol = (
        "<h2>Volumes against the training contours</h2>"
        f'<figure><img src="{_e(r.images["volumes"])}"'
        ' alt="organ volumes against training distribution"></figure>'
        if "volumes" in r.images
        else ""
    )
    reason = rec.reason if show_identifiers else redact_paths(rec.reason)
    times = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in rec.timings.items())
    note_text = r.note if show_identifiers else redact_paths(r.note)
    note = f'<p class="small">{_e(note_text)}</p>' if r.note else ""
    body = (
        '<p><a href="index.html">← batch</a></p>'
        f'<h1>Study {_e(rec.key)} <span class="badge b-{badge}">{_e(status)}</span></h1>{ident}'
        f"<p>{_e(reason)}{' — ' if reason and times else ''}{_e(times)}</p>{note}"
        f'<h2>Organs</h2><table class="sortable" id="organs"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        '<p class="small">Flags: ' + ", ".join(FLAG_NAMES) + ". Score ≥ 1 is flagged. Side: "
        "centroid relative to the midline (L = patient's left). Contours: solid in the label "
        "colour; the reference dashed white when present.</p>"
        f"{vol}<h2>Overlays</h2>{''.join(figs) or '<p>No organ to show.</p>'}"
    )
    return _page(f"Study {rec.key}", body)


# ----------------------------------------------------------------------------------- driver
def _default_model(records: Iterable[StudyRecord]) -> Any:
    from medseg.qa.model import (
        ReviewModel,
        load_review_model,
        model_validation_dice,
        review_model_paths,
    )

    for rec in records:
        seg_json = rec.output_dir / "segmentation.json" if rec.output_dir else None
        if seg_json is None or not seg_json.is_file():
            continue
        data = json.loads(seg_json.read_text())
        name = str(data.get("model", {}).get("name") or "hn_oar")
        try:
            qa_json, srm = review_model_paths(name)
        except Exception:
            continue
        if qa_json.is_file():
            model = load_review_model(qa_json, srm)
            model.model_dice = model_validation_dice(name)
            return model
        labels = tuple(str(e["name"]) for e in data.get("labels", []) if "name" in e)
        logger.warning("no review model beside %s: only missing/laterality/fragment flags", name)
        return ReviewModel(labels, {})
    from medseg.io.openkbp import OPENKBP_OARS

    return ReviewModel(OPENKBP_OARS, {})


def _write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, "utf-8"))


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    records: Sequence[StudyRecord] | None = None,
    plans: Iterable[Any] | None = None,
    inputs: Sequence[str | os.PathLike[str]] | None = None,
    review_model: Any = None,
    show_identifiers: bool = False,
) -> Path:
    """Review a batch and write ``OUT/report/index.html`` with one page per study.

    Parameters
    ----------
    out_dir
        The batch folder (``manifest.sqlite`` and/or ``studies/<key>/``).
    records
        The studies (default: from the manifest, else from the study folders).
    plans
        The batch runner's study plans (``key``, ``kind``, ``files``, ``references``): where
        each study's CT and reference contours are, for the overlays and reference metrics.
    inputs
        Or the batch inputs, discovered again (``medseg report OUT --inputs ...``).
    review_model
        :class:`~medseg.qa.model.ReviewModel` (default: the one shipped beside the model named
        in the studies' ``segmentation.json``).
    show_identifiers
        Show Study/Series Instance UIDs and input paths (off: keys only).

    Returns
    -------
    Path
        ``OUT/report/index.html``.
    """
    from medseg.errors import InputError
    from medseg.qa.figures import batch_timing_chart

    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"{out}: no such batch folder; give the -o folder of medseg contour.")
    sources: dict[str, StudySources] = {}
    if plans is not None:
        sources = sources_from_plans(plans)
    elif inputs:
        from medseg.contour import discover_studies

        sources = sources_from_plans(discover_studies(inputs, exclude=[out]))
    if records is None:
        if (out / "manifest.sqlite").is_file():
            records = records_from_manifest(out, sources)
        elif (out / "studies").is_dir():
            records = records_from_folders(out, sources)
        else:
            raise InputError(
                f"{out}: neither manifest.sqlite nor studies/ found; give the output folder of a "
                "medseg contour batch."
            )
    started = time.time()
    model = review_model if review_model is not None else _default_model(records)
    final = out / REPORT_DIR
    # built in a hidden folder and renamed into place whole: a killed run leaves no half
    # report and never a mix of old and new pages (the next run removes its leftovers)
    with write_folder_atomic(final, replace=True) as report:
        reviews = []
        for rec in records:
            logger.info("reviewing %s", rec.key)
            r = review_study(rec, model, report)
            reviews.append(r)
            if rec.segmentation is not None:
                page = _study_page(r, model, show_identifiers)
                _write_text(report / f"{rec.key}.html", page)
        timed = [
            (r.record.key[:10], r.record.timings, r.record.finished_at)
            for r in reviews
            if r.record.timings
        ]
        timing_png = None
        if timed:
            batch_timing_chart(timed, report / "img" / "batch_timing.png")
            timing_png = "img/batch_timing.png"
        studies = [r.to_json() for r in reviews]
        if not show_identifiers:
            for s in studies:
                s["reason"] = redact_paths(s["reason"])
                s["note"] = redact_paths(s["note"])
        # wall-clock start/end of the build (epoch s), for the batch benchmark's time split
        built = {"started": round(started, 3), "finished": round(time.time(), 3)}
        data = {"studies": studies, "thresholds": model.thresholds, "built": built}
        write_atomic(report / "review.json", lambda t: t.write_text(json.dumps(data, indent=1)))
        index = _batch_page(reviews, timing_png, show_identifiers, len(model.labels))
        write_atomic(report / "index.html", lambda t: t.write_text(index, "utf-8"))
    path = final / "index.html"
    logger.info("report written to %s", path)
    return path
