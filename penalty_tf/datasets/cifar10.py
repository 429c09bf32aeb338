"""CIFAR10 in Keras' own layout: the ``cifar-10-batches-py`` folder of the official Python
release (``data_batch_1`` … ``data_batch_5``, ``test_batch``: pickles holding ``b"data"``
(N, 3072) uint8 in channel-major order and ``b"labels"``).

The folder is looked for (`find_file`) in ``--data-dir``, ``$PENALTY_TF_DATA`` and Keras'
cache, directly or under ``cifar-10-batches-py/`` (Keras 2) or
``cifar-10-batches-py-target/cifar-10-batches-py/`` (Keras 3); only then is it downloaded
with Keras' downloader. Images are returned as Keras' ``cifar10.load_data`` returns them:
(N, 32, 32, 3) uint8, labels int64 0..9.

The official batches hold 10,000 images each; files with fewer rows (tests) are accepted
as long as every batch is well-formed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from penalty_tf.datasets.lookup import DataError, find_file

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SUBDIRS = ("cifar-10-batches-py", "cifar-10-batches-py-target/cifar-10-batches-py", "")
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"


class Cifar10(NamedTuple):
    x_train: np.ndarray  # (N, 32, 32, 3) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray


def _download() -> Path:
    import keras

    path = Path(keras.utils.get_file(fname="cifar-10-batches-py-target", origin=CIFAR10_URL, extract=True))
    for candidate in (path / "cifar-10-batches-py" / TRAIN_FILES[0], path / TRAIN_FILES[0]):
        if candidate.is_file():
            return candidate
    raise DataError(f"the CIFAR10 download in {path} has no {TRAIN_FILES[0]}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → images (N, 32, 32, 3) uint8 and labels (N,) int64; `DataError` if malformed."""
    try:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
    except FileNotFoundError:
        raise DataError(f"{path} is missing: the cifar-10-batches-py folder must hold "
                        f"{', '.join(TRAIN_FILES)} and {TEST_FILE}") from None
    except Exception as error:  # truncated / not a pickle
        raise DataError(f"{path} is truncated or not a CIFAR10 batch pickle ({type(error).__name__}: "
                        f"{error}); delete the cifar-10-batches-py folder and download it again") from error
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR10 batch (a dict with data and labels)")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path} is not a CIFAR10 batch: keys 'data' and 'labels' are required, found "
                        f"{sorted(str(k) for k in batch)}")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: data has shape {data.shape} and dtype {data.dtype}, "
                        "expected (N, 3072) uint8")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer) \
            or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"{path}: labels must be {data.shape[0]} integers in 0..9")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def load_cifar10(data_dir: Optional[str] = None, *, download: bool = True) -> Cifar10:
    """Load and validate CIFAR10 (see the module docstring for where it is looked for)."""
    first = find_file(TRAIN_FILES[0], data_dir, subdirs=SUBDIRS, download=_download if download else None,
                      how_to_get=f"It is the cifar-10-batches-py folder of {CIFAR10_URL} "
                                 "(Keras downloads it into ~/.keras/datasets).")
    folder = first.parent
    parts = [read_batch(folder / name) for name in TRAIN_FILES]
    x_test, y_test = read_batch(folder / TEST_FILE)
    return Cifar10(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   x_test, y_test)


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write a batch file in the official format (used by the tests to build tiny datasets)."""
    images = np.asarray(images, np.uint8)
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    from penalty_tf.files import atomic_file

    with atomic_file(path) as handle:
        pickle.dump({b"batch_label": b"synthetic", b"labels": [int(v) for v in labels], b"data": data,
                     b"filenames": [b"x.png"] * len(images)}, handle, protocol=2)
