"""`medseg train` command-line paths: relative to the working directory, like every CLI path."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.cli import main


def test_output_dir_on_the_command_line_is_relative_to_the_working_directory(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("pt_4", "pt_100"):
        (data / name).symlink_to(shared_data / "openkbp_hn_ct" / "train-pats" / name)
    configs = tmp_path / "configs"
    configs.mkdir()
    cfg = configs / "tiny.yaml"
    cfg.write_text(
        f"name: tiny\noutput_dir: ../from_config\nnum_threads: 1\n"
        f"data: {{root: {data}, val_cases: [pt_100]}}\n"
        "preprocessing: {spacing_mm: [6.0, 8.0, 8.0], roi_size: [16, 32, 32]}\n"
        "model: {name: unet3d, options: {channels: [4, 8]}}\n"
        "optim: {epochs: 1, samples_per_case: 1, val_every: 1, amp: false}\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["train", str(cfg), "--output-dir", "runs/here", "--no-progress"]) == 0
    assert (work / "runs" / "here" / "last.pt").is_file()  # not configs/runs/here
    assert not (configs / "runs").exists() and not (tmp_path / "from_config").exists()
    # in the config file itself a relative output_dir stays relative to the config
    assert main(["train", str(cfg), "--no-progress"]) == 0
    assert (tmp_path / "from_config" / "last.pt").is_file()
