"""Bad-input corpus for the image readers (issue 20): no silently wrong volume, no traceback.

Every case is built in ``tmp_path`` from real shared data (the TotalSegmentator CT, dcmqi's
3-slice CT series and NRRD labels, OpenKBP patients) and damaged in one way: corrupt or
truncated compressed data, geometry that a reader used to invent or ignore (zero or absurd voxel
size, shear), a matrix too large for its data, unreadable files and folders. Each case asserts
the exception class and the message through the library (``load_volume``/``load_labels``) and
then through ``medseg info`` in-process: exit status 2, the message on stderr, no traceback.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from permissions import permissions_enforced

from medseg.cli import main
from medseg.errors import GeometryError, InputError, MedsegError
from medseg.io import load_labels, load_volume

CORRUPT = "corrupt or truncated compressed data"
DENIED = "permission denied"

Builder = Callable[[Path, Path], Path]  # (tmp_path, shared_data) -> input path


# --- real inputs copied into tmp_path --------------------------------------------------------


def _ct_nifti(shared: Path) -> Path:
    return shared / "totalsegmentator_example_ct" / "example_ct_sm.nii.gz"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


def _damage(path: Path, how: str) -> Path:
    if how == "none":
        return path
    data = bytearray(path.read_bytes())
    if how == "crc":
        data[-8] ^= 0xFF  # gzip trailer: CRC-32
    elif how == "isize":
        data[-4] ^= 0x01  # gzip trailer: uncompressed length
    elif how == "bitflip":
        data[len(data) // 2] ^= 0x10
    elif how == "half":
        del data[len(data) // 2 :]
    elif how == "tail":
        del data[-5:]
    elif how == "garbage":
        data += b"this is not gzip data"
    else:  # pragma: no cover
        raise ValueError(how)
    path.write_bytes(bytes(data))
    return path


def _nii_gz(how: str, name: str = "ct.nii.gz") -> Builder:
    def build(tmp: Path, shared: Path) -> Path:
        return _damage(_copy(_ct_nifti(shared), tmp / name), how)

    return build


def _ct_image(shared: Path) -> nib.Nifti1Image:
    img = nib.load(str(_ct_nifti(shared)))
    return nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)


def _nifti_header(edit: Callable[[nib.Nifti1Image], None], name: str = "ct.nii.gz") -> Builder:
    """The real CT re-saved with its header edited (geometry written as given, no fixes)."""

    def build(tmp: Path, shared: Path) -> Path:
        img = _ct_image(shared)
        edit(img)
        nib.save(img, str(tmp / name))
        return tmp / name

    return build


def _pixdim(values: tuple[float, float, float], qform: int = 0) -> Builder:
    """The real CT with pixdim[1:4] and the qform/sform codes written into the raw header bytes
    (nibabel would rewrite pixdim from the affine on save)."""

    def build(tmp: Path, shared: Path) -> Path:
        plain = tmp / "plain.nii"
        nib.save(_ct_image(shared), str(plain))
        data = bytearray(plain.read_bytes())
        plain.unlink()
        struct.pack_into("<3f", data, 80, *values)  # pixdim[1..3]
        struct.pack_into("<hh", data, 252, qform, 0)  # qform_code, sform_code
        out = tmp / "ct.nii.gz"
        out.write_bytes(gzip.compress(bytes(data)))
        return out

    return build


def _sform(matrix: list[list[float]]) -> Builder:
    def edit(img: nib.Nifti1Image) -> None:
        aff = img.affine.copy()
        aff[:3, :3] = matrix
        img.set_sform(aff, code=1)
        img.set_qform(None, code=0)

    return _nifti_header(edit)


def _raw_nifti_dims(dims: tuple[int, int, int], *, gz: bool) -> Builder:
    """The real CT's header with a huge matrix written in and its own (short) data after it."""

    def build(tmp: Path, shared: Path) -> Path:
        plain = tmp / "plain.nii"
        nib.save(_ct_image(shared), str(plain))
        data = bytearray(plain.read_bytes())
        struct.pack_into("<hhhh", data, 40, 3, *dims)  # dim[0..3]
        plain.unlink()
        out = tmp / ("big.nii.gz" if gz else "big.nii")
        out.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
        return out

    return build


