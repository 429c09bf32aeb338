"""Real MNIST digits written in the file formats of the datasets that are not on this machine.

For tests that run the Omniglot, CIFAR10 and SVHN pipelines on real images (where accuracy
means something) instead of random pixels:

* `omniglot_arrays`: the two arrays of ``x_omniglot_1.npy`` / ``y_omniglot_1.npy``
  (float32 (n, 28, 28, 1), stroke 1 and background 0 as MNIST / 255; class id =
  4 x digit + rotation index, rotations by 0, 90, 180, 270 degrees done here, as the
  Omniglot builder does them before the loader sees the file). Digits 0-4 are classes
  0-19, so ``--train-characters 5`` makes meta-train digits 0-4 and meta-test digits 5-9.
* `write_cifar10`: the ``cifar-10-batches-py`` pickles (five training batches and the
  test batch) of 32x32x3 uint8 images: each digit zero-padded to 32x32, grey tiled to
  3 channels.
* `write_svhn_mats`: ``train_32x32.mat`` / ``test_32x32.mat`` in the official "cropped
  digits" layout: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 with 10 meaning digit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pick_per_class(labels: np.ndarray, per_class: int, classes=range(10)) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class, class by class."""
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in classes])


def omniglot_arrays(x: np.ndarray, y: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """MNIST uint8 (n, 28, 28), labels 0..9 -> Omniglot-format (images, class ids), 40 classes
    of ``per_class`` images: class 4 d + r holds the first ``per_class`` images of digit d
    rotated by r x 90 degrees."""
    images, ids = [], []
    for digit in range(10):
        base = x[np.flatnonzero(y == digit)[:per_class]].astype(np.float32) / 255.0
        for r in range(4):
            images.append(np.rot90(base, k=r, axes=(1, 2)))
            ids.append(np.full(len(base), 4 * digit + r, np.int32))
    return np.concatenate(images)[..., None].astype(np.float32), np.concatenate(ids)


def to_rgb32(x: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) -> uint8 (n, 32, 32, 3): 2 zero pixels on every side, grey tiled."""
    padded = np.pad(np.asarray(x, np.uint8), ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=-1)


def write_cifar10(folder: Path, x_train, y_train, x_test, y_test) -> Path:
    """Write ``data_batch_1..5`` (the training digits split in 5 consecutive parts, so the
    loader's concatenation restores their order) and ``test_batch`` into ``folder``."""
    from penalty_tf.datasets.cifar10 import TEST_FILE, TRAIN_FILES, write_batch

    folder = Path(folder)
    images = to_rgb32(x_train)
    for name, part in zip(TRAIN_FILES, np.array_split(np.arange(len(images)), len(TRAIN_FILES))):
        write_batch(folder / name, images[part], y_train[part])
    write_batch(folder / TEST_FILE, to_rgb32(x_test), y_test)
    return folder


def write_svhn_mats(folder: Path, x_train, y_train, x_test, y_test) -> Path:
    """Write ``train_32x32.mat`` and ``test_32x32.mat`` (X (32, 32, 3, N) uint8, y (N, 1)
    uint8 with digit 0 stored as 10) into ``folder``."""
    from scipy import io

    from penalty_tf.files import atomic_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, x, y in (("train_32x32.mat", x_train, y_train), ("test_32x32.mat", x_test, y_test)):
        labels = np.where(np.asarray(y) == 0, 10, y).astype(np.uint8).reshape(-1, 1)
        with atomic_file(folder / name) as handle:
            io.savemat(handle, {"X": to_rgb32(x).transpose(1, 2, 3, 0), "y": labels})
    return folder
