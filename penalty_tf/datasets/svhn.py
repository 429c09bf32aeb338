"""SVHN: the official "Format 2: cropped digits" MATLAB files and the HDF5 file the original's
``pre_process_svhn_data.py`` made from them (docs/original.md §3.4.1).

`preprocess_svhn` reads ``train_32x32.mat`` and ``test_32x32.mat`` (keys ``X`` (32, 32, 3, N)
uint8, ``y`` (N, 1) with labels 1..10, 10 meaning digit 0; the *extra* set is not used) and
writes, as the original:

* validation = a class-balanced random subsample of ``val_per_class`` (100) training images
  per class (classes in sorted order, without replacement), removed from the training set:
  sizes 72,257 / 1,000 / 26,032 on the real files;
* ``SVHN_single_grey_without_extra.h5``: greyscale ``0.2989 R + 0.5870 G + 0.1140 B`` as
  float32 (N, 32, 32, 1), **not scaled** (values 0..255), one-hot float64 labels (N, 10);
* ``SVHN_single_without_extra.h5``: the colour uint8 images with the same labels;

each with datasets ``X_train, y_train, X_val, y_val, X_test, y_test``. The original drew the
validation subsample unseeded; here it comes from the given NumPy generator.
`load_svhn_grey` reads and validates the greyscale file.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from penalty_tf.datasets.lookup import DataError, find_file
from penalty_tf.files import publish_file

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
GREY_FILE = "SVHN_single_grey_without_extra.h5"
COLOUR_FILE = "SVHN_single_without_extra.h5"
KEYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")
GREY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140])


class Svhn(NamedTuple):
    x_train: np.ndarray  # (N, 32, 32, 1) float32 in [0, 255]
    y_train: np.ndarray  # (N,) int64 0..9
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A ``*_32x32.mat`` file → images (N, 32, 32, 3) uint8 and labels (N,) in 0..9 (10 → 0)."""
    from scipy import io

    if not Path(path).is_file():
        raise DataError(f"{path} not found. Download {Path(path).name} (Format 2: cropped digits) "
                        f"from {SVHN_URL} into that directory.")
    try:
        mat = io.loadmat(path)
    except Exception as error:
        raise DataError(f"{path} is truncated or not a MATLAB file ({type(error).__name__}: {error}); "
                        f"download it again from {SVHN_URL}") from error
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} is not an SVHN cropped-digits file: keys X and y are required, "
                        f"found {sorted(k for k in mat if not k.startswith('__'))}")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: X has shape {x.shape} and dtype {x.dtype}, expected (32, 32, 3, N) uint8")
    y = y.reshape(-1)
    if y.shape[0] != x.shape[3] or y.min() < 1 or y.max() > 10:
        raise DataError(f"{path}: y must hold {x.shape[3]} labels in 1..10")
    labels = y.astype(np.int64)
    labels[labels == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), labels


def to_grey(images: np.ndarray) -> np.ndarray:
    """RGB uint8 (N, 32, 32, 3) → float32 (N, 32, 32, 1), unscaled, as the original."""
    return np.dot(images, GREY_WEIGHTS)[..., None].astype(np.float32)


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Dense float64 one-hot (N, 10) (the original used scikit-learn's OneHotEncoder)."""
    out = np.zeros((len(labels), 10), np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def preprocess_svhn(mat_dir: Path, out_dir: Path, rng: np.random.Generator,
                    val_per_class: int = 100) -> dict[str, tuple]:
    """Write the two HDF5 files into ``out_dir``; return the shapes of the grey datasets."""
    import h5py

    x_train, y_train = read_mat(Path(mat_dir) / "train_32x32.mat")
    x_test, y_test = read_mat(Path(mat_dir) / "test_32x32.mat")
    total = len(x_train) + len(x_test)
    val_idx = []
    for c in range(10):
        members = np.flatnonzero(y_train == c)
        if len(members) < val_per_class:
            raise DataError(f"train_32x32.mat has {len(members)} images of class {c}, fewer than the "
                            f"{val_per_class} the validation set needs")
        val_idx.append(rng.choice(members, val_per_class, replace=False))
    val_idx = np.concatenate(val_idx)
    keep = np.setdiff1d(np.arange(len(x_train)), val_idx)
    parts = {"train": (x_train[keep], y_train[keep]), "val": (x_train[val_idx], y_train[val_idx]),
             "test": (x_test, y_test)}
    assert sum(len(p[1]) for p in parts.values()) == total   # 99,289 on the real files
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shapes = {}
    # Each file is written in a private staging folder and moved onto its name when complete
    # (atomic: no half-written file under the final name; no fixed temporary name shared by
    # two runs); a kill leaves only the staging folder, which the next run does not reuse.
    staging = Path(tempfile.mkdtemp(prefix=".svhn_staging.", dir=out_dir))
    try:
        for name, convert in ((COLOUR_FILE, lambda x: x), (GREY_FILE, to_grey)):
            with h5py.File(staging / name, "w") as h5:
                for split, (x, y) in parts.items():
                    h5.create_dataset(f"X_{split}", data=convert(x))
                    h5.create_dataset(f"y_{split}", data=one_hot(y))
                    if name == GREY_FILE:
                        shapes[f"X_{split}"] = h5[f"X_{split}"].shape
            publish_file(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return shapes


def load_svhn_grey(data_dir: Optional[str] = None) -> Svhn:
    """Read and validate ``SVHN_single_grey_without_extra.h5``."""
    import h5py

    path = find_file(GREY_FILE, data_dir,
                     how_to_get=("Make it with `python -m importance_learning.svhn_preprocess --data-dir D` "
                                 f"from train_32x32.mat and test_32x32.mat ({SVHN_URL})."))
    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in KEYS if k not in h5]
            if missing:
                raise DataError(f"{path}: datasets {missing} are missing; re-run svhn_preprocess")
            arrays = {k: np.asarray(h5[k]) for k in KEYS}
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{path} is truncated or not an HDF5 file ({type(error).__name__}: {error}); "
                        "re-run svhn_preprocess") from error
    out = {}
    for split in ("train", "val", "test"):
        x, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
        if x.ndim != 4 or x.shape[1:] != (32, 32, 1):
            raise DataError(f"{path}: X_{split} has shape {x.shape}, expected (N, 32, 32, 1) greyscale")
        if y.shape != (len(x), 10):
            raise DataError(f"{path}: y_{split} has shape {y.shape}, expected ({len(x)}, 10) one-hot")
        if len(x) and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 255):
            raise DataError(f"{path}: X_{split} must hold unscaled grey values in [0, 255]")
        if len(x) and x.max() <= 1:
            raise DataError(f"{path}: X_{split} values are in [{x.min():g}, {x.max():g}]: the file looks already "
                            "scaled to [0, 1], but the experiments expect unscaled grey values 0..255 (as the "
                            "original; its learning rates are tuned for them); re-run svhn_preprocess")
        if len(y) and not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise DataError(f"{path}: y_{split} must be one-hot rows (one 1 and nine 0s per image); "
                            "re-run svhn_preprocess")
        out[f"x_{split}"] = x.astype(np.float32)
        out[f"y_{split}"] = np.argmax(y, axis=1).astype(np.int64)
    return Svhn(**out)
