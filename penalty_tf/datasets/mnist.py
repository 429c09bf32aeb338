"""MNIST in Keras' format: ``mnist.npz`` with x_train (60000, 28, 28) uint8, y_train,
x_test (10000, 28, 28), y_test."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from penalty_tf.datasets.lookup import DataError, find_file, read_npz

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}


class Mnist(NamedTuple):
    """The official split, as stored: images uint8 in [0, 255], labels int in 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _download() -> Path:
    import keras

    return Path(keras.utils.get_file("mnist.npz", origin=MNIST_URL))


def load_mnist(data_dir: Optional[str] = None, *, download: bool = True) -> Mnist:
    """Load and validate ``mnist.npz`` (see `find_file` for where it is looked for)."""
    path = find_file("mnist.npz", data_dir, download=_download if download else None,
                     how_to_get=f"It is Keras' MNIST file, from {MNIST_URL}.")
    return validate_mnist(path)


def validate_mnist(path: Path) -> Mnist:
    """Read ``path`` and check keys, shapes, dtypes and ranges; `DataError` if anything is off."""
    arrays = read_npz(path, sorted(SHAPES), "Keras' mnist.npz", "", "delete it and download it again")
    for key, shape in SHAPES.items():
        if arrays[key].shape != shape:
            raise DataError(f"{path}: {key} has shape {arrays[key].shape}, expected {shape}")
    for key in ("x_train", "x_test"):
        if arrays[key].dtype != np.uint8:
            raise DataError(f"{path}: {key} has dtype {arrays[key].dtype}, expected uint8")
    for key in ("y_train", "y_test"):
        y = arrays[key]
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 9:
            raise DataError(f"{path}: {key} must hold integer labels 0..9")
    return Mnist(**arrays)
