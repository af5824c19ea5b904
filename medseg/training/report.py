"""Scoring training runs on their validation patients, tables, curves and overlays for cards.

The launchers ``pipelines/evaluate_hn_oar.py``, ``report_hn_oar.py`` and ``overlay_hn_oar.py``
only parse arguments and call these functions. Every score goes through
:func:`medseg.training.evaluate.evaluate_checkpoint` (the Predictor path of ``medseg segment``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError
from medseg.io.atomic import write_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "evaluate_runs",
    "plot_learning_curves",
    "plot_overlay",
    "pool_folds",
    "release_checkpoint",
    "results_table",
    "run_validation_folders",
]

Results = dict[str, dict[str, Any]]


def run_validation_folders(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Folders of a training run's validation patients (from its ``cases.json``/``config.json``).

    Raises
    ------
    ConfigError
        The run folder lacks its JSON files, or a validation patient is in no data root.
    """
    run = Path(run_dir)
    try:
        cases = json.loads((run / "cases.json").read_text())["val"]
        data = json.loads((run / "config.json").read_text())["data"]
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"{run}: not a training run folder (cases.json, config.json): {exc}"
        ) from exc
    roots = [data["root"], *data.get("extra_roots", [])]
    out = []
    for case in cases:
        found = [Path(r) / case for r in roots if (Path(r) / case).is_dir()]
        if not found:
            raise ConfigError(f"{run}: validation patient {case} is in none of {roots}.")
        out.append(found[0])
    return out


def evaluate_runs(
    runs: Sequence[str | os.PathLike[str]],
    *,
    checkpoint: str = "best.pt",
    previous: Mapping[str, Any] | None = None,
) -> Results:
    """Score each run's ``checkpoint`` on its validation patients, raw and with ``+lcc``.

    Returns ``{run name (+lcc): {"cases", "dice", "hd95_mm", "seconds"}}`` merged over
    ``previous`` (so an interrupted evaluation can be continued).
    """
    from medseg.training.evaluate import evaluate_checkpoint

    results: Results = dict(previous or {})
    for run_dir in runs:
        run = Path(run_dir)
        folders = run_validation_folders(run)
        scores = evaluate_checkpoint(run / checkpoint, folders, largest_component=(False, True))
        for lcc in (False, True):
            sel = [s for s in scores if s.largest_component == lcc]
            results[run.name + ("+lcc" if lcc else "")] = {
                "cases": [s.case for s in sel],
                "dice": {s.case: s.dice for s in sel},
                "hd95_mm": {s.case: s.hd95_mm for s in sel},
                "seconds": {s.case: s.seconds for s in sel},
            }
    return results


def results_table(results: Mapping[str, Any], arms: Sequence[str]) -> str:
    """Markdown table: per organ (and mean) Dice and HD95, mean ± sd over patients, per arm.

    Examples
    --------
    >>> r = {"a": {"dice": {"p1": {"X": 0.5}, "p2": {"X": 1.0}},
    ...            "hd95_mm": {"p1": {"X": 4.0}, "p2": {"X": 2.0}}}}
    >>> print(results_table(r, ["a"]).splitlines()[2])
    | X | 0.750 ± 0.250 | 3.0 ± 1.0 |
    """
    organs = list(next(iter(results[arms[0]]["dice"].values())))
    head = "| organ | " + " | ".join(f"{a} Dice | {a} HD95 mm" for a in arms) + " |"
    lines = [head, "|---" * (1 + 2 * len(arms)) + "|"]
    for organ in [*organs, "mean"]:
        cells = []
        for a in arms:
            r = results[a]
            if organ == "mean":
                d = np.array([list(v.values()) for v in r["dice"].values()])
                h = np.array([list(v.values()) for v in r["hd95_mm"].values()])
                cells += [f"**{d.mean():.3f}**", f"**{h.mean():.1f}**"]
            else:
                d = np.array([v[organ] for v in r["dice"].values()])
                h = np.array([v[organ] for v in r["hd95_mm"].values()])
                cells += [f"{d.mean():.3f} ± {d.std():.3f}", f"{h.mean():.1f} ± {h.std():.1f}"]
        lines.append(f"| {organ} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pool_folds(results: Mapping[str, Any]) -> Results:
    """``{"<arm> (k-fold CV)": pooled per-case scores}`` for runs named ``<arm>_fold<N>``.

    Examples
    --------
    >>> r = {f"u_fold{i}": {"cases": [f"p{i}"], "dice": {f"p{i}": {}}, "hd95_mm": {f"p{i}": {}},
    ...                     "seconds": {f"p{i}": 1.0}} for i in range(2)}
    >>> pooled = pool_folds(r)
    >>> list(pooled), pooled["u (2-fold CV)"]["cases"]
    (['u (2-fold CV)'], ['p0', 'p1'])
    """
    pooled: Results = {}
    folds: dict[str, list[str]] = {}
    for name in results:
        base, sep, fold = name.rpartition("_fold")
        number = fold.split("+")[0]
        if sep and number.isdigit():
            arm = base + fold[len(number) :]  # keep a "+lcc" suffix
            folds.setdefault(arm, []).append(name)
    for arm, names in folds.items():
        key = f"{arm} ({len(names)}-fold CV)"
        pooled[key] = {"cases": [], "dice": {}, "hd95_mm": {}, "seconds": {}}
        for n in sorted(names):
            for field in ("dice", "hd95_mm", "seconds"):
                pooled[key][field].update(results[n][field])
            pooled[key]["cases"] += results[n]["cases"]
    return pooled


def plot_learning_curves(
    runs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]
) -> Path:
    """Training loss and validation mean Dice (source grid) per epoch of each run, as a PNG."""
    from medseg.plotting import new_figure

    fig, axes = new_figure((10, 3.5), 1, 2)
    for run_dir in runs:
        run = Path(run_dir)
        rows = list(csv.DictReader((run / "log.csv").open()))
        steps = [int(r["step"]) for r in rows]
        axes[0].plot(steps, [float(r["train_loss"]) for r in rows], label=run.name)
        val = [(int(r["step"]), float(r["val_mean_dice"])) for r in rows if r.get("val_mean_dice")]
        if val:
            axes[1].plot(*zip(*val, strict=True), "o-", label=run.name)
    axes[0].set(xlabel="step", ylabel="training loss")
    axes[1].set(xlabel="step", ylabel="validation mean Dice", ylim=(0, 1))
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=70, format="png"))


