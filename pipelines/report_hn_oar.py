"""Tables and learning curves of scored hn_oar runs (for docs/models/hn_oar.md, docs/ablation.md).

Usage: python pipelines/report_hn_oar.py RESULTS.json FIG_DIR RUN_DIR [RUN_DIR ...]
RESULTS.json comes from pipelines/evaluate_hn_oar.py. Thin launcher: the logic is
medseg.training.report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medseg.training.report import plot_learning_curves, pool_folds, results_table


def main(argv: list[str]) -> int:
    results = json.loads(Path(argv[0]).read_text())
    fig_dir, runs = Path(argv[1]), [Path(a) for a in argv[2:]]
    arms = [r.name for r in runs if r.name in results]
    print(results_table(results, arms))
    print()
    print(results_table(results, [f"{a}+lcc" for a in arms if f"{a}+lcc" in results]))
    pooled = pool_folds(results)
    for arm in sorted(pooled):
        print(f"\n{arm}: {len(pooled[arm]['cases'])} held-out cases\n")
        print(results_table(pooled, [arm]))
    print(plot_learning_curves(runs, fig_dir / "hn_oar_ablation_curves.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
