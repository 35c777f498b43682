"""Datasets by name: the MNIST family (IDX files) and CIFAR (python batches), official splits.

Each name has a :class:`DatasetSpec`: its files with their published MD5
checksums, the official download locations, the image shape, and folders where
a system package installs it. A dataset is looked for, in order, in

1. the data folder given (``dataset.data_dir`` in a run config, ``--data-dir``),
2. the folder named by the environment variable ``AEQPROP_DATA``,
3. ``~/.cache/aeqprop/datasets``,
4. the system folders of its spec (Debian's ``dataset-fashion-mnist`` installs
   Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``),

each as ``FOLDER/NAME/`` then ``FOLDER/`` itself. ``aeqprop data fetch NAME``
downloads into the first of 1-3 (see :mod:`aeqprop.download`).

Images are scaled to [0, 1] (pixel / 255) and flattened channel-major, so a
sample is a vector of ``C * H * W`` features; ``Dataset.shape`` keeps (C, H, W).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aeqprop.errors import DataError

ENV_VAR = "AEQPROP_DATA"
USER_DIR = Path("~/.cache/aeqprop/datasets")
#: The folder a CIFAR archive unpacks to; found beside (or instead of) the archive.
EXTRACTED = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
IDX_ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class Remote:
    """One file to download: its name at the mirrors and its MD5 checksum (hex)."""

    filename: str
    md5: str


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: format, image shape (C, H, W), files, mirrors, and where it may be installed.

    ``files`` are the downloads; for an IDX dataset, ``idx`` maps the four roles
    (train/test images/labels) to the file names read (``.gz`` or not);
    ``members`` are files extracted from a downloaded archive (EMNIST's zip);
    ``transpose``: images are stored column-major (EMNIST).
    """

    name: str
    format: str  # "idx", "cifar10" or "cifar100"
    shape: tuple[int, int, int]
    files: tuple[Remote, ...]
    mirrors: tuple[str, ...]
    idx: dict[str, str] = field(default_factory=dict)
    members: tuple[str, ...] = ()
    transpose: bool = False
    system_dirs: tuple[str, ...] = ()
    homepage: str = ""

    def needed(self) -> tuple[str, ...]:
        """The files that must be in the folder for the dataset to load."""
        if self.format == "idx":
            return tuple(self.idx[r] for r in IDX_ROLES)
        return tuple(f.filename for f in self.files)


_MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _mnist_like(name: str, md5s: tuple[str, str, str, str], mirrors: tuple[str, ...], **kw: Any) -> DatasetSpec:
    files = tuple(Remote(_MNIST_NAMES[r], m) for r, m in zip(IDX_ROLES, md5s))
    return DatasetSpec(name, "idx", (1, 28, 28), files, mirrors, idx=dict(_MNIST_NAMES), **kw)


EMNIST_SPLITS = ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")
_EMNIST_ZIP = Remote("gzip.zip", "58c8d27c78d21e728a6bc7b3cc06412e")


def _emnist(split: str) -> DatasetSpec:
    idx = {
        r: f"emnist-{split}-{r.split('_')[0]}-{r.split('_')[1]}-idx{3 if r.endswith('images') else 1}-ubyte.gz"
        for r in IDX_ROLES
    }
    return DatasetSpec(
        f"emnist-{split}",
        "idx",
        (1, 28, 28),
        (_EMNIST_ZIP,),
        ("https://biometrics.nist.gov/cs_links/EMNIST/",),
        idx=idx,
        members=tuple(f"gzip/{n}" for n in idx.values()),
        transpose=True,
        homepage="https://www.nist.gov/itl/products-and-services/emnist-dataset",
    )