def plot_overlay(
    checkpoint: str | os.PathLike[str],
    case_folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
) -> Path:
    """Axial + sagittal CT with the reference (solid) and the prediction (dashed) contours.

    The axial slice is the one where the parotids and the mandible are all largest; the
    sagittal one passes through the brainstem's centre. Prediction through the Predictor.
    """
    from medseg.inference import Predictor
    from medseg.io.openkbp import load_openkbp_ct, load_openkbp_labels
    from medseg.plotting import new_figure

    predictor = Predictor.from_checkpoint(checkpoint)
    label_map = predictor.label_map
    ct = load_openkbp_ct(case_folder)
    ref = load_openkbp_labels(case_folder, list(label_map.names)).volume.array
    pred = predictor.predict(ct).volume.array
    ids = [label_map.id_of(n) for n in ("LeftParotid", "RightParotid", "Mandible")]
    counts = np.min([(ref == i).sum(axis=(1, 2)) for i in ids], axis=0)
    k = int(np.argmax(counts))
    col = int(np.argwhere(ref == label_map.id_of("Brainstem")).mean(axis=0)[2])
    fig, ax = new_figure((10, 5), 1, 2)
    ax[0].imshow(ct.array[k], cmap="gray", vmin=-200, vmax=300)
    aspect = ct.spacing_mm[0] / ct.spacing_mm[1]
    sag = (slice(None), slice(None), col)
    ax[1].imshow(ct.array[sag], cmap="gray", vmin=-200, vmax=300, origin="lower", aspect=aspect)
    for e in label_map:
        colour = np.array(e.color) / 255
        for axis, sl in ((0, (k, slice(None), slice(None))), (1, sag)):
            for arr, style in ((ref, "solid"), (pred, "dashed")):
                if (arr[sl] == e.id).any():
                    ax[axis].contour(
                        arr[sl] == e.id, colors=[colour], linewidths=1.0, linestyles=style
                    )
    ax[0].set_title(
        f"{Path(case_folder).name} axial {k}: reference solid, prediction dashed", fontsize=9
    )
    ax[1].set_title(f"sagittal column {col}", fontsize=9)
    fig.tight_layout()
    return write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=70, format="png"))


def release_checkpoint(
    run_dir: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    checkpoint: str = "last.pt",
    extra_metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write a run's checkpoint for shipping: weights and metadata, no optimiser state.

    The run's last validation row (``log.csv``: per-organ Dice on the validation patients,
    through the Predictor) and its schedule (epochs, steps, minutes) become the checkpoint's
    ``metrics``, so tools that read a model's validation figures (e.g. the QA review) see them.
    """
    from medseg.models import load_checkpoint, save_checkpoint

    run = Path(run_dir)
    model, info = load_checkpoint(run / checkpoint)
    rows = list(csv.DictReader((run / "log.csv").open()))
    validated = [r for r in rows if r.get("val_mean_dice")]
    if not validated:
        raise ConfigError(f"{run}: log.csv has no validation row to record.")
    last = validated[-1]
    names = list(info.label_map.names)
    cases = json.loads((run / "cases.json").read_text())
    metrics: dict[str, Any] = {
        "val_mean_dice": float(last["val_mean_dice"]),
        "val_dice": {n: float(last[f"dice_{n}"]) for n in names},
        "val_cases": cases["val"],
        "epoch": int(last["epoch"]),
        "steps": int(last["step"]),
        "train_minutes": round(float(last["elapsed_s"]) / 60, 1),
        **dict(extra_metrics or {}),
    }
    return save_checkpoint(
        destination,
        model,
        model_name=info.model_name,
        model_options=info.model_options,
        label_map=info.label_map,
        preprocessing=info.preprocessing,
        config=info.config,
        metrics=metrics,
        case_ids=cases["train"],
    )
