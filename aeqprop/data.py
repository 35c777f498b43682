"""Datasets: bundled (scikit-learn's digits, iris, wine, breast cancer), CSV and NPZ files,
and named image datasets with their official test split (MNIST family, CIFAR; see
:mod:`aeqprop.catalog`, imported only when one is asked for).

Features are scaled to [0, 1] with the training split's per-feature range
(images: pixel / 255); targets are one-hot (classification). Splits are
stratified and seeded. A validation split is carved from the training split:
model selection and schedules use it, the test split chooses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aeqprop.errors import DataError

BUNDLED = ("digits", "iris", "wine", "breast_cancer")


@dataclass
class Dataset:
    """A split classification dataset. ``y_*`` are one-hot, ``labels_*`` integers."""

    name: str
    x_train: np.ndarray
    labels_train: np.ndarray
    x_test: np.ndarray
    labels_test: np.ndarray
    n_classes: int
    x_val: np.ndarray | None = None
    labels_val: np.ndarray | None = None
    shape: tuple[int, ...] | None = None  # (C, H, W) of an image dataset; x holds it flattened

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def y_train(self) -> np.ndarray:
        return one_hot(self.labels_train, self.n_classes)

    @property
    def y_test(self) -> np.ndarray:
        return one_hot(self.labels_test, self.n_classes)

    @property
    def y_val(self) -> np.ndarray | None:
        return None if self.labels_val is None else one_hot(self.labels_val, self.n_classes)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def _bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
    }[name]
    bunch = loader()
    return bunch.data.astype(np.float64), bunch.target


def _from_file(path: Path, target_column: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if not path.is_file() or path.stat().st_size == 0:
        raise DataError(f"data file {path} is {'empty' if path.is_file() else 'not a file'}; give a .csv or .npz file")
    if path.suffix == ".npz":
        with np.load(path) as f:
            if not {"x", "y"} <= set(f.files):
                raise DataError(f"{path}: an NPZ dataset needs arrays 'x' and 'y' (found {sorted(f.files)})")
            x, y = np.asarray(f["x"], dtype=np.float64), np.asarray(f["y"])
        if x.ndim != 2 or y.shape[:1] != x.shape[:1]:
            raise DataError(f"{path}: x must be (samples, features) and y (samples,), got {x.shape} and {y.shape}")
    elif path.suffix in (".csv", ".txt"):
        try:
            table = np.genfromtxt(path, delimiter=",", dtype=np.float64, skip_header=_header_lines(path))
        except ValueError as exc:
            raise DataError(f"{path}: not a numeric CSV table ({exc})") from None
        if table.ndim != 2 or table.shape[1] < 2:
            raise DataError(f"{path}: a CSV dataset needs at least two columns (features and a label)")
        y = table[:, target_column]
        x = np.delete(table, target_column % table.shape[1], axis=1)
    else:
        raise DataError(f"{path}: unknown data format {path.suffix!r}; use .csv or .npz")
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        r, c = bad[0]
        raise DataError(f"{path}: {len(bad)} NaN or infinite feature value(s), first at row {r}, column {c}")
    y = np.asarray(y)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise DataError(f"{path}: NaN or infinite label(s), first at row {int(np.argmax(~np.isfinite(y)))}")
        if not np.all(y == np.round(y)):
            raise DataError(f"{path}: labels must be integers (classification)")
    _, y = np.unique(y, return_inverse=True)
    return x, y


def _header_lines(path: Path) -> int:
    with open(path) as f:
        first = f.readline()
    try:
        [float(v) for v in first.strip().split(",") if v.strip()]
        return 0
    except ValueError:
        return 1


def load_dataset(
    name: str,
    test_fraction: float = 0.2,
    seed: int = 0,
    target_column: int = -1,
    validation: float | None = None,
    data_dir: str | Path | None = None,
) -> Dataset:
    """Load a bundled dataset or a named one (``mnist``, ``fashion-mnist``, ``cifar10``, ... with
    their official test split, read from ``data_dir`` or the usual folders), or a .csv / .npz
    file by path; split, scale to [0, 1].

    ``validation``: fraction of the training split held out for model selection
    (None: 0.1 for named datasets, 0 otherwise). ``test_fraction`` applies only
    where there is no official test split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction={test_fraction}: must be between 0 and 1")
    if validation is not None and not 0.0 <= validation < 1.0:
        raise DataError(f"validation={validation}: must be >= 0 and < 1")
    if name not in BUNDLED and not name.endswith((".csv", ".npz", ".txt")) and not Path(name).exists():
        from aeqprop.catalog import CATALOG, load_named

        if name not in CATALOG:
            raise DataError(
                f"unknown dataset {name!r}; valid: {', '.join(BUNDLED)}, {', '.join(CATALOG)}, "
                "or a .csv / .npz file path"
            )
        x_train, l_train, x_test, l_test, n_classes, shape = load_named(name, data_dir)
        data = Dataset(str(name), x_train, l_train, x_test, l_test, n_classes, shape=shape)
        return _carve_validation(data, 0.1 if validation is None else validation, seed)
    if name in BUNDLED:
        x, labels = _bundled(name)
    else:
        x, labels = _from_file(Path(name), target_column)
    n_classes = int(labels.max()) + 1
    train, test = stratified_split(labels, test_fraction, seed)
    val = np.empty(0, dtype=int)
    if validation:
        keep, val = stratified_split(labels[train], validation, seed + 1)
        train, val = train[keep], train[val]
    lo, hi = x[train].min(axis=0), x[train].max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)

    def scale(a: np.ndarray) -> np.ndarray:
        return np.clip((a - lo) / span, 0.0, 1.0)

    data = Dataset(str(name), scale(x[train]), labels[train], scale(x[test]), labels[test], n_classes)
    if validation:
        data.x_val, data.labels_val = scale(x[val]), labels[val]
    return data


def _carve_validation(data: Dataset, fraction: float, seed: int) -> Dataset:
    """Move a stratified ``fraction`` of the training split to the validation split."""
    if not fraction:
        return data
    keep, val = stratified_split(data.labels_train, fraction, seed + 1)
    data.x_val, data.labels_val = data.x_train[val], data.labels_train[val]
    data.x_train, data.labels_train = data.x_train[keep], data.labels_train[keep]
    return data


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): each class split in the same proportion, shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(idx)))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
