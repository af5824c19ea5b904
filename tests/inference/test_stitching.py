"""Cell-wise stitching and reduced precision against a naive full-buffer blend (the oracle)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medseg.errors import InputError
from medseg.inference.sliding_window import (
    WindowConfig,
    gaussian_importance_map,
    sliding_window_labels,
    window_starts,
)

ROI = (12, 16, 20)


def _random_net(channels: int = 5) -> torch.nn.Module:
    """Random 3×3×3 conv net with zero padding: windows disagree near their borders."""
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 6, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv3d(6, channels, 3, padding=1),
    ).eval()


def _naive_blend(
    image: np.ndarray,
    net: torch.nn.Module,
    roi: tuple[int, int, int],
    overlap: float,
    foreground: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Full-size float64 sums over every window (MONAI's method): labels and softmax."""
    weight = gaussian_importance_map(roi).astype(np.float64)
    starts = [window_starts(n, r, overlap) for n, r in zip(image.shape, roi, strict=True)]
    acc: np.ndarray | None = None
    wsum = np.zeros(image.shape)
    for z, y, x in itertools.product(*starts):
        box = (slice(z, z + roi[0]), slice(y, y + roi[1]), slice(x, x + roi[2]))
        if foreground is not None and not foreground[box].any():
            continue
        with torch.no_grad():
            logits = net(torch.from_numpy(np.ascontiguousarray(image[box]))[None, None])[0]
        if acc is None:
            acc = np.zeros((logits.shape[0], *image.shape))
        acc[(slice(None), *box)] += logits.double().numpy() * weight
        wsum[box] += weight
    assert acc is not None
    covered = wsum > 0
    labels = np.where(covered, acc.argmax(0), 0)
    mean = acc / np.maximum(wsum, 1e-12)
    probs = np.exp(mean - mean.max(0))
    probs /= probs.sum(0)
    probs[:, ~covered] = 0.0
    probs[0, ~covered] = 1.0
    return labels, probs


@pytest.fixture(scope="module")
def random_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    image = rng.normal(size=(31, 45, 58)).astype(np.float32)
    foreground = np.zeros(image.shape, bool)
    foreground[2:14, 3:20, 4:24] = True  # windows far from this box are skipped
    return image, foreground


@pytest.mark.parametrize("overlap", [0.5, 0.25])
def test_float32_stitching_equals_full_buffer_blend(
    random_case: tuple[np.ndarray, np.ndarray], overlap: float
) -> None:
    image, foreground = random_case
    net = _random_net()
    ref_labels, ref_probs = _naive_blend(image, net, ROI, overlap, foreground)
    out = sliding_window_labels(
        image,
        net,
        WindowConfig(ROI, overlap=overlap),
        foreground=foreground,
        return_probabilities=True,
    )
    assert out.windows_skipped > 0 and out.windows_run > 0
    np.testing.assert_array_equal(out.labels, ref_labels)
    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities.astype(np.float64), ref_probs, atol=1e-3)
    # the accumulator never held the full (channels × volume) buffer
    full_bytes = 5 * image.size * 4
    assert 0 < out.accumulator_peak_bytes < full_bytes / 2


def test_float16_accumulator_agrees_with_full_buffer_blend(
    random_case: tuple[np.ndarray, np.ndarray],
) -> None:
    image, foreground = random_case
    net = _random_net()
    ref_labels, ref_probs = _naive_blend(image, net, ROI, 0.5, foreground)
    f32 = sliding_window_labels(image, net, WindowConfig(ROI), foreground=foreground)
    out = sliding_window_labels(
        image,
        net,
        WindowConfig(ROI, accumulator="float16"),
        foreground=foreground,
        return_probabilities=True,
    )
    # float16 sums (11-bit mantissa) flip only near-ties: 1 of 80 910 voxels when written
    assert np.mean(out.labels == ref_labels) > 0.9999
    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities.astype(np.float64), ref_probs, atol=3e-3)
    assert out.accumulator_peak_bytes * 2 == f32.accumulator_peak_bytes


def test_float16_accumulator_survives_huge_logits() -> None:
    """Logits of ±1e4 (a hard rule, e.g. "air is background") overflow naive float16 sums."""
    rng = np.random.default_rng(0)
    image = rng.random((30, 30, 30)).astype(np.float32)

    def rule(x: torch.Tensor) -> torch.Tensor:
        bright = (x > 0.5).float()
        return torch.cat([2e4 * (1 - bright), 3e4 * bright, x * 0 - 5e4], dim=1)

    f16 = sliding_window_labels(
        image, rule, WindowConfig((16, 16, 16), accumulator="float16"), return_probabilities=True
    )
    np.testing.assert_array_equal(f16.labels, (image > 0.5).astype(np.uint8))
    assert f16.probabilities is not None
    assert np.isfinite(f16.probabilities).all()
    np.testing.assert_allclose(f16.probabilities.astype(np.float32).sum(0), 1.0, atol=1e-3)


def test_window_order_puts_the_longest_axis_outermost() -> None:
    image = np.random.default_rng(1).random((20, 24, 120)).astype(np.float32)
    net = _random_net(3)
    out = sliding_window_labels(image, net, WindowConfig((8, 8, 8)))
    assert out.window_order[0] == 2
    # open cells stay within about one window-thick slab across the long axis
    assert out.accumulator_peak_bytes <= 3 * 4 * 20 * 24 * 12
    ref_labels, _ = _naive_blend(image, net, (8, 8, 8), 0.5)
    np.testing.assert_array_equal(out.labels, ref_labels)


def test_bfloat16_network_close_to_float32(random_case: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = random_case
    net = _random_net()
    f32 = sliding_window_labels(image, net, WindowConfig(ROI), return_probabilities=True)
    bf16 = sliding_window_labels(
        image,
        net,
        WindowConfig(ROI, precision="bfloat16", accumulator="float16"),
        return_probabilities=True,
    )
    assert f32.probabilities is not None and bf16.probabilities is not None
    diff = np.abs(bf16.probabilities.astype(np.float32) - f32.probabilities.astype(np.float32))
    assert diff.max() < 0.05  # bfloat16 keeps 8 mantissa bits
    assert np.mean(bf16.labels == f32.labels) > 0.98


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(InputError, match="precision"):
        sliding_window_labels(
            np.zeros((8, 8, 8), np.float32), lambda x: x, WindowConfig((8, 8, 8), precision="int8")
        )
    with pytest.raises(InputError, match="accumulator"):
        sliding_window_labels(
            np.zeros((8, 8, 8), np.float32),
            lambda x: x,
            WindowConfig((8, 8, 8), accumulator="bfloat16"),
        )
