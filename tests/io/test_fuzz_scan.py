"""Fuzz test of the DICOM header scanner (:func:`medseg.io.dicom_scan.read_instance_header`).

Real headers from the shared DICOM files (CT slices in implicit and explicit VR, an RTSTRUCT,
an RTPLAN, a DICOM-SEG) are mutated by hypothesis (bytes overwritten, DICOM-ish length values
and delimiters planted, cuts, deletions, insertions, spliced copies) and written to a file. The
scanner must return a header or ``None``, or raise a :class:`~medseg.errors.MedsegError`; any
other exception (IndexError, struct.error, NotImplementedError ...) is a crash.

The suite runs a short, derandomized run (~300 inputs). The longer run documented in
``docs/reliability.md`` is::

    .venv/bin/python tests/io/test_fuzz_scan.py 20000

The crashes found so far are kept below as regression tests built from the real files.
"""

from __future__ import annotations

import struct
import sys
import tempfile
import warnings
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.errors import BytesLengthException

from medseg.errors import InputError, MedsegError
from medseg.io import load_volume
from medseg.io.dicom_scan import InstanceHeader, read_instance_header

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SEED_FILES = (
    "dicompyler_breast_rtstruct/ct.0.dcm",
    "dicompyler_breast_rtstruct/rtss.dcm",
    "dicompyler_breast_rtstruct/rtplan.dcm",
    "dcmqi_ct3slice_seg/ct-3slice/01.dcm",
    "dcmqi_ct3slice_seg/liver.dcm",
)
PLANTED = (
    b"\xff\xff\xff\xff",  # undefined length
    b"\x00\x00\x00\x00",
    b"\xfe\xff\x00\xe0",  # item tag
    b"\xfe\xff\xdd\xe0",  # sequence delimiter
    b"\xe0\x7f\x10\x00",  # PixelData tag
    b"SQ\x00\x00",
    b"OB\x00\x00",
    b"US\x03\x00",
)


def _header_bytes(path: Path) -> bytes:
    """The file up to 64 bytes into its PixelData (or its first 16 KiB): the header part."""
    data = path.read_bytes()
    at = data.find(b"\xe0\x7f\x10\x00")
    return data[: at + 64] if at > 0 else data[:16384]


SEEDS = tuple(_header_bytes(SHARED / f) for f in SEED_FILES)


