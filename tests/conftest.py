"""Shared fixtures: the real data in ../shared/data (CI has it beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; the tests need it (they use real data, not skips)."""
    if not SHARED_DATA.is_dir():
        raise RuntimeError(
            f"real test data not found at {SHARED_DATA}; check out medseg beside ../shared "
            "(CI and the dev machines have it there)."
        )
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _single_thread_torch() -> None:
    """Keep torch to the machine's cores and deterministic-ish in tests."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
