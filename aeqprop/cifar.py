"""CIFAR-10 and CIFAR-100 in their "python version" batches.

Each batch is a pickled dict with ``b"data"`` (N, 3072) uint8, channel-major
(1024 red, 1024 green, 1024 blue, each 32x32 row-major) and ``b"labels"``
(CIFAR-10) or ``b"fine_labels"`` (CIFAR-100). CIFAR-10 has ``data_batch_1`` to
``data_batch_5`` and ``test_batch``; CIFAR-100 has ``train`` and ``test``.

The batches are pickles, so they are read with an unpickler that builds only
the plain containers and numpy arrays such a batch holds: a file that asks for
anything else is refused rather than run.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from aeqprop.errors import DataError

#: (folder inside the archive, training batches, test batch, label key) per variant.
LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels"),
}

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise DataError(f"a CIFAR batch may hold only arrays and containers; this one asks for {module}.{name}")
        return super().find_class(module, name)


def _load_batch(raw: bytes, where: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{where}: not a CIFAR python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{where}: a CIFAR batch needs keys data and {label_key.decode()}")
    x = np.asarray(batch[b"data"], dtype=np.uint8)
    y = np.asarray(batch[label_key], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or len(y) != len(x):
        raise DataError(f"{where}: data must be (N, 3072) with N labels, got {x.shape} and {len(y)} labels")
    return x, y


def read_cifar(source: str | Path, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, labels_train, x_test, labels_test) from the extracted folder or the .tar.gz archive.

    ``x`` is (N, 3072) uint8 in CIFAR's channel-major order (reshape to (N, 3, 32, 32)).
    """
    folder, train_names, test_name, key = LAYOUT[variant]
    source = Path(source)
    if source.is_dir():
        base = source / folder if (source / folder).is_dir() else source

        def read(name: str) -> bytes:
            path = base / name
            if not path.is_file():
                raise DataError(f"{path} is missing; the {variant} folder needs {', '.join(train_names + [test_name])}")
            return path.read_bytes()
    else:
        try:
            archive = tarfile.open(source, "r:*")
        except (OSError, tarfile.TarError) as exc:
            raise DataError(f"{source}: not a readable tar archive ({exc})") from None
        members = {m.name: m for m in archive.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            member = members.get(f"{folder}/{name}")
            if member is None:
                raise DataError(f"{source} has no {folder}/{name}; is it the {variant} python archive?")
            stream = archive.extractfile(member)
            if stream is None:
                raise DataError(f"{source}: {folder}/{name} is not a regular file; is it the {variant} python archive?")
            return stream.read()

    parts = [_load_batch(read(n), f"{source}:{n}", key) for n in train_names]
    x_test, y_test = _load_batch(read(test_name), f"{source}:{test_name}", key)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test


def write_cifar_batch(path: str | Path, x: np.ndarray, labels: np.ndarray, label_key: bytes = b"labels") -> None:
    """Write a batch in CIFAR's python format (for tests and small local copies)."""
    with open(path, "wb") as f:
        pickle.dump({b"data": np.asarray(x, np.uint8), label_key: [int(v) for v in labels]}, f, protocol=2)
