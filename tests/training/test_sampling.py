"""Patch sampling (issue 19): per voxel vs per organ (nnU-Net's class-balanced sampling).

On a real OpenKBP patient, voxel sampling centres patches on organs in proportion to their
volume, so the esophagus is rarely the centre; class sampling picks each present organ equally.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from monai.transforms import SpatialPadd

from medseg.errors import ConfigError
from medseg.io.openkbp import OPENKBP_OARS
from medseg.preprocess import PreprocessingSpec
from medseg.training.config import DataConfig, OptimConfig
from medseg.training.data import CachedPreparedd, ClassBalancedCropd, patch_sampler

SPEC = PreprocessingSpec((3.0, 4.0, 4.0), "SPL", (-500.0, 500.0), (48, 64, 64))
ESOPHAGUS = OPENKBP_OARS.index("Esophagus") + 1
MANDIBLE = OPENKBP_OARS.index("Mandible") + 1
N = 1000


@pytest.fixture(scope="module")
def prepared(shared_data: Path) -> dict:
    case = shared_data / "openkbp_hn_ct" / "train-pats" / "pt_4"
    d = CachedPreparedd(DataConfig(root=str(case.parent)), SPEC)({"case": str(case)})
    return SpatialPadd(keys=("image", "label"), spatial_size=SPEC.roi_size)(d)


def _picked_organs(sampler: ClassBalancedCropd, label: np.ndarray, n: int) -> np.ndarray:
    """Organ ids the sampler picks for ``n`` patches (0: a patch anywhere)."""
    sampler.set_random_state(seed=0)
    out = []
    for _ in range(n // sampler.num_samples):
        for organ, voxel in sampler.picks(label):
            assert organ == 0 or label[voxel] == organ
            out.append(organ)
    return np.asarray(out)


def test_class_sampling_picks_small_organs_as_often_as_large(prepared: dict) -> None:
    label = np.asarray(prepared["label"])[0]
    organs = [int(v) for v in np.unique(label) if v > 0]
    assert len(organs) == 7  # pt_4 is completely contoured
    volumes = {o: int((label == o).sum()) for o in organs}
    assert volumes[MANDIBLE] > 5 * volumes[ESOPHAGUS]  # why voxel sampling starves the esophagus
    # what voxel sampling (RandCropByPosNegLabeld) gives each organ: its share of the voxels
    by_voxel = {o: 0.67 * v / sum(volumes.values()) for o, v in volumes.items()}

    sampler = patch_sampler(("image", "label"), SPEC, OptimConfig(sampling="class"), 0.67)
    assert isinstance(sampler, ClassBalancedCropd)
    picked = _picked_organs(sampler, label, N)
    assert 0.60 < np.mean(picked > 0) < 0.74  # pos_fraction of the patches on an organ
    share = {o: float(np.mean(picked == o)) for o in organs}
    for o in organs:  # each organ ~0.67/7 = 0.096 (binomial SD at N=1000: 0.009)
        assert abs(share[o] - 0.67 / 7) < 0.03, (OPENKBP_OARS[o - 1], share[o])
    assert by_voxel[ESOPHAGUS] < 0.03 and share[ESOPHAGUS] > 3 * by_voxel[ESOPHAGUS]
    assert share[MANDIBLE] < 0.6 * by_voxel[MANDIBLE]


def test_voxel_sampling_is_monai_pos_neg_crop() -> None:
    from monai.transforms import RandCropByPosNegLabeld

    sampler = patch_sampler(("image", "label"), SPEC, OptimConfig(pos_fraction=0.67), 0.67)
    assert isinstance(sampler, RandCropByPosNegLabeld)


def test_class_sampling_never_picks_an_uncontoured_organ(prepared: dict) -> None:
    label = np.asarray(prepared["label"])[0].copy()
    label[label == ESOPHAGUS] = 0  # a partial patient: esophagus not contoured
    sampler = ClassBalancedCropd(("image", "label"), "label", SPEC.roi_size, 2, pos_fraction=1.0)
    picked = _picked_organs(sampler, label, 300)
    # pos_fraction 1: every patch on one of the six contoured organs, never the esophagus
    assert set(picked.tolist()) == set(range(1, 8)) - {ESOPHAGUS}


def test_class_sampling_without_organs_samples_anywhere() -> None:
    sampler = ClassBalancedCropd(("label",), "label", (4, 4, 4), 2, pos_fraction=1.0)
    picked = _picked_organs(sampler, np.zeros((8, 8, 8), np.uint8), 20)
    assert picked.tolist() == [0] * 20


def test_class_sampling_crops_the_same_box_from_image_and_label(prepared: dict) -> None:
    sampler = ClassBalancedCropd(("image", "label"), "label", SPEC.roi_size, 4, pos_fraction=0.5)
    image, label = np.asarray(prepared["image"]), np.asarray(prepared["label"])
    sampler.set_random_state(seed=3)
    centres = sampler.centres(label[0])
    sampler.set_random_state(seed=3)
    samples = sampler(prepared)
    assert len(samples) == 4
    sampler.set_random_state(seed=3)
    picks = sampler.picks(label[0])
    for (organ, voxel), centre, sample in zip(picks, centres, samples, strict=True):
        box = tuple(
            slice(c - s // 2, c - s // 2 + s) for c, s in zip(centre, SPEC.roi_size, strict=True)
        )
        assert all(b.start >= 0 and b.stop <= n for b, n in zip(box, label.shape[1:], strict=True))
        np.testing.assert_array_equal(np.asarray(sample["image"]), image[(slice(None), *box)])
        np.testing.assert_array_equal(np.asarray(sample["label"]), label[(slice(None), *box)])
        assert sample["case"] == prepared["case"]  # other keys are carried along
        inside = tuple(v - b.start for v, b in zip(voxel, box, strict=True))
        assert organ == 0 or np.asarray(sample["label"])[(0, *inside)] == organ


def test_class_sampling_refuses_a_map_smaller_than_the_patch(prepared: dict) -> None:
    small = {
        "image": np.zeros((1, 10, 64, 64), np.float32),
        "label": np.zeros((1, 10, 64, 64), np.uint8),
    }
    sampler = ClassBalancedCropd(("image", "label"), "label", SPEC.roi_size, 2, pos_fraction=0.5)
    with pytest.raises(ValueError, match="smaller than the patch"):
        sampler(small)


def test_sampling_option_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"optim\.sampling must be one of voxel, class"):
        OptimConfig(sampling="organ")


def _augmented(prepared: dict, augmentation: str, n: int) -> tuple[list[dict], dict]:
    """``n`` augmented copies of one fixed 48×64×64 patch around the mandible (and the patch)."""
    from monai.transforms import Compose

    from medseg.training.data import random_transforms

    label = np.asarray(prepared["label"])
    centre = np.argwhere(label[0] == MANDIBLE).mean(axis=0).astype(int)
    centre = [
        min(max(int(c), s // 2), n_ - s + s // 2)
        for c, s, n_ in zip(centre, SPEC.roi_size, label.shape[1:], strict=True)
    ]
    box = (
        slice(None),
        *tuple(
            slice(c - s // 2, c - s // 2 + s) for c, s in zip(centre, SPEC.roi_size, strict=True)
        ),
    )
    patch = {
        "image": np.asarray(prepared["image"])[box].astype(np.float32),
        "label": label[box].copy(),
    }
    optim = OptimConfig(augmentation=augmentation)
    augment = Compose(random_transforms(SPEC, optim)[2:])  # after padding and sampling
    augment.set_random_state(seed=1)
    return [augment(dict(patch)) for _ in range(n)], patch


@pytest.mark.parametrize(
    ("augmentation", "spatial", "any_change"),
    # probability that a copy is moved (rotated or scaled) / changed at all
    [("light", (0.12, 0.5), (0.75, 1.0)), ("strong", (0.2, 0.55), (0.65, 1.0))],
)
def test_augmentation_keeps_labels_on_their_anatomy(
    prepared: dict, augmentation: str, spatial: tuple[float, float], any_change: tuple[float, float]
) -> None:
    copies, patch = _augmented(prepared, augmentation, 60)
    moved = changed = 0
    for c in copies:
        image, label = np.asarray(c["image"]), np.asarray(c["label"])
        assert image.shape == label.shape == (1, *SPEC.roi_size)
        assert np.isfinite(image).all()
        assert set(np.unique(label).tolist()) <= set(range(8))  # nearest: no invented labels
        moved += not np.array_equal(label, patch["label"])
        changed += not np.array_equal(image, patch["image"])
        # the label moves with the image: the mandible (bone) stays brighter than the brainstem
        if (label == MANDIBLE).sum() > 50 and (label == 1).sum() > 50:
            assert image[label == MANDIBLE].mean() > image[label == 1].mean() + 0.1
    assert spatial[0] < moved / 60 < spatial[1]
    assert any_change[0] < changed / 60 <= any_change[1]


def test_augmentation_option_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"optim\.augmentation must be one of light, strong"):
        OptimConfig(augmentation="nnunet")
