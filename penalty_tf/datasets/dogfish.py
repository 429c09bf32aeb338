"""Koh & Liang's dog-vs-fish dataset and its InceptionV3 feature files (clean-label attack).

``dataset_dog-fish_train-900_test-300.npz`` holds ``X_train (N, H, W, 3)``, ``Y_train (N,)``,
``X_test``, ``Y_test``: images already in InceptionV3's input range [-1, 1] (no further
preprocessing) and integer labels 0/1. The real file has 299 x 299 images and, by its
name, 900 / 300 images per class. ``python -m poisoning.extract_features`` turns it into
``X_train_features_inception.npy`` and ``X_test_features_inception.npy`` ((N, 2048)
global-average-pooled InceptionV3 features), stored next to it.

Both loaders look for their files in ``--data-dir``, ``$PENALTY_TF_DATA`` and Keras' cache
(also in a ``dogfish_dataset/`` sub-directory of each, the original's layout), never
download, and raise `DataError` for a missing, truncated or malformed file.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from penalty_tf.datasets.lookup import DataError, find_file, read_npz

DOGFISH_FILE = "dataset_dog-fish_train-900_test-300.npz"
TRAIN_FEATURES = "X_train_features_inception.npy"
TEST_FEATURES = "X_test_features_inception.npy"
FEATURE_DIM = 2048
SUBDIRS = ("", "dogfish_dataset")
HOW_TO_GET = ("It is the dog-fish dataset of Koh & Liang (2017, 'Understanding black-box "
              "predictions via influence functions'), from their CodaLab worksheet linked in the "
              "original repository's README (hammlab/bilevel-penalty).")
#: Slack on the [-1, 1] range check (the file stores float32 values rounded from [-1, 1]).
RANGE_SLACK = 1e-3


class DogFish(NamedTuple):
    """Images float32 in [-1, 1], (N, H, W, 3); labels int64 in {0, 1}."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    path: Path


def find_dogfish(data_dir: Optional[str] = None) -> Path:
    return find_file(DOGFISH_FILE, data_dir, subdirs=SUBDIRS, how_to_get=HOW_TO_GET)


def load_dogfish(data_dir: Optional[str] = None, *, image_size: Optional[int] = None) -> DogFish:
    """Find, load and validate the dog-fish ``.npz`` (``image_size``: require H = W = it)."""
    return validate_dogfish(find_dogfish(data_dir), image_size=image_size)


def validate_dogfish(path: Path, *, image_size: Optional[int] = None) -> DogFish:
    """Read ``path``; check keys, shapes, ranges and labels; `DataError` if anything is off."""
    arrays = read_npz(path, ("X_train", "Y_train", "X_test", "Y_test"), "the dog-fish .npz",
                      f". {HOW_TO_GET}", f"get it again. {HOW_TO_GET}")
    for split in ("train", "test"):
        x, y = arrays[f"X_{split}"], arrays[f"Y_{split}"]
        if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2] or len(x) == 0:
            raise DataError(f"{path}: X_{split} has shape {x.shape}, expected (N, S, S, 3) images")
        if image_size is not None and x.shape[1] != image_size:
            raise DataError(f"{path}: X_{split} images are {x.shape[1]}x{x.shape[2]}, "
                            f"expected {image_size}x{image_size}")
        if not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"{path}: X_{split} has dtype {x.dtype}, expected float images in [-1, 1]")
        if y.shape != (len(x),):
            raise DataError(f"{path}: Y_{split} has shape {y.shape}, expected ({len(x)},)")
        if not np.all(np.isfinite(x)) or x.min() < -1 - RANGE_SLACK or x.max() > 1 + RANGE_SLACK:
            raise DataError(f"{path}: X_{split} values must be finite and in [-1, 1] "
                            f"(InceptionV3's input range), found [{x.min()}, {x.max()}]")
        if not np.all(np.isin(y, (0, 1))):
            raise DataError(f"{path}: Y_{split} must hold labels 0/1, found {np.unique(y)[:10]}")
    if arrays["X_train"].shape[1:] != arrays["X_test"].shape[1:]:
        raise DataError(f"{path}: train and test images differ in size")
    for split in ("train", "test"):
        if len(np.unique(arrays[f"Y_{split}"])) < 2:
            raise DataError(f"{path}: Y_{split} holds a single class; expected dogs and fish")
    return DogFish(arrays["X_train"].astype(np.float32), arrays["Y_train"].astype(np.int64),
                   arrays["X_test"].astype(np.float32), arrays["Y_test"].astype(np.int64), path)


def load_features(data_dir: Optional[str], n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """The two InceptionV3 feature files, checked against the image counts."""
    out = []
    for name, n in ((TRAIN_FEATURES, n_train), (TEST_FEATURES, n_test)):
        path = find_file(name, data_dir, subdirs=SUBDIRS,
                         how_to_get="Make it with: python -m poisoning.extract_features --data-dir DIR")
        try:
            features = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path} is truncated or not a .npy file ({error}); run "
                            "python -m poisoning.extract_features again") from error
        if features.shape != (n, FEATURE_DIM):
            raise DataError(f"{path}: features have shape {features.shape}, expected ({n}, "
                            f"{FEATURE_DIM}) for the {n} images of the dog-fish file; run "
                            "python -m poisoning.extract_features again")
        if not np.all(np.isfinite(features)):
            raise DataError(f"{path}: features contain NaN or Inf")
        out.append(features)
    return out[0], out[1]


def feature_paths(directory: Path) -> tuple[Path, Path]:
    """Where `poisoning.extract_features` writes the two feature files."""
    return Path(directory) / TRAIN_FEATURES, Path(directory) / TEST_FEATURES
