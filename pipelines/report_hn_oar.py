"""Markdown tables and figures for docs/models/hn_oar.md and docs/ablation.md.

Usage: python pipelines/report_hn_oar.py EVAL.json FIG_DIR RUN_DIR [RUN_DIR ...]
EVAL.json is written by pipelines/evaluate_hn_oar.py; prints Markdown to stdout. Runs named
``<arm>_fold<N>`` are also pooled per arm (every held-out case scored by the fold model that did
not see it: the cross-validated figures), printed as ``<arm> (k-fold CV)``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def table(results: dict, arms: list[str]) -> str:
    organs = list(next(iter(results[arms[0]]["dice"].values())))
    head = "| organ | " + " | ".join(f"{a} Dice | {a} HD95 mm" for a in arms) + " |"
    lines = [head, "|---" * (1 + 2 * len(arms)) + "|"]
    for o in [*organs, "mean"]:
        cells = []
        for a in arms:
            r = results[a]
            if o == "mean":
                d = np.array([list(v.values()) for v in r["dice"].values()])
                h = np.array([list(v.values()) for v in r["hd95_mm"].values()])
                cells += [f"**{d.mean():.3f}**", f"**{h.mean():.1f}**"]
            else:
                d = np.array([v[o] for v in r["dice"].values()])
                h = np.array([v[o] for v in r["hd95_mm"].values()])
                cells += [f"{d.mean():.3f} ± {d.std():.3f}", f"{h.mean():.1f} ± {h.std():.1f}"]
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pool_folds(results: dict) -> dict:
    """``{arm (k-fold CV): pooled per-case scores}`` for arms with runs ``<arm>_fold<N>``."""
    pooled: dict[str, dict] = {}
    folds: dict[str, list[str]] = {}
    for name in results:
        base, sep, fold = name.rpartition("_fold")
        if sep and fold.split("+")[0].isdigit():
            arm = base + fold[len(fold.split("+")[0]) :]  # keep a "+lcc" suffix
            folds.setdefault(arm, []).append(name)
    for arm, names in folds.items():
        key = f"{arm} ({len(names)}-fold CV)"
        pooled[key] = {"cases": [], "dice": {}, "hd95_mm": {}, "seconds": {}}
        for n in sorted(names):
            for field in ("dice", "hd95_mm", "seconds"):
                pooled[key][field].update(results[n][field])
            pooled[key]["cases"] += results[n]["cases"]
    return pooled


def curves(runs: list[Path], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for run in runs:
        rows = list(csv.DictReader((run / "log.csv").open()))
        ep = [int(r["epoch"]) for r in rows]
        axes[0].plot(ep, [float(r["train_seg"]) for r in rows], label=run.name)
        val = [(int(r["epoch"]), float(r["val_mean_dice"])) for r in rows if r.get("val_mean_dice")]
        axes[1].plot(*zip(*val, strict=True), "o-", label=run.name)
    axes[0].set(xlabel="epoch (20 steps)", ylabel="train Dice+CE (segmentation term)")
    axes[1].set(xlabel="epoch (20 steps)", ylabel="validation mean Dice (model grid)", ylim=(0, 1))
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=70)


def main(argv: list[str]) -> int:
    results = json.loads(Path(argv[0]).read_text())
    fig_dir, runs = Path(argv[1]), [Path(a) for a in argv[2:]]
    fig_dir.mkdir(parents=True, exist_ok=True)
    arms = [r.name for r in runs if r.name in results]
    print(table(results, arms))
    print()
    print(table(results, [f"{a}+lcc" for a in arms if f"{a}+lcc" in results]))
    pooled = pool_folds(results)
    for arm in sorted(pooled):
        print(f"\n{arm}: {len(pooled[arm]['cases'])} held-out cases\n")
        print(table(pooled, [arm]))
    for run in runs:
        rows = list(csv.DictReader((run / "log.csv").open()))
        last = rows[-1]
        secs = np.mean([s for v in [results[run.name]["seconds"]] for s in v.values()])
        print(
            f"- {run.name}: {last['epoch']} epochs, {last['step']} steps, "
            f"{float(last['elapsed_s']) / 60:.1f} min; inference {secs:.1f} s/case"
        )
    curves(runs, fig_dir / "hn_oar_ablation_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