@st.composite
def mutated_headers(draw: st.DrawFn) -> bytes:
    data = bytearray(SEEDS[draw(st.integers(0, len(SEEDS) - 1))])
    n_ops = draw(st.integers(1, 6))
    for _ in range(n_ops):
        if not data:
            break
        op = draw(st.sampled_from(["byte", "plant", "cut", "delete", "insert", "splice"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "byte":
            data[at] = draw(st.integers(0, 255))
        elif op == "plant":
            value = draw(st.sampled_from(PLANTED))
            data[at : at + len(value)] = value
        elif op == "cut":
            del data[at:]
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            src = draw(st.integers(0, len(data) - 1))
            data[at : at + 8] = data[src : src + 8]
    return bytes(data)


def check_one(data: bytes, folder: Path) -> None:
    """The property: a header, ``None`` or a MedsegError, nothing else."""
    path = folder / "fuzz.dcm"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about invalid values; that is fine
        try:
            result = read_instance_header(path)
        except MedsegError:
            return
    assert result is None or isinstance(result, InstanceHeader)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_headers())
def test_scanner_never_crashes_on_mutated_real_headers(fuzz_dir: Path, data: bytes) -> None:
    check_one(data, fuzz_dir)


def test_seed_headers_parse_unmutated(tmp_path: Path) -> None:
    for name, seed in zip(SEED_FILES, SEEDS, strict=True):
        path = tmp_path / "seed.dcm"
        path.write_bytes(seed)
        header = read_instance_header(path)
        assert header is not None, name
        assert header.sop_instance_uid and header.study_instance_uid, name


# --- crashes found by fuzzing, fixed, kept as regression tests --------------------------------


def _real(name: str) -> bytearray:
    return bytearray((SHARED / name).read_bytes())


def _unknown_vr() -> bytes:
    data = _real("dicompyler_breast_rtstruct/ct.0.dcm")
    at = data.index(b"\x02\x00\x10\x00UI") + 4  # TransferSyntaxUID, explicit VR meta
    data[at : at + 2] = b"\x55\x10"
    return bytes(data)


def _odd_length_rows() -> bytes:
    data = _real("dicompyler_breast_rtstruct/ct.0.dcm")
    at = data.index(b"(\x00\x10\x00\x02\x00\x00\x00") + 4  # Rows, implicit VR, length 2
    data[at : at + 4] = struct.pack("<I", 217941)  # odd, and past the deferral size
    return bytes(data)


def _cut_in_long_length() -> bytes:
    data = _real("dcmqi_ct3slice_seg/ct-3slice/01.dcm")
    at = data.index(b"\x02\x00\x01\x00OB\x00\x00")  # FileMetaInformationVersion
    return bytes(data[: at + 9])  # ends inside the 4-byte length of an OB element


def _bad_transfer_syntax() -> bytes:
    data = _real("dicompyler_breast_rtstruct/ct.0.dcm")
    at = data.index(b"1.2.840.10008.1.2\x00")
    data[at : at + 17] = b"9.9.999.99999.9.9"
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "raw_error", "in_message"),
    [
        (_unknown_vr, NotImplementedError, "Unknown Value Representation"),
        (_odd_length_rows, BytesLengthException, "even multiple"),
        (_cut_in_long_length, struct.error, "unpack requires a buffer"),
    ],
    ids=["unknown_vr", "odd_length_rows", "cut_in_long_length"],
)
def test_fuzz_crash_is_an_input_error(
    tmp_path: Path, make, raw_error: type[Exception], in_message: str
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "crash.dcm"
    path.write_bytes(make())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(raw_error):  # what pydicom itself raises: used to escape as a crash
            ds = pydicom.dcmread(path, defer_size=2048)
            ds[0x00280010].value  # noqa: B018 (the Rows value is what fails to convert)
        with pytest.raises(InputError) as info:
            read_instance_header(path)
    message = str(info.value)
    assert str(path) in message and "DICOM header cannot be parsed" in message
    assert raw_error.__name__ in message and in_message in message


def test_fuzz_crash_unknown_transfer_syntax_is_refused_on_load(tmp_path: Path) -> None:
    """A TransferSyntaxUID that is not a transfer syntax made the scanner raise ValueError; it
    is now read as a header without a usable pixel offset, and loading refuses it cleanly."""
    path = tmp_path / "ct.dcm"
    path.write_bytes(_bad_transfer_syntax())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: "Expected explicit VR, but found implicit"
        header = read_instance_header(path)
    assert header is not None and header.transfer_syntax_uid == "9.9.999.99999.9.9"
    assert header.pixel_offset is None and header.rows == 512
    with warnings.catch_warnings(), pytest.raises(InputError):
        warnings.simplefilter("ignore")
        load_volume(path)


if __name__ == "__main__":  # the longer documented run: python tests/io/test_fuzz_scan.py N
    import time

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    crashes: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="medseg-fuzz-long-"))
    executions = [0]

    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(mutated_headers())
    def run(data: bytes) -> None:
        executions[0] += 1
        try:
            check_one(data, folder)
        except Exception as exc:  # collect every crash of the long run
            crashes.append(f"{type(exc).__name__}: {exc}")
            (folder / f"crash_{len(crashes)}.dcm").write_bytes(data)

    start = time.time()
    run()
    print(f"{executions[0]} executions in {time.time() - start:.0f} s, {len(crashes)} crashes")
    for c in sorted(set(crashes)):
        print("  ", c)
