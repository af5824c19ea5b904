"""Surface distances on phantoms with known answers and against a brute-force cdist oracle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist
from surface_distance import lookup_tables

from medseg.errors import InputError
from medseg.metrics import extract_surface, surface_metrics, surfel_area_table

SPACING = (2.5, 0.9, 1.3)  # anisotropic (slice, row, column) mm


def _cube(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


@pytest.mark.parametrize("definition", ["surfel", "voxel"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shifted_cube_has_hausdorff_equal_to_the_shift(definition, axis):
    a = _cube((20, 20, 20), (4, 4, 4), (12, 12, 12))
    b = np.roll(a, 3, axis=axis)
    r = surface_metrics(a, b, SPACING, definition=definition, tolerance_mm=0.0)
    assert r["hd"] == pytest.approx(3 * SPACING[axis], abs=1e-12)
    assert r["hd_percentile"] <= r["hd"] + 1e-12
    big = surface_metrics(a, b, SPACING, definition=definition, tolerance_mm=3 * SPACING[axis])
    assert big["nsd"] == 1.0


@pytest.mark.parametrize("definition", ["surfel", "voxel"])
def test_concentric_cubes_hausdorff_is_the_corner_offset(definition):
    inner = _cube((24, 24, 24), (8, 8, 8), (14, 14, 14))
    outer = _cube((24, 24, 24), (6, 6, 6), (16, 16, 16))
    r = surface_metrics(inner, outer, SPACING, definition=definition)
    expected = float(np.sqrt(sum((2 * s) ** 2 for s in SPACING)))
    assert r["hd"] == pytest.approx(expected, abs=1e-12)


def test_identical_masks_have_zero_distances_and_full_nsd():
    sphere = (
        np.linalg.norm(np.indices((15, 17, 19)) - np.array([7, 8, 9])[:, None, None, None], axis=0)
        < 6
    )
    for definition in ("surfel", "voxel"):
        r = surface_metrics(sphere, sphere, SPACING, definition=definition, tolerance_mm=0.0)
        assert r == {"hd": 0.0, "hd_percentile": 0.0, "assd": 0.0, "masd": 0.0, "nsd": 1.0}


# --- brute force oracle ------------------------------------------------------------------------
_KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])


def _brute_surfel(mask, spacing):
    """Corner points and areas computed independently: ndimage.correlate + DeepMind's table."""
    padded = np.pad(mask.astype(np.uint8), 1)
    codes = ndimage.correlate(padded, _KERNEL, mode="constant", cval=0)[1:, 1:, 1:]
    border = (codes != 0) & (codes != 255)
    table = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    return np.argwhere(border) * np.asarray(spacing), table[codes[border]]


def _brute_voxel(mask, spacing):
    padded = np.pad(mask, 1)
    edge = padded & ~ndimage.binary_erosion(padded, border_value=0)
    return np.argwhere(edge) * np.asarray(spacing), np.ones(int(edge.sum()))


def _weighted_pct(d, w, p):
    order = np.lexsort((w, d))
    d, w = d[order], w[order]
    idx = np.searchsorted(np.cumsum(w) / np.sum(w), p / 100.0)
    return d[min(idx, len(d) - 1)]


def _brute_metrics(pred, ref, spacing, definition, tol, p, hd_mode):
    extract = _brute_surfel if definition == "surfel" else _brute_voxel
    (pa, wa), (pb, wb) = extract(pred, spacing), extract(ref, spacing)
    dist = cdist(pa, pb)
    da, db = dist.min(axis=1), dist.min(axis=0)
    if definition == "surfel":
        pct = lambda d, w: _weighted_pct(d, w, p)  # noqa: E731
    else:
        pct = lambda d, w: np.percentile(d, p)  # noqa: E731
    if hd_mode == "pooled":
        hd_p = pct(np.concatenate([da, db]), np.concatenate([wa, wb]))
    else:
        hd_p = max(pct(da, wa), pct(db, wb))
    return {
        "hd": max(da.max(), db.max()),
        "hd_percentile": hd_p,
        "assd": (np.sum(da * wa) + np.sum(db * wb)) / (wa.sum() + wb.sum()),
        "masd": 0.5 * (np.sum(da * wa) / wa.sum() + np.sum(db * wb) / wb.sum()),
        "nsd": (wa[da <= tol].sum() + wb[db <= tol].sum()) / (wa.sum() + wb.sum()),
    }


def _random_shape(rng, shape):
    noise = ndimage.gaussian_filter(rng.random(shape), 1.2)
    return noise > np.quantile(noise, 0.7)


@pytest.mark.parametrize("definition", ["surfel", "voxel"])
@pytest.mark.parametrize("hd_mode", ["max_directed", "pooled"])
def test_random_shapes_match_bruteforce_cdist(definition, hd_mode):
    rng = np.random.default_rng(7)
    for trial in range(12):
        shape = tuple(int(v) for v in rng.integers(6, 16, size=3))
        spacing = tuple(float(v) for v in rng.uniform(0.4, 3.0, size=3))
        pred, ref = _random_shape(rng, shape), _random_shape(rng, shape)
        p = float(rng.choice([50.0, 90.0, 95.0, 100.0]))
        ours = surface_metrics(
            pred,
            ref,
            spacing,
            definition=definition,
            tolerance_mm=1.5,
            percentile=p,
            hd_mode=hd_mode,
        )
        theirs = _brute_metrics(pred, ref, spacing, definition, 1.5, p, hd_mode)
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, abs=1e-9), (trial, key)


def test_mask_touching_the_image_border_is_closed_by_background():
    """Outside the array counts as background for both definitions (MONAI/DeepMind)."""
    m = np.ones((3, 4, 5), bool)
    assert extract_surface(m, SPACING, "voxel").size == m.size - 1 * 2 * 3
    s = extract_surface(m, (1.0, 1.0, 1.0), "surfel")
    assert s.size == 4 * 5 * 6 - 2 * 3 * 4  # every corner of the closed box but the interior ones


def test_surfel_areas_equal_deepmind_table_for_anisotropic_spacing():
    ours = surfel_area_table(SPACING)
    theirs = lookup_tables.create_table_neighbour_code_to_surface_area(SPACING)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_single_voxel_organs():
    a = _cube((5, 5, 5), (2, 2, 2), (3, 3, 3))
    for definition in ("surfel", "voxel"):
        same = surface_metrics(a, a, SPACING, definition=definition)
        assert same["hd"] == 0.0 and same["nsd"] == 1.0
        shifted = surface_metrics(
            a, np.roll(a, 1, axis=0), SPACING, definition=definition, tolerance_mm=1.0
        )
        assert shifted["hd"] == pytest.approx(SPACING[0])
        if definition == "voxel":  # one voxel each, 2.5 mm apart
            assert shifted["nsd"] == 0.0 and shifted["assd"] == pytest.approx(2.5)
        else:  # the shared face's corners coincide: half of each surface is at distance 0
            assert 0.0 < shifted["nsd"] < 1.0


def test_invalid_inputs_raise_input_error():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(InputError, match="shapes differ"):
        surface_metrics(a, np.zeros((4, 4, 5), bool), SPACING)
    with pytest.raises(InputError, match="unknown surface definition"):
        surface_metrics(
            _cube((4, 4, 4), (1, 1, 1), (2, 2, 2)), a | True, SPACING, definition="mesh"
        )  # type: ignore[arg-type]
    with pytest.raises(InputError, match="3D"):
        extract_surface(np.zeros((4, 4), bool), SPACING)
