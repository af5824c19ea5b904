"""``--device cuda`` without a CUDA GPU: a clear error before any study runs (exit 2).

CUDA is hidden from torch with monkeypatch, so the tests mean the same on a GPU machine.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
from conftest import fast_config

from medseg.cli import main
from medseg.contour import run_contour
from medseg.runtime import CudaUnavailableError


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cli_device_cuda_without_gpu_exit_2(
    no_cuda: None,
    mixed_tree: tuple[Path, dict],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tree, _ = mixed_tree
    out = tmp_path / "batch"
    assert main(["contour", str(tree), "-o", str(out), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "medseg contour: error: device 'cuda' was requested but no CUDA GPU is available" in err
    assert "--device cpu" in err
    assert not out.exists()  # checked before discovery: no manifest, no study folder


@pytest.mark.slow
def test_external_cluster_worker_without_gpu(
    no_cuda: None, mixed_tree: tuple[Path, dict], tmp_path: Path
) -> None:
    """On an external cluster the workers check when they load the model, before any task."""
    from distributed import LocalCluster

    tree, _ = mixed_tree
    out = tmp_path / "batch"
    config = fast_config().with_overrides(device="cuda")
    # in-process workers (threads) see the patched torch.cuda
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        pytest.raises(CudaUnavailableError) as info,
    ):
        run_contour([tree], out, config, scheduler=cluster.scheduler_address)
    assert str(info.value).startswith("loading the model on the Dask workers failed: device ")
    assert "no CUDA GPU is available" in str(info.value)
    assert list((out / "studies").iterdir()) == []
    db = sqlite3.connect(out / "manifest.sqlite")
    assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 0
    assert db.execute("SELECT outcome FROM runs").fetchall() == [("interrupted",)]
    db.close()
