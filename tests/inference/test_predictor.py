"""Predictor on real CT: output grid, orientation invariance, empty input, size errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from inference_models import ThresholdModel

from medseg.errors import InputError
from medseg.inference import InferenceConfig, PostprocessConfig, Predictor
from medseg.models import build_model
from medseg.preprocess import PreprocessingSpec, crop, reorient
from medseg.volume import LabelMap, Volume

NO_POST = InferenceConfig(postprocess=PostprocessConfig(largest_component=False, fill_holes=False))
SPEC = PreprocessingSpec((3.0, 4.0, 4.0), "SPL", (-1000.0, 1000.0), (32, 32, 32))


def _threshold_predictor(config: InferenceConfig = NO_POST) -> Predictor:
    return Predictor(
        ThresholdModel(), SPEC, LabelMap.from_names(["Soft", "Bone"]), device="cpu", config=config
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1))


def _feet_first(v: Volume) -> Volume:
    """Same voxels stored with the slice axis reversed (slice 0 = last slice)."""
    aff = v.affine.copy()
    aff[:3, 3] = v.affine[:3, 3] + (v.shape[0] - 1) * v.affine[:3, 0]
    aff[:3, 0] = -v.affine[:3, 0]
    return Volume(np.ascontiguousarray(v.array[::-1]), aff, v.modality)


def _negated_columns(v: Volume) -> Volume:
    """Same voxels with the column direction cosine negated (columns stored reversed)."""
    aff = v.affine.copy()
    aff[:3, 3] = v.affine[:3, 3] + (v.shape[2] - 1) * v.affine[:3, 2]
    aff[:3, 2] = -v.affine[:3, 2]
    return Volume(np.ascontiguousarray(v.array[:, :, ::-1]), aff, v.modality)


def _anisotropic(v: Volume) -> Volume:
    """The same array on an anisotropic grid (2.5 × 0.9 × 1.3 mm)."""
    aff = v.affine.copy()
    aff[:3, :3] = v.direction * np.array([2.5, 0.9, 1.3])[None, :]
    return Volume(v.array, aff, v.modality)


@pytest.mark.parametrize(
    "make",
    [lambda v: v, _feet_first, _negated_columns, _anisotropic],
    ids=["axial", "feet_first", "negated_cosine", "anisotropic"],
)
def test_output_grid_equals_input_grid(kbp_ct: Volume, make) -> None:  # type: ignore[no-untyped-def]
    volume = make(kbp_ct)
    out = _threshold_predictor().predict(volume)
    assert out.volume.shape == volume.shape
    np.testing.assert_array_equal(out.volume.affine, volume.affine)
    # Independent oracle: a tissue threshold (> -200 HU) on the input grid itself (not 1.0:
    # the model grid is 3 × 4 × 4 mm, so thin structures are lost going down and back).
    tissue = out.volume.array > 0
    assert _dice(tissue, volume.array > -200) > 0.9
    assert (out.volume.array == out.label_map.id_of("Bone")).sum() > 1000


def test_same_ct_two_orientations_same_organs(ts_ct: Volume) -> None:
    ct = crop(ts_ct, (slice(30, 90), slice(0, 101), slice(0, 122)))  # 60 slices: faster
    lps = reorient(ct, "LPS")  # the NIfTI is SAR; LPS is a permuted + flipped storage
    assert lps.orientation != ct.orientation
    torch.manual_seed(0)
    conv = build_model("unet3d", in_channels=1, out_channels=3, channels=(4, 8))
    names = LabelMap.from_names(["Soft", "Bone"])
    conv_spec = dataclasses.replace(SPEC, roi_size=(48, 48, 48))  # fewer windows: faster test
    for model, spec, config in [
        (ThresholdModel(), SPEC, NO_POST),
        (conv, conv_spec, InferenceConfig()),
    ]:
        p = Predictor(model, spec, names, device="cpu", config=config, num_threads=1)
        a = p.predict(ct)
        b = reorient(p.predict(lps).volume, ct.orientation)
        assert b.same_grid(ct)
        for label in (1, 2):
            ma, mb = a.volume.array == label, b.array == label
            assert ma.sum() > 500
            assert _dice(ma, mb) >= 0.99


def test_resampled_prediction_agrees_with_threshold_oracle(ts_ct: Volume) -> None:
    spec = dataclasses.replace(SPEC, spacing_mm=(2.0, 2.5, 2.5))
    p = Predictor(
        ThresholdModel(), spec, LabelMap.from_names(["Soft", "Bone"]), device="cpu", config=NO_POST
    )
    out, probs = p.predict(ts_ct, return_probabilities=True)
    assert out.volume.same_grid(ts_ct)
    assert probs.shape == (3, *ts_ct.shape)
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=1e-2)
    # Thin bone loses contrast through linear up-sampling + nearest map-back (0.79 measured);
    # without resampling the same check gives exactly 1.0 (test_same_spacing_is_exact).
    assert _dice(out.volume.array == 2, ts_ct.array > 300) > 0.7
    assert _dice(out.volume.array > 0, ts_ct.array > -200) > 0.95
    assert p.last_windows["run"] > 0
    assert set(p.last_timings) >= {"preprocess", "network", "postprocess", "resample_back"}


def test_same_spacing_is_exact(ts_ct: Volume) -> None:
    spec = dataclasses.replace(SPEC, spacing_mm=(3.0, 3.0, 3.0))  # only a reorientation
    p = Predictor(
        ThresholdModel(), spec, LabelMap.from_names(["Soft", "Bone"]), device="cpu", config=NO_POST
    )
    out = p.predict(ts_ct).volume.array
    np.testing.assert_array_equal(out == 2, ts_ct.array > 300)
    np.testing.assert_array_equal(out > 0, ts_ct.array > -200)


def test_air_windows_are_skipped(kbp_ct: Volume) -> None:
    p = _threshold_predictor()
    small = p.predict(kbp_ct)
    windows = dict(p.last_windows)
    assert windows["skipped"] > 0  # corners of the body box hold only air
    # the same head in one corner of a 4x larger air volume: the windows in the added air are
    # skipped and the (per-voxel) labels are identical
    big = np.full((128, 256, 256), -1024.0, np.float32)
    big[:, :128, :128] = kbp_ct.array
    out = p.predict(Volume(big, kbp_ct.affine))
    big_windows = p.last_windows
    assert big_windows["skipped"] > 3 * big_windows["run"]
    assert big_windows["run"] <= 2 * windows["run"]
    np.testing.assert_array_equal(out.volume.array[:, :128, :128], small.volume.array)
    assert out.volume.array[:, 128:].max() == 0 and out.volume.array[:, :, 128:].max() == 0


def test_all_air_gives_empty_map_and_warning(kbp_ct: Volume) -> None:
    air = Volume(np.full((60, 70, 80), -1024, np.int16), kbp_ct.affine)
    out = _threshold_predictor().predict(air)
    assert out.volume.shape == air.shape
    assert out.volume.array.max() == 0
    assert any("no body found" in w for w in out.warnings)


def test_single_slice_or_tiny_volume_is_a_clear_error(kbp_ct: Volume) -> None:
    one_slice = Volume(kbp_ct.array[60:61], kbp_ct.affine)
    with pytest.raises(InputError, match=r"too small.*single slice or 2D image"):
        _threshold_predictor().predict(one_slice)
    with pytest.raises(InputError, match="3D"):
        Volume(kbp_ct.array[60], kbp_ct.affine)  # 2D arrays are refused before inference


def test_volume_between_half_and_full_window_is_padded(kbp_ct: Volume) -> None:
    # 20 slices at 2.5 mm → 17 model slices at 3 mm: fewer than the 32-slice window, ≥ 16.
    part = Volume(np.ascontiguousarray(kbp_ct.array[50:70]), kbp_ct.affine)
    out = _threshold_predictor().predict(part)
    assert out.volume.shape == part.shape
    assert _dice(out.volume.array > 0, part.array > -200) > 0.9


def test_precision_config_is_checked_and_resolved() -> None:
    from medseg.errors import ConfigError
    from medseg.inference import resolve_precision

    with pytest.raises(ConfigError, match="precision"):
        InferenceConfig(precision="fp8")
    with pytest.raises(ConfigError, match="accumulator must be one of float16, float32"):
        InferenceConfig(accumulator="float64")
    assert InferenceConfig().accumulator == "float16"
    assert InferenceConfig.from_dict({"precision": "float32"}).precision == "float32"
    cpu = torch.device("cpu")
    assert resolve_precision("float32", cpu) == "float32"
    assert resolve_precision("auto", torch.device("cuda")) == "float16"
    has_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert resolve_precision("auto", cpu) == ("bfloat16" if has_bf16 else "float32")
    p = Predictor(ThresholdModel(), SPEC, LabelMap.from_names(["Soft", "Bone"]), device="cpu")
    assert p.precision == resolve_precision("auto", cpu)


def test_shipped_model_reduced_precision_agrees_with_float32(kbp_ct: Volume) -> None:
    """The trained hn_oar model on a real CT: float16 storage and bfloat16 autocast vs float32.

    Reference: float32 network and float32 accumulator (MONAI's sums). Against it, per organ:
    a float32 network with the default float16 accumulator, and bfloat16 autocast.
    """
    runs = {"exact": ("float32", "float32"), "f16acc": ("float32", "float16")}
    runs["bf16"] = ("bfloat16", "float16")
    organs, acc_bytes = {}, {}
    for key, (precision, accumulator) in runs.items():
        config = InferenceConfig(precision=precision, accumulator=accumulator)
        p = Predictor.from_checkpoint("hn_oar", device="cpu", config=config)
        assert p.precision == precision
        organs[key] = p.predict(kbp_ct).volume.array
        acc_bytes[key] = p.last_accumulator_bytes
    # float16 cells are exactly half the float32 ones (same cells open at the peak)
    assert acc_bytes["exact"] > 0 and acc_bytes["f16acc"] * 2 == acc_bytes["exact"]
    ref = organs["exact"]
    ids = [int(v) for v in np.unique(ref) if v != 0]
    assert len(ids) >= 5  # the model finds most of its 7 organs on this CT
    for key, min_dice, min_mean in (("f16acc", 0.995, 0.999), ("bf16", 0.98, 0.995)):
        dices = [_dice(ref == i, organs[key] == i) for i in ids]
        assert min(dices) >= min_dice, (key, dices)
        assert float(np.mean(dices)) >= min_mean, (key, dices)
