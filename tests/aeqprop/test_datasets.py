"""Named datasets: IDX and CIFAR readers on small generated files, the search path, the
validation split, and `data fetch` against a loopback HTTP server serving generated files."""

from __future__ import annotations

import hashlib
import http.server
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from aeqprop import catalog
from aeqprop.catalog import DatasetSpec, Remote
from aeqprop.cifar import write_cifar_batch
from aeqprop.data import load_dataset
from aeqprop.download import fetch
from aeqprop.errors import DataError
from aeqprop.idx import read_idx, write_idx


@pytest.fixture(autouse=True)
def no_user_data(tmp_path, monkeypatch):
    """Keep the search path inside the test: no $AEQPROP_DATA, the user cache in tmp."""
    monkeypatch.delenv(catalog.ENV_VAR, raising=False)
    monkeypatch.setattr(catalog, "USER_DIR", tmp_path / "user-cache")
    import aeqprop.download

    monkeypatch.setattr(aeqprop.download, "USER_DIR", tmp_path / "user-cache")


def make_mnist(folder: Path, n_train=60, n_test=20, seed=0, gz=True, prefix="", label_offset=0):
    """An MNIST-format dataset of random 28x28 images; returns its arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10 + label_offset).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (rng.permutation(n_test) % 10 + label_offset).astype(np.uint8),
    }
    for name, a in arrays.items():
        write_idx(folder / (prefix + name + (".gz" if gz else "")), a)
    return arrays


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_gzipped_and_plain(tmp_path, dtype):
    a = (
        (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
        if dtype != np.uint8
        else np.arange(30, dtype=dtype).reshape(2, 3, 5)
    )
    for name in ("a.gz", "a"):
        write_idx(tmp_path / name, a)
        back = read_idx(tmp_path / name)
        assert back.dtype == a.dtype and np.array_equal(back, a)
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "a").read_bytes()[:4] == bytes(
        [0, 0, {np.uint8: 8, np.int16: 11, np.int32: 12, np.float32: 13, np.float64: 14}[dtype], 3]
    )


def test_idx_header_and_length_are_checked(tmp_path):
    write_idx(tmp_path / "x", np.zeros((4, 28, 28), np.uint8))
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(DataError, match=r"shape \(4, 28, 28\).*truncated or corrupt"):
        read_idx(tmp_path / "short")
    (tmp_path / "bad").write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_named_mnist_has_the_official_test_split_and_a_stratified_validation_split(tmp_path):
    arrays = make_mnist(tmp_path / "mnist", n_train=100, n_test=30)
    d = load_dataset("mnist", data_dir=tmp_path, seed=3)
    assert d.shape == (1, 28, 28) and d.n_features == 784 and d.n_classes == 10
    assert d.x_train.dtype == np.float32
    # the test split is the t10k file, in its order, pixels / 255
    assert np.array_equal(d.labels_test, arrays["t10k-labels-idx1-ubyte"])
    assert np.allclose(d.x_test, arrays["t10k-images-idx3-ubyte"].reshape(30, 784) / 255.0, atol=1e-7)
    # default validation: 10 % of training, one per class here, disjoint from what is trained on
    assert len(d.x_val) == 10 and len(d.x_train) == 90
    assert sorted(d.labels_val) == list(range(10))
    rows = {r.tobytes() for r in d.x_train}
    assert not any(r.tobytes() in rows for r in d.x_val)
    train_images = arrays["train-images-idx3-ubyte"].reshape(100, 784) / 255.0
    assert all(np.isclose(train_images, v, atol=1e-7).all(1).any() for v in d.x_val)
    # seeded; validation=0 keeps all of training
    assert np.array_equal(load_dataset("mnist", data_dir=tmp_path, seed=3).x_val, d.x_val)
    assert len(load_dataset("mnist", data_dir=tmp_path, validation=0.0).x_train) == 100


def test_uncompressed_files_in_the_folder_itself_and_the_environment_variable(tmp_path, monkeypatch):
    make_mnist(tmp_path / "plain", gz=False)
    monkeypatch.setenv(catalog.ENV_VAR, str(tmp_path / "plain"))
    d = load_dataset("kmnist")  # a dataset found through $AEQPROP_DATA, files directly in it
    assert len(d.x_train) + len(d.x_val) == 60 and len(d.x_test) == 20


def test_emnist_images_are_transposed_and_labels_start_at_zero(tmp_path):
    arrays = make_mnist(tmp_path / "emnist-letters", prefix="", label_offset=1)
    folder = tmp_path / "emnist-letters"
    for p in folder.iterdir():  # EMNIST file names
        kind = "train" if p.name.startswith("train") else "test"
        p.rename(folder / ("emnist-letters-" + kind + p.name[p.name.index("-") :]))
    d = load_dataset("emnist-letters", data_dir=tmp_path, validation=0.0)
    assert d.labels_train.min() == 0 and d.n_classes == 10
    assert np.array_equal(d.labels_train, arrays["train-labels-idx1-ubyte"] - 1)
    first = arrays["train-images-idx3-ubyte"][0]
    assert np.allclose(d.x_train[0].reshape(28, 28), first.T / 255.0, atol=1e-7)


def make_cifar(folder: Path, n=12, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    parts = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_cifar_batch(folder / name, x, labels)
        parts.append((x, labels))
    return parts


def test_cifar10_from_its_folder_and_from_its_archive(tmp_path):
    parts = make_cifar(tmp_path / "src" / "cifar-10-batches-py")
    (tmp_path / "cifar10").mkdir()
    with tarfile.open(tmp_path / "cifar10" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    d = load_dataset("cifar10", data_dir=tmp_path, validation=0.0)
    assert d.shape == (3, 32, 32) and d.n_features == 3072 and len(d.x_train) == 60 and len(d.x_test) == 12
    assert np.allclose(d.x_train[12:24], parts[1][0] / 255.0, atol=1e-7)  # batch 2 follows batch 1
    assert np.allclose(d.x_test, parts[5][0] / 255.0, atol=1e-7)
    from aeqprop.cifar import read_cifar

    folder = read_cifar(tmp_path / "src", "cifar10")
    assert np.array_equal(folder[0], np.concatenate([p[0] for p in parts[:5]]))


def test_a_cifar_batch_that_asks_for_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    folder = tmp_path / "cifar-10-batches-py"
    make_cifar(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="asks for builtins.print"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_a_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path):
    (tmp_path / "here").mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path / "here")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "here" / "mnist") in message and "user-cache" in message
    assert "aeqprop data fetch mnist" in message


def test_a_data_folder_that_does_not_exist_is_refused_not_searched_past(tmp_path, monkeypatch):
    make_mnist(tmp_path / "kmnist")  # a copy the search would otherwise find
    monkeypatch.setenv(catalog.ENV_VAR, str(tmp_path))
    assert load_dataset("kmnist").n_classes == 10
    with pytest.raises(DataError, match=r"data folder '.*typo' \(--data-dir, dataset.data_dir\) is not a folder"):
        load_dataset("kmnist", data_dir=tmp_path / "typo")


def test_unknown_names_list_bundled_and_named_datasets():
    with pytest.raises(DataError, match="valid: digits, iris, wine, breast_cancer, mnist, fashion-mnist"):
        load_dataset("fashion")


# -- downloads -------------------------------------------------------------------


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server serving tmp_path/www; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def served_mnist_spec(root: Path, url: str, name="mnist") -> DatasetSpec:
    make_mnist(root, n_train=30, n_test=10)
    base = catalog.CATALOG["mnist"]
    return DatasetSpec(
        name,
        "idx",
        base.shape,
        tuple(Remote(f.filename, md5(root / f.filename)) for f in base.files),
        (url,),
        idx=base.idx,
    )


def test_fetch_downloads_checks_and_loads(server, tmp_path):
    root, url = server
    spec = served_mnist_spec(root, url)
    seen = []
    folder = fetch("mnist", tmp_path / "data", dataset=spec, on_file=lambda f, s: seen.append(s))
    assert folder == tmp_path / "data" / "mnist" and seen == ["downloaded"] * 4
    for f in spec.files:
        assert (folder / f.filename).read_bytes() == (root / f.filename).read_bytes()
    assert not list(folder.glob("*.part"))
    seen.clear()
    fetch("mnist", tmp_path / "data", dataset=spec, on_file=lambda f, s: seen.append(s))
    assert seen == ["present"] * 4  # checked, not downloaded again
    assert len(load_dataset("mnist", data_dir=tmp_path / "data").x_test) == 10


def test_fetch_refuses_a_file_whose_checksum_differs_and_keeps_nothing(server, tmp_path):
    root, url = server
    spec = served_mnist_spec(root, url)
    bad = DatasetSpec("mnist", "idx", spec.shape, (Remote(spec.files[0].filename, "0" * 32),), (url,), idx=spec.idx)
    with pytest.raises(DataError, match=f"checksum mismatch \\(MD5 {spec.files[0].md5}, expected 0{{32}}\\)"):
        fetch("mnist", tmp_path / "data", dataset=bad)
    assert list((tmp_path / "data" / "mnist").iterdir()) == []


def test_fetch_falls_back_to_the_next_mirror(server, tmp_path):
    root, url = server
    spec = served_mnist_spec(root, url)
    folder = fetch("mnist", tmp_path / "data", mirrors=[url + "missing/", url], dataset=spec)
    assert len(list(folder.iterdir())) == 4
    with pytest.raises(DataError, match=r"could not download train-images-idx3-ubyte.gz of mnist: .*missing/.*404"):
        fetch("mnist", tmp_path / "other", mirrors=[url + "missing/"], dataset=spec)


def test_fetch_extracts_the_split_files_of_an_archive(server, tmp_path):
    import zipfile

    root, url = server
    make_mnist(tmp_path / "gen", n_train=20, n_test=10)
    spec0 = catalog.CATALOG["emnist-digits"]
    with zipfile.ZipFile(root / "gzip.zip", "w") as z:
        for role, name in spec0.idx.items():
            plain = {
                "train_images": "train-images-idx3-ubyte.gz",
                "train_labels": "train-labels-idx1-ubyte.gz",
                "test_images": "t10k-images-idx3-ubyte.gz",
                "test_labels": "t10k-labels-idx1-ubyte.gz",
            }[role]
            z.write(tmp_path / "gen" / plain, "gzip/" + name)
    spec = DatasetSpec(
        "emnist-digits",
        "idx",
        spec0.shape,
        (Remote("gzip.zip", md5(root / "gzip.zip")),),
        (url,),
        idx=spec0.idx,
        members=spec0.members,
        transpose=True,
    )
    fetch("emnist-digits", tmp_path / "data", dataset=spec)
    d = load_dataset("emnist-digits", data_dir=tmp_path / "data", validation=0.0)
    assert len(d.x_train) == 20 and len(d.x_test) == 10


def test_cli_data_fetch(server, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli

    root, url = server
    spec = served_mnist_spec(root, url)
    runner = CliRunner()
    # the official checksums refuse the generated files: one line, non-zero exit, nothing kept
    result = runner.invoke(cli.app, ["data", "fetch", "mnist", "--data-dir", str(tmp_path / "d"), "--mirror", url])
    assert (
        result.exit_code == 2
        and "checksum mismatch" in result.output
        and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in result.output
    )
    assert list((tmp_path / "d" / "mnist").iterdir()) == []
    monkeypatch.setitem(catalog.CATALOG, "mnist", spec)
    result = runner.invoke(cli.app, ["data", "fetch", "mnist", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert result.output.count("downloaded") == 4 and f"mnist in {tmp_path / 'd' / 'mnist'}" in result.output
    result = runner.invoke(cli.app, ["data", "list", "--data-dir", str(tmp_path / "d")])
    assert f"mnist            1x28x28   {tmp_path / 'd' / 'mnist'}" in result.output


def test_train_on_a_named_dataset_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    import cli
    from aeqprop.store import RunStore

    make_mnist(tmp_path / "data" / "mnist", n_train=40, n_test=20)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        cli.app,
        [
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            str(tmp_path / "data"),
            "--hidden",
            "8",
            "--epochs",
            "1",
            "--runs",
            str(runs),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    config = RunStore(str(runs), create=False).run(1)["config"]
    assert config["dataset"] == {
        "name": "mnist",
        "test_fraction": 0.2,
        "seed": None,
        "target_column": -1,
        "validation": None,
        "data_dir": str(tmp_path / "data"),
    }
    missing = CliRunner().invoke(cli.app, ["train", "--dataset", "kmnist", "--data-dir", str(tmp_path / "data")])
    assert missing.exit_code == 2 and "aeqprop data fetch kmnist" in missing.output
