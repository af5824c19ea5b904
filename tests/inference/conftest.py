"""Fixtures for the inference tests: real CTs and small deterministic models."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.io.image_files import read_image_file
from medseg.io.openkbp import load_openkbp_ct
from medseg.volume import Volume


@pytest.fixture(scope="session")
def ts_ct(shared_data: Path) -> Volume:
    """TotalSegmentator example CT: 112×101×122 at 3 mm, orientation SAR (RAS NIfTI)."""
    return read_image_file(shared_data / "totalsegmentator_example_ct" / "example_ct.nii.gz")


@pytest.fixture(scope="session")
def kbp_ct(shared_data: Path) -> Volume:
    """OpenKBP pt_4 CT: 128³, SPL, HU (air -1024)."""
    return load_openkbp_ct(shared_data / "openkbp_hn_ct" / "train-pats" / "pt_4")