def _truncated_plain_nifti(tmp: Path, shared: Path) -> Path:
    out = tmp / "ct.nii"
    nib.save(_ct_image(shared), str(out))
    out.write_bytes(out.read_bytes()[:-1000])
    return out


def _nrrd_label(shared: Path) -> Path:
    return shared / "dcmqi_ct3slice_seg" / "liver_seg.nrrd"  # gzip-encoded


def _nrrd(how: str) -> Builder:
    def build(tmp: Path, shared: Path) -> Path:
        return _damage(_copy(_nrrd_label(shared), tmp / "liver.nrrd"), how)

    return build


def _nrrd_bzip2(tmp: Path, shared: Path) -> Path:
    import bz2

    head, sep, body = _nrrd_label(shared).read_bytes().partition(b"\n\n")
    out = tmp / "liver.nrrd"
    head = head.replace(b"encoding: gzip", b"encoding: bzip2")
    out.write_bytes(head + sep + bz2.compress(gzip.decompress(body)))
    return out


def _nrrd_directions(directions: str) -> Builder:
    def build(tmp: Path, shared: Path) -> Path:
        text = _nrrd_label(shared).read_bytes()
        head, sep, body = text.partition(b"\n\n")
        lines = [
            f"space directions: {directions}".encode()
            if ln.startswith(b"space directions:")
            else ln
            for ln in head.split(b"\n")
        ]
        out = tmp / "liver.nrrd"
        out.write_bytes(b"\n".join(lines) + sep + body)
        return out

    return build


def _mha(tmp: Path, shared: Path, matrix: tuple[float, ...] | None = None) -> Path:
    image = sitk.ReadImage(str(_ct_nifti(shared)))
    if matrix is not None:
        image.SetDirection(matrix)
    out = tmp / "ct.mha"
    sitk.WriteImage(image, str(out), useCompression=True)
    return out


