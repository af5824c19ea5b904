"""Synthetic DICOM series for the reader tests (written with medseg.io.dicom_write)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medseg.io.dicom_write import SeriesInfo, write_dicom_series
from medseg.volume import Volume, affine_from_geometry

AXIAL = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])  # columns: slice, row, column directions


def phantom(shape: tuple[int, int, int] = (6, 12, 10)) -> np.ndarray:
    """HU values unique per voxel position pattern: -1000 + 100 k + 7 r + c (float32)."""
    k, r, c = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (-1000.0 + 100.0 * k + 7.0 * r + c).astype(np.float32)


def make_volume(
    direction: np.ndarray = AXIAL,
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.6),
    origin: tuple[float, float, float] = (-120.5, -90.25, 33.0),
    shape: tuple[int, int, int] = (6, 12, 10),
) -> Volume:
    """CT Volume with the phantom on the given grid."""
    affine = affine_from_geometry(spacing, origin_mm=origin, direction=direction)
    return Volume(phantom(shape), affine, modality="CT")


def write_series(
    folder: Path,
    volume: Volume | None = None,
    *,
    modify: Callable[[int, Dataset], None] | None = None,
    shuffle_names: bool = False,
    info: SeriesInfo | None = None,
) -> list[Path]:
    """Write ``volume`` (default :func:`make_volume`) to ``folder``; optionally shuffle names."""
    volume = volume or make_volume()
    paths = write_dicom_series(volume, folder, modify=modify, info=info)
    if shuffle_names:
        order = list(range(len(paths)))
        random.Random(7).shuffle(order)
        tmp = [p.rename(p.with_name(f"tmp_{i}")) for i, p in enumerate(paths)]
        paths = [t.rename(t.with_name(f"IM{order[i]:05d}")) for i, t in enumerate(tmp)]
    return paths


def ipp_by_uid(folder: Path) -> dict[str, np.ndarray]:
    """SOPInstanceUID → ImagePositionPatient read with plain pydicom (independent oracle)."""
    out = {}
    for p in sorted(folder.iterdir()):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = np.asarray(ds.ImagePositionPatient, dtype=float)
    return out


def rotation(axis: str, degrees: float) -> np.ndarray:
    """3×3 rotation about the LPS axis ``"x"``, ``"y"`` or ``"z"``."""
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    i = "xyz".index(axis)
    j, k = [a for a in range(3) if a != i]
    m = np.eye(3)
    m[j, j], m[j, k], m[k, j], m[k, k] = c, -s, s, c
    return m


def encode_jpeg_lossless(image: np.ndarray) -> bytes:
    """Minimal lossless JPEG (process 14, first-order prediction, SV1) of a uint16 image.

    Written from ITU-T T.81 (H.1): predictor 1 (left neighbour; first row left, first column
    above, first pixel 2^15), difference categories coded with a fixed Huffman table (every
    category 0..16 gets a 5-bit code). Independent of the decoder under test (libjpeg).
    """
    rows, cols = image.shape
    img = image.astype(np.int64)
    pred = np.empty_like(img)
    pred[0, 0] = 1 << 15
    pred[0, 1:] = img[0, :-1]
    pred[1:, 0] = img[:-1, 0]
    pred[1:, 1:] = img[1:, :-1]
    diff = (img - pred) % 65536
    diff = np.where(diff > 32768, diff - 65536, diff).ravel()
    bits: list[str] = []
    for d in diff.tolist():
        size = 0 if d == 0 else int(abs(d)).bit_length()
        bits.append(format(size, "05b"))
        if 0 < size < 16:
            v = d if d > 0 else d - 1
            bits.append(format(v & ((1 << size) - 1), f"0{size}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        b = int(stream[i : i + 8], 2)
        data.append(b)
        if b == 0xFF:
            data.append(0)

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    sof = bytes([16]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    counts = [0] * 16
    counts[4] = 17  # 17 codes of length 5
    dht = bytes([0x00]) + bytes(counts) + bytes(range(17))
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # Ns=1, Cs=1, Td=0; Ss=predictor 1, Se=0, Ah/Al=0
    return (
        b"\xff\xd8"
        + segment(0xC3, sof)
        + segment(0xC4, dht)
        + segment(0xDA, sos)
        + bytes(data)
        + b"\xff\xd9"
    )
