import numpy as np
import pytest

from aeqprop.data import BUNDLED, load_dataset, stratified_split
from aeqprop.errors import DataError


@pytest.mark.parametrize(
    "name,n_features,n_classes", [("digits", 64, 10), ("iris", 4, 3), ("wine", 13, 3), ("breast_cancer", 30, 2)]
)
def test_bundled_datasets_are_split_and_scaled(name, n_features, n_classes):
    d = load_dataset(name, test_fraction=0.25, seed=1)
    assert name in BUNDLED
    assert d.n_features == n_features and d.n_classes == n_classes
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    assert 0.0 <= d.x_test.min() and d.x_test.max() <= 1.0
    total = len(d.x_train) + len(d.x_test)
    assert abs(len(d.x_test) / total - 0.25) < 0.02
    assert np.array_equal(d.y_train.argmax(1), d.labels_train)


def test_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(4), [40, 20, 100, 8])
    train, test = stratified_split(labels, 0.25, seed=3)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels)
    assert [int(np.sum(labels[test] == c)) for c in range(4)] == [10, 5, 25, 2]
    again = stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(stratified_split(labels, 0.25, seed=4)[1], test)


def test_csv_and_npz_files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    y = np.repeat([2, 5, 7], 10)
    csv = tmp_path / "d.csv"
    np.savetxt(csv, np.column_stack([x, y]), delimiter=",", header="a,b,c,label", comments="")
    d = load_dataset(str(csv), seed=0)
    assert d.n_features == 3 and d.n_classes == 3 and len(d.x_train) + len(d.x_test) == 30
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x, y=y)
    assert load_dataset(str(npz)).n_classes == 3


def test_nan_in_a_data_file_is_refused_with_its_place(tmp_path):
    table = np.ones((10, 3))
    table[:, -1] = np.arange(10) % 2
    table[4, 1] = np.nan
    path = tmp_path / "bad.csv"
    np.savetxt(path, table, delimiter=",")
    with pytest.raises(DataError, match="row 4, column 1"):
        load_dataset(str(path))


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(DataError, match="valid: digits, iris, wine, breast_cancer"):
        load_dataset("mnist-but-typo")
