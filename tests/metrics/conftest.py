"""Fixtures of the metrics tests: the DeepMind oncologist/radiographer mask pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.io.mask_folder import MaskSet, read_mask_folder

CASES = ("0522c0017", "0522c0248", "0522c0669", "TCGA-CV-7236")


@pytest.fixture(scope="session")
def deepmind_pairs(
    shared_data: Path,
) -> list[tuple[str, str, np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """All 84 organ pairs: (case, organ, radiographer mask, oncologist mask, spacing_mm)."""
    root = shared_data / "deepmind_hn_oar_masks" / "test"
    out = []
    for case in CASES:
        onc: MaskSet = read_mask_folder(root / "oncologist" / case)
        rad: MaskSet = read_mask_folder(root / "radiographer" / case)
        assert onc.grid.same_grid(rad.grid)
        for organ, ref in onc.masks.items():
            out.append((case, organ, rad.masks[organ], ref, onc.grid.spacing_mm))
    assert len(out) == 84
    return out