CATALOG: dict[str, DatasetSpec] = {
    "mnist": _mnist_like(
        "mnist",
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": _mnist_like(
        "fashion-mnist",
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "kmnist": _mnist_like(
        "kmnist",
        (
            "bdb82020997e1d708af4cf47b453dcf7",
            "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7",
            "7320c461ea6c1c855c0b718fb2a4b134",
        ),
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        homepage="https://github.com/rois-codh/kmnist",
    ),
    **{f"emnist-{s}": _emnist(s) for s in EMNIST_SPLITS},
    "cifar10": DatasetSpec(
        "cifar10",
        "cifar10",
        (3, 32, 32),
        (Remote("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        ("https://www.cs.toronto.edu/~kriz/",),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "cifar100": DatasetSpec(
        "cifar100",
        "cifar100",
        (3, 32, 32),
        (Remote("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
        ("https://www.cs.toronto.edu/~kriz/",),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}


def spec(name: str) -> DatasetSpec:
    if name not in CATALOG:
        raise DataError(f"unknown dataset {name!r}; named datasets: {', '.join(CATALOG)}")
    return CATALOG[name]


def search_dirs(data_dir: str | Path | None = None, dataset: DatasetSpec | None = None) -> list[Path]:
    """The folders searched, in order (see the module docstring); a data folder given must exist
    (a typo there would otherwise load another copy of the dataset without a word)."""
    bases = [Path(data_dir).expanduser()] if data_dir else []
    if bases and not bases[0].is_dir():
        raise DataError(f"data folder {str(data_dir)!r} (--data-dir, dataset.data_dir) is not a folder here")
    if os.environ.get(ENV_VAR):
        bases.append(Path(os.environ[ENV_VAR]).expanduser())
    bases.append(USER_DIR.expanduser())
    if dataset is not None:
        bases += [Path(p) for p in dataset.system_dirs]
    return bases


def _has(folder: Path, name: str) -> Path | None:
    """``folder/name``, or the same without ``.gz`` (an uncompressed IDX file)."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def locate(ds: DatasetSpec, data_dir: str | Path | None = None) -> dict[str, Path]:
    """The dataset's files (by needed name), from the first folder that holds all of them."""
    looked = []
    for base in search_dirs(data_dir, ds):
        for folder in (base / ds.name, base):
            found = {n: _has(folder, n) for n in ds.needed()}
            present = {n: p for n, p in found.items() if p is not None}
            if len(present) == len(found):
                return present
            extracted = folder / EXTRACTED.get(ds.format, "-")
            if extracted.is_dir():  # an archive already unpacked (CIFAR)
                return {ds.files[0].filename: extracted}
            looked.append(str(folder))
    extra = " (or install Debian's dataset-fashion-mnist)" if ds.name == "fashion-mnist" else ""
    raise DataError(
        f"dataset {ds.name} not found: looked for {ds.needed()[0]} in {', '.join(looked)}; "
        f"run `aeqprop data fetch {ds.name}`{extra}, or point --data-dir or {ENV_VAR} at its folder"
    )


def load_named(name: str, data_dir: str | Path | None = None) -> tuple[Any, ...]:
    """(x_train, labels_train, x_test, labels_test, n_classes, shape) of a named dataset.

    x is float32 in [0, 1], flattened channel-major; labels are 0 .. n_classes - 1.
    """
    ds = spec(name)
    files = locate(ds, data_dir)
    if ds.format == "idx":
        from aeqprop.idx import read_idx

        arrays = {r: read_idx(files[ds.idx[r]]) for r in IDX_ROLES}
        for part in ("train", "test"):
            images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
            if images.ndim != 3 or images.shape[1:] != ds.shape[1:] or labels.shape != images.shape[:1]:
                raise DataError(
                    f"{name}: {part} images {images.shape} and labels {labels.shape} do not match "
                    f"(expected (N, {ds.shape[1]}, {ds.shape[2]}) and (N,))"
                )
        if ds.transpose:
            for r in ("train_images", "test_images"):
                arrays[r] = arrays[r].transpose(0, 2, 1)
        xs = [arrays["train_images"], arrays["test_images"]]
        ls = [arrays["train_labels"], arrays["test_labels"]]
    else:
        from aeqprop.cifar import read_cifar

        x_train, l_train, x_test, l_test = read_cifar(files[ds.files[0].filename], ds.format)
        xs, ls = [x_train, x_test], [l_train, l_test]
    classes, train_labels = np.unique(ls[0], return_inverse=True)
    test_labels = np.searchsorted(classes, ls[1])
    if np.any(test_labels >= len(classes)) or np.any(classes[np.minimum(test_labels, len(classes) - 1)] != ls[1]):
        raise DataError(f"{name}: the test split has labels the training split lacks")
    n = int(np.prod(ds.shape))
    x_train, x_test = (np.multiply(x.reshape(len(x), n), np.float32(1 / 255), dtype=np.float32) for x in xs)
    return x_train, train_labels, x_test, test_labels, len(classes), ds.shape