def _mha_damaged(how: str) -> Builder:
    def build(tmp: Path, shared: Path) -> Path:
        out = _mha(tmp, shared)
        data = bytearray(out.read_bytes())
        start = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
        if how == "bitflip":
            data[start + (len(data) - start) // 2] ^= 0x10
        else:
            del data[start + (len(data) - start) // 2 :]
        out.write_bytes(bytes(data))
        return out

    return build


def _mha_sheared(tmp: Path, shared: Path) -> Path:
    out = _mha(tmp, shared)
    text = out.read_bytes()
    head, sep, body = text.partition(b"ElementDataFile = LOCAL\n")
    lines = [
        b"TransformMatrix = 1 0 0 0.3 1 0 0 0 1" if ln.startswith(b"TransformMatrix") else ln
        for ln in head.split(b"\n")
    ]
    out.write_bytes(b"\n".join(lines) + sep + body)
    return out


def _dicom_series(edit: Callable[[int, pydicom.Dataset], None] | None = None) -> Builder:
    """dcmqi's real 3-slice CT series (512², implicit VR LE) with each slice edited."""

    def build(tmp: Path, shared: Path) -> Path:
        out = tmp / "ct"
        out.mkdir()
        for k, src in enumerate(sorted((shared / "dcmqi_ct3slice_seg" / "ct-3slice").glob("*"))):
            ds = pydicom.dcmread(src)
            if edit is not None:
                edit(k, ds)
            ds.save_as(out / src.name)
        return out

    return build


def _huge_matrix(k: int, ds: pydicom.Dataset) -> None:
    ds.Rows, ds.Columns = 65535, 65535


def _rows_zero(k: int, ds: pydicom.Dataset) -> None:
    ds.Rows = 0


def _bits_32(k: int, ds: pydicom.Dataset) -> None:
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31


def _spacing_10m(k: int, ds: pydicom.Dataset) -> None:
    ds.PixelSpacing = [10000.0, 10000.0]


def _spacing_zero(k: int, ds: pydicom.Dataset) -> None:
    ds.PixelSpacing = [0.0, 0.810547]


def _slices_10m_apart(k: int, ds: pydicom.Dataset) -> None:
    x, y, _ = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, 10000.0 * k]


def _damaged_dicom_header(find: bytes, skip: int, value: bytes) -> Builder:
    """One real CT file whose header bytes ``skip`` bytes into element ``find`` are replaced."""

    def build(tmp: Path, shared: Path) -> Path:
        data = bytearray((shared / "dicompyler_breast_rtstruct" / "ct.0.dcm").read_bytes())
        at = data.index(find) + skip
        data[at : at + len(value)] = value
        out = tmp / "ct.0.dcm"
        out.write_bytes(bytes(data))
        return out

    return build


def _truncated_dicom_header(tmp: Path, shared: Path) -> Path:
    data = (shared / "dicompyler_breast_rtstruct" / "ct.0.dcm").read_bytes()
    out = tmp / "ct.0.dcm"
    out.write_bytes(data[:700])
    return out


def _openkbp_partial(shared: Path) -> Path:
    return shared / "openkbp_hn_ct_partial" / "train-pats" / "pt_1"


def _openkbp(file: str, how: str) -> Builder:
    def build(tmp: Path, shared: Path) -> Path:
        pt = tmp / "pt_1"
        shutil.copytree(_openkbp_partial(shared), pt)
        _damage(pt / file, how)
        return pt

    return build


def _openkbp_plain_cut(file: str) -> Builder:
    """A complete-patient folder (plain CSVs) whose ``file`` stops inside a row, as an
    interrupted copy leaves it: the last row ``index,value`` loses its last characters."""

    def build(tmp: Path, shared: Path) -> Path:
        pt = tmp / "pt_4"
        shutil.copytree(shared / "openkbp_hn_ct" / "train-pats" / "pt_4", pt)
        data = (pt / file).read_bytes()
        cut = data.rfind(b",", 0, len(data) // 2) + 3  # inside a value, mid-file
        (pt / file).write_bytes(data[:cut])
        return pt

    return build


def _openkbp_voxel_size(values: str) -> Builder:
    def build(tmp: Path, shared: Path) -> Path:
        pt = tmp / "pt_1"
        shutil.copytree(_openkbp_partial(shared), pt)
        (pt / "voxel_dimensions.csv.gz").write_bytes(gzip.compress(values.encode()))
        return pt

    return build


def _unreadable(build: Builder, part: str | None = None, mode: int = 0) -> Builder:
    """``build``'s input with ``part`` of it (or the input itself) made unreadable."""

    def wrapped(tmp: Path, shared: Path) -> Path:
        path = build(tmp, shared)
        target = path / part if part else path
        target.chmod(mode)
        return path

    return wrapped


def _copied(name: Callable[[Path], Path], dst: str) -> Builder:
    def build(tmp: Path, shared: Path) -> Path:
        return _copy(name(shared), tmp / dst)

    return build


def _dicom_with_subfolder(tmp: Path, shared: Path) -> Path:
    path = _dicom_series()(tmp, shared)
    sub = path / "more"
    sub.mkdir()
    (path / "03.dcm").rename(sub / "03.dcm")
    return path


@dataclass(frozen=True)
class Case:
    """One bad input: how to build it, what must be raised, and what the message must say."""

    id: str
    build: Builder
    error: type[MedsegError]
    patterns: tuple[str, ...]
    labels: bool = False  # read with load_labels instead of load_volume
    info_lists: str = ""  # `medseg info` describes (exit 0) and lists this problem code
    unreadable: bool = False


CASES: list[Case] = [
    # corrupt / truncated compressed data
    Case("niigz_crc", _nii_gz("crc"), InputError, ("ct.nii.gz", CORRUPT, "CRC check failed")),
    Case("niigz_isize", _nii_gz("isize"), InputError, ("ct.nii.gz", CORRUPT, "length")),
    Case("niigz_bitflip", _nii_gz("bitflip"), InputError, ("ct.nii.gz", CORRUPT)),
    Case("niigz_half", _nii_gz("half"), InputError, ("ct.nii.gz", CORRUPT, "end-of-stream")),
    Case("niigz_tail_cut", _nii_gz("tail"), InputError, ("ct.nii.gz", CORRUPT)),
    Case("niigz_trailing_garbage", _nii_gz("garbage"), InputError, ("ct.nii.gz", CORRUPT)),
    Case("misnamed_gz_crc", _nii_gz("crc", "scan.img"), InputError, ("scan.img", CORRUPT)),
    Case("nii_truncated", _truncated_plain_nifti, InputError,
         ("ct.nii", "truncated NIfTI file", "holds")),
    Case("nrrd_gzip_crc", _nrrd("crc"), InputError, ("liver.nrrd", CORRUPT, "NRRD gzip")),
    Case("nrrd_gzip_half", _nrrd("half"), InputError, ("liver.nrrd", CORRUPT, "ends before")),
    Case("nrrd_gzip_bitflip", _nrrd("bitflip"), InputError, ("liver.nrrd", CORRUPT)),
    Case("nrrd_bzip2_unsupported", _nrrd_bzip2, InputError,
         ("liver.nrrd", "bzip2-encoded NRRD data cannot be read", "gzip or raw")),
    Case("mha_zlib_bitflip", _mha_damaged("bitflip"), InputError,
         ("ct.mha", CORRUPT, "MetaImage zlib")),
    Case("mha_zlib_truncated", _mha_damaged("half"), InputError, ("ct.mha", CORRUPT)),
    Case("openkbp_ct_crc", _openkbp("ct.csv.gz", "crc"), InputError,
         ("ct.csv.gz: corrupt or truncated gzip",)),
    Case("openkbp_ct_half", _openkbp("ct.csv.gz", "half"), InputError,
         ("ct.csv.gz: corrupt or truncated gzip",)),
    Case("openkbp_roi_truncated", _openkbp("Brainstem.csv.gz", "tail"), InputError,
         ("Brainstem.csv.gz: corrupt or truncated gzip",), labels=True),
    Case("openkbp_plain_ct_cut", _openkbp_plain_cut("ct.csv"), InputError,
         ("ct.csv: truncated OpenKBP CSV", "ends inside a row", "Copy it again")),
    Case("openkbp_plain_roi_cut", _openkbp_plain_cut("Mandible.csv"), InputError,
         ("Mandible.csv: truncated OpenKBP CSV",), labels=True),
    Case("openkbp_voxel_dims_crc", _openkbp("voxel_dimensions.csv.gz", "crc"), InputError,
         ("voxel_dimensions.csv.gz: corrupt or truncated gzip",)),
    # geometry invented or ignored
    Case("nifti_pixdim_zero", _pixdim((0.0, 3.0, 3.0)), GeometryError,
         ("(pixdim)", "voxel size (0, 3, 3) mm", "zero, negative or non-finite")),
    Case("nifti_pixdim_zero_qform", _pixdim((3.0, 3.0, 0.0), qform=1), GeometryError,
         ("voxel size (3, 3, 0) mm",)),
    Case("nifti_pixdim_nan", _pixdim((3.0, float("nan"), 3.0)), GeometryError,
         ("non-finite", "axis 1")),
    Case("nifti_pixdim_negative", _pixdim((-3.0, 3.0, 3.0)), GeometryError,
         ("voxel size (-3, 3, 3) mm",)),
    Case("nifti_pixdim_10m", _pixdim((10000.0, 3.0, 3.0)), GeometryError,
         ("10000 mm on axis 0", "larger than 100 mm")),
    Case("nifti_sform_shear", _sform([[-3, 0.9, 0], [0, -3, 0], [0, 0, 3]]), GeometryError,
         ("(sform)", "sheared", "106.70°", "tilted DICOM")),
    Case("nifti_sform_slight_shear", _sform([[-3, 0.03, 0], [0, -3, 0], [0, 0, 3]]),
         GeometryError, ("sheared", "90.57°")),
    Case("nifti_sform_zero_axis", _sform([[-3, 0, 0], [0, 0, 0], [0, 0, 3]]), GeometryError,
         ("(sform)", "zero, negative or non-finite", "axis 1")),
    Case("nifti_sform_10m", _sform([[-10000, 0, 0], [0, -3, 0], [0, 0, 3]]), GeometryError,
         ("larger than 100 mm",)),
    Case("nifti_huge_matrix", _raw_nifti_dims((30000, 30000, 30000), gz=False), InputError,
         ("big.nii", "30000×30000×30000", "more than the 1,073,741,824")),
    Case("nifti_gz_huge_matrix", _raw_nifti_dims((30000, 30000, 30), gz=True), InputError,
         ("big.nii.gz", "30000×30000×30")),
    Case("nifti_extent_6m", _raw_nifti_dims((122, 101, 2000), gz=True), GeometryError,
         ("6.0 m long on axis 2", "2000 voxels × 3 mm")),
    Case("nifti_matrix_larger_than_data", _raw_nifti_dims((122, 101, 300), gz=True), InputError,
         ("truncated NIfTI file", "decompressed file holds")),
    Case("nrrd_sheared", _nrrd_directions("(0.81,0,0) (0.3,0.81,0) (0,0,1)"), GeometryError,
         ("liver.nrrd", "sheared")),
    Case("nrrd_zero_spacing", _nrrd_directions("(0,0,0) (0,0.81,0) (0,0,1)"), GeometryError,
         ("liver.nrrd", "voxel size (0, 0.81, 1) mm")),
    Case("nrrd_10m_spacing", _nrrd_directions("(10000,0,0) (0,0.81,0) (0,0,1)"),
         GeometryError, ("larger than 100 mm",)),
    Case("mha_sheared", _mha_sheared, GeometryError, ("ct.mha", "sheared")),
    Case("dicom_huge_matrix_short_data", _dicom_series(_huge_matrix), InputError,
         ("less pixel data than their header's matrix needs", "65535 × 65535",
          "524,288 bytes"), info_lists="short_pixel_data"),
    Case("dicom_bits_allocated_wrong", _dicom_series(_bits_32), InputError,
         ("at 32 bits needs 1,048,576",), info_lists="short_pixel_data"),
    Case("dicom_rows_zero", _dicom_series(_rows_zero), InputError,
         ("Rows × Columns is 0 × 512",), info_lists="empty_matrix"),
    Case("dicom_pixel_spacing_10m", _dicom_series(_spacing_10m), GeometryError,
         ("10000 mm on axis 1", "PixelSpacing"), info_lists="bad_spacing"),
    Case("dicom_pixel_spacing_zero", _dicom_series(_spacing_zero), GeometryError,
         ("not positive",), info_lists="bad_spacing"),
    Case("dicom_slices_10m_apart", _dicom_series(_slices_10m_apart), GeometryError,
         ("slice step", "10000 mm on axis 0"), info_lists="bad_spacing"),
    Case("openkbp_voxel_size_zero", _openkbp_voxel_size("3.9\n3.9\n0\n"), InputError,
         ("expected three positive spacings",)),
    Case("openkbp_voxel_size_10m", _openkbp_voxel_size("3.9\n10000\n2.5\n"), GeometryError,
         ("voxel_dimensions", "larger than 100 mm")),
    # damaged DICOM headers (kinds found by fuzzing the header scanner)
    Case("dicom_header_unknown_vr", _damaged_dicom_header(b"\x02\x00\x10\x00UI", 4, b"ZZ"),
         InputError, ("ct.0.dcm", "DICOM header cannot be parsed", "NotImplementedError",
                      "re-export")),
    Case("dicom_header_odd_length_us",
         _damaged_dicom_header(b"(\x00\x10\x00\x02\x00\x00\x00", 4, b"US\x03\x00"),
         InputError, ("ct.0.dcm", "DICOM header cannot be parsed", "BytesLengthException")),
    Case("dicom_header_truncated", _truncated_dicom_header, InputError,
         ("ct.0.dcm", "no PixelData", "truncated or corrupt"), info_lists="missing_pixel_data"),
    # unreadable files and folders
    Case("unreadable_niigz", _unreadable(_copied(_ct_nifti, "ct.nii.gz")), InputError,
         ("ct.nii.gz", DENIED, "chmod"), unreadable=True),
    Case("unreadable_nrrd", _unreadable(_copied(_nrrd_label, "liver.nrrd")), InputError,
         ("liver.nrrd", DENIED), unreadable=True),
    Case("unreadable_dicom_folder", _unreadable(_dicom_series()), InputError,
         ("ct: cannot read this folder", DENIED), unreadable=True),
    Case("unreadable_dicom_subfolder", _unreadable(_dicom_with_subfolder, "more"), InputError,
         ("more: cannot read this folder", DENIED), unreadable=True),
    Case("unreadable_dicom_slice", _unreadable(_dicom_series(), "02.dcm"), InputError,
         ("02.dcm: cannot read this file", DENIED), unreadable=True),
    Case("unreadable_openkbp_ct", _unreadable(_openkbp("ct.csv.gz", "none"), "ct.csv.gz"),
         InputError, ("ct.csv.gz", DENIED), unreadable=True),
    Case("unreadable_openkbp_folder", _unreadable(_openkbp("ct.csv.gz", "none")), InputError,
         ("pt_1: cannot read this folder", DENIED), unreadable=True),
    Case("unreadable_openkbp_roi", _unreadable(_openkbp("ct.csv.gz", "none"), "Brainstem.csv.gz"),
         InputError, ("Brainstem.csv.gz", DENIED), labels=True, unreadable=True),
]  # fmt: skip


def _load(case: Case, path: Path) -> None:
    if case.labels:
        load_labels(path)
    else:
        load_volume(path)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reader_refuses_bad_input(
    case: Case, tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = case.build(tmp_path, shared_data)
    guard = permissions_enforced() if case.unreadable else contextlib.nullcontext()
    with guard:
        with pytest.raises(case.error) as info:
            _load(case, path)
        capsys.readouterr()
        code = main(["info", str(path)])
    out, err = capsys.readouterr()
    message = str(info.value)
    for pattern in case.patterns:
        assert pattern in message, f"{pattern!r} not in {message!r}"
    assert "Traceback" not in out + err
    if case.info_lists:  # `info` describes a DICOM tree and lists its problems
        assert code == 0, err
        assert case.info_lists in out
    elif case.labels:  # `info` reads the image of the folder; the damage is in a label file
        assert code in (0, 2) and "Traceback" not in err
    else:
        assert code == 2, out
        error_lines = [ln for ln in err.splitlines() if ln.startswith("medseg info: error: ")]
        assert len(error_lines) == 1, err
        assert case.patterns[0] in error_lines[0]


def test_corpus_size_and_categories() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) >= 40
    assert sum(c.unreadable for c in CASES) >= 8
    assert sum(CORRUPT in c.patterns or "corrupt or truncated gzip" in c.patterns[0] for c in CASES)
    assert sum(c.error is GeometryError for c in CASES) >= 15


def test_damage_really_changes_the_data(tmp_path: Path, shared_data: Path) -> None:
    """The corrupt .nii.gz cases are not refused by accident: nibabel alone (what the reader
    used before) reads the bit-flipped file without any error and returns wrong voxels."""
    original = np.asarray(nib.load(str(_ct_nifti(shared_data))).dataobj)
    bad = _nii_gz("bitflip")(tmp_path, shared_data)
    silently = np.asarray(nib.load(str(bad)).dataobj)
    assert silently.shape == original.shape
    assert np.count_nonzero(silently != original) > 0
    with pytest.raises(InputError, match=CORRUPT):
        load_volume(bad)
    crc = _nii_gz("crc", "crc.nii.gz")(tmp_path, shared_data)
    with gzip.open(crc, "rb") as fh, pytest.raises(gzip.BadGzipFile, match="CRC check failed"):
        fh.read()


def test_good_inputs_still_load(tmp_path: Path, shared_data: Path) -> None:
    """The checks refuse damage only: the undamaged originals load with the right geometry."""
    ct = load_volume(_ct_nifti(shared_data))
    assert ct.shape == (30, 101, 122) and ct.spacing_mm == pytest.approx((3.0, 3.0, 3.0))
    mha = load_volume(_mha(tmp_path, shared_data))
    np.testing.assert_array_equal(mha.array, ct.array)
    liver = load_volume(_nrrd_label(shared_data))
    assert liver.shape == (3, 512, 512) and int(liver.array.max()) == 1
    series = load_volume(_dicom_series()(tmp_path, shared_data))
    assert series.shape == (3, 512, 512)
    kbp = load_volume(_openkbp_partial(shared_data))
    assert kbp.shape == (128, 128, 128)


def test_unreadable_guard_really_denies(tmp_path: Path) -> None:
    """The permission cases test real EACCES errors (also when the suite runs as root)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    secret.chmod(0)
    with permissions_enforced(), pytest.raises(PermissionError):
        secret.read_text()
    assert secret.read_text() == "x"  # privileges restored after the block
