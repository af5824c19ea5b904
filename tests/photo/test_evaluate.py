from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main
from medseg.errors import InputError
from medseg.photo.evaluate import dice_jaccard, evaluate_folders


def _oracle(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    pa = {tuple(x) for x in np.argwhere(a)}
    pb = {tuple(x) for x in np.argwhere(b)}
    return 2 * len(pa & pb) / (len(pa) + len(pb)), len(pa & pb) / len(pa | pb)


def test_dice_jaccard_vs_set_oracle() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        a, b = rng.random((30, 40)) > 0.6, rng.random((30, 40)) > 0.5
        assert dice_jaccard(a, b) == pytest.approx(_oracle(a, b))
    empty = np.zeros((3, 3), bool)
    assert dice_jaccard(empty, empty) == (1.0, 1.0)
    assert dice_jaccard(empty, ~empty) == (0.0, 0.0)


def test_evaluate_folders_and_cli(tmp_path: Path, shared_data: Path, capsys) -> None:
    refs = sorted((shared_data / "ham10000_skin_lesion" / "masks").glob("*.png"))
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    expected = []
    inter = total = 0
    for k, ref in enumerate(refs):
        mask = np.asarray(Image.open(ref)) > 0
        pred = np.roll(mask, 10 * k, axis=1)  # shifted copy: known, varied overlap
        Image.fromarray(pred.astype(np.uint8) * 255).save(pred_dir / f"{ref.stem}_mask.png")
        expected.append(_oracle(pred, mask))
        inter += len(
            set(zip(*np.nonzero(pred), strict=True)) & set(zip(*np.nonzero(mask), strict=True))
        )
        total += int(pred.sum()) + int(mask.sum())
    scores, summary = evaluate_folders(pred_dir, refs[0].parent)
    assert [s.name for s in scores] == [r.stem for r in refs]
    assert scores[0].dice == 1.0
    assert summary["mean_jaccard"] == pytest.approx(np.mean([e[1] for e in expected]))
    assert summary["pooled_dice"] == pytest.approx(2 * inter / total)
    assert summary["pooled_jaccard"] == pytest.approx(inter / (total - inter))
    assert summary["pooled_dice"] != pytest.approx(summary["mean_dice"])
    assert (
        main(
            [
                "photo",
                "evaluate",
                str(pred_dir),
                str(refs[0].parent),
                "-o",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "MEAN (n=5)" in out and f"{2 * inter / total:7.4f}" in out.split("POOLED")[1]
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["summary"]["mean_dice"] == pytest.approx(np.mean([e[0] for e in expected]))
    (pred_dir / f"{refs[0].stem}_mask.png").unlink()
    with pytest.raises(InputError, match="no prediction"):
        evaluate_folders(pred_dir, refs[0].parent)
