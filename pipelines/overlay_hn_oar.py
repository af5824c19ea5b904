"""Axial + sagittal overlay of a checkpoint's prediction vs the reference on one OpenKBP case.

Usage: python pipelines/overlay_hn_oar.py CHECKPOINT CASE_FOLDER OUT.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from medseg.io.openkbp import load_openkbp_ct, load_openkbp_labels
from medseg.models import load_checkpoint
from medseg.training.evaluate import segment_volume


def main(argv: list[str]) -> int:
    model, info = load_checkpoint(argv[0])
    ct = load_openkbp_ct(argv[1])
    ref = load_openkbp_labels(argv[1], list(info.label_map.names))
    pred = segment_volume(model, info, ct)
    a, p = ref.array, pred.array
    cnt = [(a == i).sum(axis=(1, 2)) for i in (3, 4, 7)]
    k = int(np.argmax(np.minimum(np.minimum(cnt[0], cnt[1]), cnt[2])))
    col = int(np.argwhere(a == 1).mean(axis=0)[2])
    fig, ax = plt.subplots(1, 2, figsize=(10, 5))
    ax[0].imshow(ct.array[k], cmap="gray", vmin=-200, vmax=300)
    asp = ct.spacing_mm[0] / ct.spacing_mm[1]
    ax[1].imshow(ct.array[:, :, col], cmap="gray", vmin=-200, vmax=300, origin="lower", aspect=asp)
    for e in info.label_map:
        c = np.array(e.color if e.name != "Mandible" else (255, 0, 0)) / 255
        for axis, sl in ((0, (k, slice(None), slice(None))), (1, (slice(None), slice(None), col))):
            if (a[sl] == e.id).any():
                ax[axis].contour(a[sl] == e.id, colors=[c], linewidths=1.0)
            if (p[sl] == e.id).any():
                ax[axis].contour(p[sl] == e.id, colors=[c], linewidths=1.0, linestyles="dashed")
    ax[0].set_title(
        f"{Path(argv[1]).name} axial {k}: reference solid, prediction dashed", fontsize=9
    )
    ax[1].set_title(f"sagittal column {col}", fontsize=9)
    fig.tight_layout()
    fig.savefig(argv[2], dpi=70)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
