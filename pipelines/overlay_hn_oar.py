"""Axial + sagittal overlay of a checkpoint's prediction vs the reference on one OpenKBP case.

Usage: python pipelines/overlay_hn_oar.py CHECKPOINT CASE_FOLDER OUT.png
Thin launcher: the logic is medseg.training.report.plot_overlay.
"""

from __future__ import annotations

import sys

from medseg.training.report import plot_overlay

if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    print(plot_overlay(sys.argv[1], sys.argv[2], sys.argv[3]))
