"""The network's own trust in each organ (expected Dice, TTA disagreement) and TTA safety."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_models import ThresholdModel

from medseg.errors import ConfigError
from medseg.inference import InferenceConfig, Predictor
from medseg.inference.quality import expected_dice, organ_quality, tta_disagreement
from medseg.inference.sliding_window import WindowConfig, sliding_window_labels
from medseg.models import load_checkpoint
from medseg.preprocess import PreprocessingSpec
from medseg.volume import LabelMap, Volume


def test_expected_dice_against_its_definition() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((6, 7, 8))
    m = p > 0.5
    want = 2 * (p * m).sum() / (p.sum() + m.sum())
    assert expected_dice(p, m) == pytest.approx(want, rel=1e-12)
    assert expected_dice(m.astype(float), m) == 1.0  # certain and kept: expected Dice 1
    assert expected_dice(np.zeros(5), np.zeros(5, bool)) == 1.0
    assert expected_dice(np.full(5, 0.3), np.zeros(5, bool)) == 0.0  # mass, nothing kept


def test_organ_quality_maps_channels_to_organs() -> None:
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:2] = 7  # label id 7 is network channel 1
    probs = np.zeros((2, 4, 4, 4), np.float32)
    probs[1, :2] = 0.5
    probs[0] = 1 - probs[1]
    flips = [np.where(labels == 7, 1, 0), np.where(labels == 7, 1, 0), np.zeros((4, 4, 4))]
    q = organ_quality(labels, probs, {"Organ": (7, 1)}, flips)
    assert q["Organ"]["expected_dice"] == pytest.approx(2 * 16 / (16 + 32), abs=1e-4)
    assert q["Organ"]["tta_disagreement"] == tta_disagreement(flips, [1])[1] > 0
    assert "tta_disagreement" not in organ_quality(labels, probs, {"Organ": (7, 1)})["Organ"]


def test_sliding_window_keeps_each_flips_own_labels() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((30, 34, 38)).astype(np.float32)

    def thresh(x: torch.Tensor) -> torch.Tensor:  # mirror-equivariant
        return torch.cat([0.5 - x, x - 0.5], dim=1)

    def tilted(x: torch.Tensor) -> torch.Tensor:  # not equivariant: depends on position
        ramp = torch.linspace(-0.3, 0.3, x.shape[2]).reshape(1, 1, -1, 1, 1)
        return torch.cat([0.5 - x, x - 0.5 + ramp], dim=1)

    flips = [(), (0,), (1, 2)]
    out = sliding_window_labels(image, thresh, WindowConfig((16, 16, 16), flips=flips))
    assert out.flip_labels == ()  # not asked for
    out = sliding_window_labels(
        image, thresh, WindowConfig((16, 16, 16), flips=flips, flip_labels=True)
    )
    assert len(out.flip_labels) == 3
    for f in out.flip_labels:
        np.testing.assert_array_equal(f, (image > 0.5).astype(np.uint8))
    out = sliding_window_labels(
        image, tilted, WindowConfig((30, 34, 38), flips=[(), (0,)], flip_labels=True)
    )
    plain, mirrored = out.flip_labels
    np.testing.assert_array_equal(
        plain, sliding_window_labels(image, tilted, WindowConfig((30, 34, 38))).labels
    )
    assert (plain != mirrored).any()  # the mirrored pass sees the ramp reversed


@pytest.fixture(scope="module")
def pt112(shared_data):  # type: ignore[no-untyped-def]
    from medseg.io.openkbp import load_openkbp_ct, load_openkbp_labels

    folder = shared_data / "openkbp_hn_ct" / "train-pats" / "pt_112"
    return load_openkbp_ct(folder), load_openkbp_labels(folder)


def test_shipped_model_reports_its_confidence_without_changing_labels(pt112) -> None:  # type: ignore[no-untyped-def]
    from medseg.metrics import dice_per_label

    ct, ref = pt112
    with_q = Predictor.from_checkpoint("hn_oar", device="cpu")
    labels = with_q.predict(ct)
    quality = with_q.last_quality
    assert set(quality) == set(labels.label_map.names)
    without = Predictor.from_checkpoint(
        "hn_oar", device="cpu", config=InferenceConfig(quality=False)
    )
    np.testing.assert_array_equal(without.predict(ct).array, labels.array)
    assert without.last_quality == {}
    dice = dict(
        zip(
            labels.label_map.names,
            dice_per_label(labels.array, ref.array, list(labels.label_map.ids)),
            strict=True,
        )
    )
    for name, q in quality.items():
        assert 0.5 < q["expected_dice"] <= 1.0, name
        # a validation patient: the network expects more than it gets, never far less
        assert q["expected_dice"] > dice[name] - 0.1, (name, q, dice[name])


def test_tta_is_refused_for_a_model_trained_without_mirroring(pt112) -> None:  # type: ignore[no-untyped-def]
    ct, _ = pt112
    with pytest.raises(ConfigError, match=r"trained without mirrored images.*Run without --tta"):
        Predictor.from_checkpoint("hn_oar", device="cpu", config=InferenceConfig(tta=True))
    # why: mirroring the head superior-inferior / anterior-posterior loses organs; shown on the
    # network itself by declaring the axes it was never trained on
    model, info = load_checkpoint("hn_oar")
    forced = Predictor(
        model, info.preprocessing, info.label_map, device="cpu",
        config=InferenceConfig(tta=True), mirror_axes=(0, 1),
    )  # fmt: skip
    lost = forced.predict(ct)
    counts = np.bincount(lost.array.ravel(), minlength=8)[1:]
    assert (counts == 0).sum() >= 3, counts  # organs vanish under mirrored TTA
    assert all(q["tta_disagreement"] > 0.2 for q in forced.last_quality.values())


def test_tta_disagreement_on_a_model_declared_mirror_invariant(kbp_ct: Volume) -> None:
    spec = PreprocessingSpec((3.0, 4.0, 4.0), "SPL", (-1000.0, 1000.0), (32, 32, 32))
    predictor = Predictor(
        ThresholdModel(), spec, LabelMap.from_names(["Soft", "Bone"]), device="cpu",
        config=InferenceConfig(tta=True), mirror_axes=(0, 1, 2),
    )  # fmt: skip
    assert len(predictor.flips) == 8
    predictor.predict(kbp_ct)
    for name in ("Soft", "Bone"):  # per-voxel model: every mirrored pass agrees exactly
        assert predictor.last_quality[name]["tta_disagreement"] == 0.0
        assert 0.0 < predictor.last_quality[name]["expected_dice"] <= 1.0
