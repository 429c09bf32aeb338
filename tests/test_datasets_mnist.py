"""MNIST lookup order and validation; missing or corrupt files give a clear DataError."""

import numpy as np
import pytest

from penalty_tf.datasets import DataError, find_file, load_mnist, search_dirs
from penalty_tf.datasets.mnist import validate_mnist


def _fake_mnist(path, **overrides):
    arrays = {"x_train": np.zeros((60000, 28, 28), np.uint8), "y_train": np.zeros(60000, np.uint8),
              "x_test": np.zeros((10000, 28, 28), np.uint8), "y_test": np.ones(10000, np.uint8)}
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def test_real_mnist_loads(shared_data_dir):
    mnist = load_mnist(shared_data_dir, download=False)
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_train.max() == 255
    assert list(mnist.y_test[:5]) == [7, 2, 1, 0, 4]
    assert np.bincount(mnist.y_train).min() > 5000


def test_lookup_order(tmp_path, monkeypatch):
    first, second, cache = tmp_path / "a", tmp_path / "b", tmp_path / "keras"
    for d in (first, second, cache / "datasets"):
        d.mkdir(parents=True)
        (d / "x.bin").write_bytes(b"1")
    monkeypatch.setenv("PENALTY_TF_DATA", str(second))
    monkeypatch.setenv("KERAS_HOME", str(cache))
    assert search_dirs(first) == [first, second, cache / "datasets"]
    assert find_file("x.bin", first) == first / "x.bin"
    assert find_file("x.bin", None) == second / "x.bin"
    monkeypatch.delenv("PENALTY_TF_DATA")
    assert find_file("x.bin", None) == cache / "datasets" / "x.bin"


def test_missing_file_names_the_file_and_the_places(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "nowhere"))
    monkeypatch.delenv("PENALTY_TF_DATA", raising=False)

    def failing_download():
        raise OSError("no network")

    with pytest.raises(DataError) as info:
        find_file("mnist.npz", tmp_path, download=failing_download, how_to_get="Get it from X.")
    message = str(info.value)
    assert "mnist.npz not found" in message and str(tmp_path / "mnist.npz") in message
    assert "download failed: OSError: no network" in message and "Get it from X." in message


def test_corrupt_and_wrong_files_are_rejected(tmp_path):
    truncated = tmp_path / "mnist.npz"
    _fake_mnist(truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated or not an .npz"):
        validate_mnist(truncated)
    with pytest.raises(DataError, match=r"x_train has shape \(100, 28, 28\)"):
        validate_mnist(_fake_mnist(tmp_path / "a.npz", x_train=np.zeros((100, 28, 28), np.uint8)))
    with pytest.raises(DataError, match="labels 0..9"):
        validate_mnist(_fake_mnist(tmp_path / "b.npz", y_test=np.full(10000, 12)))
    np.savez(tmp_path / "c.npz", x_train=np.zeros(3))
    with pytest.raises(DataError, match="keys .* missing"):
        validate_mnist(tmp_path / "c.npz")
    assert validate_mnist(_fake_mnist(tmp_path / "ok.npz")).y_test[0] == 1
