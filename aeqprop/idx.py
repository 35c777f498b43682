"""IDX files (the MNIST family's format), gzipped or not.

Layout: two zero bytes, a type code (0x08 unsigned byte, 0x09 signed byte,
0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of
dimensions, each dimension as a big-endian uint32, then the data, big-endian,
row-major. ``train-images-idx3-ubyte`` is (60000, 28, 28) uint8.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np

from aeqprop.errors import DataError

TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` or plain, detected from the bytes)."""
    path = Path(path)
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read it as an IDX file ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: IDX header truncated or with 0 dimensions")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(TYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: the header says shape {shape} ({expected} bytes of data) but the file holds "
            f"{len(raw) - header}; the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzipped when ``compress``, default: the name ends in .gz)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in TYPES.items()}
    code = codes.get(array.dtype)
    if code is None:
        raise DataError(f"IDX cannot store dtype {array.dtype}; valid: uint8, int8, int16, int32, float32, float64")
    body = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body += np.ascontiguousarray(array, array.dtype.newbyteorder(">")).tobytes()
    compress = path.suffix == ".gz" if compress is None else compress
    with gzip.open(path, "wb") if compress else open(path, "wb") as f:
        f.write(body)
