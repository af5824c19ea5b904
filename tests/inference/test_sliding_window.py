"""Sliding-window engine against MONAI's sliding_window_inference (the independent oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.inferers.utils import _get_scan_interval

from medseg.errors import InputError, ModelError
from medseg.inference.sliding_window import (
    WindowConfig,
    gaussian_importance_map,
    sliding_window_labels,
    window_starts,
)
from medseg.models import build_model
from medseg.preprocess import normalise_hu
from medseg.volume import Volume


@pytest.mark.parametrize(
    ("size", "roi", "overlap"),
    [(300, 96, 0.5), (512, 96, 0.5), (97, 96, 0.25), (96, 96, 0.5), (150, 64, 0.8), (64, 48, 0.0)],
)
def test_window_starts_match_monai(size: int, roi: int, overlap: float) -> None:
    interval = _get_scan_interval((size,), (roi,), 1, (overlap,))
    monai_starts = [s[0].start for s in dense_patch_slices((size,), (roi,), interval)]
    assert window_starts(size, roi, overlap) == monai_starts


def test_gaussian_matches_monai() -> None:
    roi = (32, 48, 40)
    ref = compute_importance_map(roi, mode="gaussian", sigma_scale=0.125).numpy()
    np.testing.assert_allclose(gaussian_importance_map(roi), ref, rtol=1e-5, atol=1e-7)


def _real_ct_patch(ct: Volume) -> np.ndarray:
    return normalise_hu(ct.array[30:70, 20:68, 30:86], (-500.0, 500.0))


def test_labels_match_monai_on_real_ct(ts_ct: Volume) -> None:
    torch.manual_seed(0)
    net = build_model("unet3d", in_channels=1, out_channels=5, channels=(4, 8)).eval()
    image = _real_ct_patch(ts_ct)
    roi = (24, 32, 32)
    ours = sliding_window_labels(image, net, WindowConfig(roi, overlap=0.5, batch_size=3))
    with torch.no_grad():
        ref = sliding_window_inference(
            torch.from_numpy(image)[None, None], roi, 1, net, overlap=0.5, mode="gaussian"
        )
    ref_labels = ref[0].argmax(0).numpy()
    assert ours.labels.shape == image.shape
    assert ours.windows_skipped == 0
    assert np.mean(ours.labels == ref_labels) > 0.999
    prob = sliding_window_labels(
        image, net, WindowConfig(roi, overlap=0.5), return_probabilities=True
    )
    assert prob.probabilities is not None
    np.testing.assert_allclose(
        prob.probabilities.astype(np.float32), torch.softmax(ref[0], 0).numpy(), atol=2e-3
    )
    np.testing.assert_allclose(prob.probabilities.astype(np.float32).sum(0), 1.0, atol=5e-3)


def test_skipped_windows_are_background_and_counted() -> None:
    image = np.zeros((40, 40, 40), np.float32)
    image[:8, :8, :8] = 1.0
    foreground = image > 0.5

    def bright(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x * 0 - 1, x * 0 + 1], dim=1)  # class 1 everywhere, also on air

    out = sliding_window_labels(
        image, bright, WindowConfig((16, 16, 16), overlap=0.5), foreground=foreground
    )
    starts = len(window_starts(40, 16, 0.5))
    assert out.windows_run + out.windows_skipped == starts**3
    assert out.windows_run == 1  # only the corner window touches the bright cube
    assert out.labels[:8, :8, :8].min() == 1
    assert out.labels[:16, :16, :16].sum() == 16**3  # the run window predicts 1 on its air
    assert out.labels[20:, 20:, 20:].max() == 0  # never run → background


def test_flip_tta_keeps_equivariant_model_exact() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((30, 34, 38)).astype(np.float32)

    def thresh(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1)

    plain = sliding_window_labels(image, thresh, WindowConfig((16, 16, 16)))
    tta = sliding_window_labels(
        image, thresh, WindowConfig((16, 16, 16), flips=[(), (0,), (1, 2), (0, 1, 2)])
    )
    np.testing.assert_array_equal(plain.labels, (image > 0.5).astype(np.uint8))
    np.testing.assert_array_equal(tta.labels, plain.labels)


def test_small_axis_is_padded_and_cropped_back() -> None:
    image = np.linspace(0, 1, 10 * 20 * 30, dtype=np.float32).reshape(10, 20, 30)

    def thresh(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1)

    out = sliding_window_labels(image, thresh, WindowConfig((16, 16, 16)))
    assert out.labels.shape == (10, 20, 30)
    np.testing.assert_array_equal(out.labels, (image > 0.5).astype(np.uint8))


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(InputError, match="3D"):
        sliding_window_labels(np.zeros((10, 10), np.float32), lambda x: x, WindowConfig((8, 8, 8)))
    with pytest.raises(InputError, match="overlap"):
        sliding_window_labels(
            np.zeros((10, 10, 10), np.float32), lambda x: x, WindowConfig((8, 8, 8), overlap=1)
        )
    with pytest.raises(ModelError, match="logits"):
        sliding_window_labels(
            np.zeros((8, 8, 8), np.float32), lambda x: x[:, :, :4], WindowConfig((8, 8, 8))
        )
