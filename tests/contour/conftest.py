"""Fixtures of the contour tests: a mixed DICOM tree of real CTs, a fast test config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contour_data import build_tree

from medseg.contour import ContourConfig


@pytest.fixture(scope="session")
def mixed_tree(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(tree root, role -> StudyInstanceUID) of the six-study tree (see contour_data)."""
    root = tmp_path_factory.mktemp("contour_tree")
    uids = build_tree(root, shared_data)
    return root / "pacs", uids


def fast_config(**cluster: int) -> ContourConfig:
    """The shipped model with window overlap 0.25 (27 windows per OpenKBP CT) on one worker."""
    base = {"workers": 1, "threads_per_worker": 2, "torch_threads": 2, "volumes_in_flight": 2}
    return ContourConfig.from_dict({"inference": {"overlap": 0.25}, "cluster": {**base, **cluster}})
