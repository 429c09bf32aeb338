"""Mini-ImageNet from the few-shot-ssl-public pickles (Ren et al. 2018).

Files: ``mini-imagenet-cache-{train,val,test}.pkl``, each a pickled dict whose key
``image_data`` is a uint8 array (classes x 600, 84, 84, 3) with the images stored class by
class in contiguous blocks of 600, and (in the release) ``class_dict`` mapping each class
name to the list of its image indices. Train has 64 classes, val 16, test 20 (Ravi &
Larochelle's split). The original used label = index // 600 without checking; here the
block structure is checked against ``class_dict`` when present.

Python 3 needs ``encoding="latin1"`` to unpickle the Python 2 pickles. Memory: the images
stay uint8 (train 38,400 images = 0.8 GB) and become float32 / 255 only when a task is
sampled; the original divided whole splits by 255 into float64 arrays (about 10 GB).
The validation split is not used by the experiments (the original loaded it but never
used it), so the experiments do not load it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from penalty_tf.datasets.lookup import DataError, find_file

IMAGES_PER_CLASS = 600
IMAGE_SHAPE = (84, 84, 3)
SPLIT_CLASSES = {"train": 64, "val": 16, "test": 20}
HOW_TO_GET = ("Download mini-imagenet-cache-{train,val,test}.pkl as linked from "
              "https://github.com/renmengye/few-shot-ssl-public (section Mini-ImageNet).")


class MiniImageNetSplit(NamedTuple):
    """uint8 images (n, 84, 84, 3) and labels index // images_per_class (int32)."""

    images: np.ndarray
    labels: np.ndarray


def split_filename(split: str) -> str:
    return f"mini-imagenet-cache-{split}.pkl"


def load_miniimagenet_split(split: str, data_dir: Optional[os.PathLike | str] = None, *,
                            images_per_class: int = IMAGES_PER_CLASS) -> MiniImageNetSplit:
    """Find and load one split (``train``, ``val`` or ``test``); `DataError` when it is
    missing or malformed. ``images_per_class`` is 600 for the real files (smaller only for
    generated test files)."""
    if split not in SPLIT_CLASSES:
        raise ValueError(f"split must be one of {list(SPLIT_CLASSES)}, got {split!r}")
    path = find_file(split_filename(split), data_dir,
                     subdirs=("", "dataset_miniimagenet", "miniimagenet", "mini-imagenet"),
                     how_to_get=HOW_TO_GET)
    return read_miniimagenet_pickle(path, images_per_class=images_per_class)


def read_miniimagenet_pickle(path: os.PathLike | str, *,
                             images_per_class: int = IMAGES_PER_CLASS) -> MiniImageNetSplit:
    """Unpickle (latin1) and validate one few-shot-ssl-public file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, ImportError,
            IndexError, TypeError) as error:
        raise DataError(f"{path} is truncated or not a few-shot-ssl-public pickle "
                        f"({type(error).__name__}: {error}); download it again") from error
    if not isinstance(data, dict) or "image_data" not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: expected a dict with key 'image_data', found {keys}")
    images = data["image_data"]
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        shape = getattr(images, "shape", type(images).__name__)
        raise DataError(f"{path}: image_data has shape {shape}, expected (n, 84, 84, 3)")
    if images.dtype != np.uint8:
        raise DataError(f"{path}: image_data has dtype {images.dtype}, expected uint8")
    n = images.shape[0]
    if n == 0 or n % images_per_class:
        raise DataError(f"{path}: {n} images is not a positive multiple of {images_per_class} "
                        "images per class (labels are index // images per class)")
    if "class_dict" in data:
        check_class_blocks(data["class_dict"], n, images_per_class, path)
    labels = (np.arange(n) // images_per_class).astype(np.int32)
    return MiniImageNetSplit(images, labels)


def check_class_blocks(class_dict, n: int, images_per_class: int, path: Path) -> None:
    """Every class's indices must be one block ``[k * m, (k + 1) * m)`` and the blocks
    must cover the n images, so that label = index // m is right."""
    if not isinstance(class_dict, dict):
        raise DataError(f"{path}: class_dict is a {type(class_dict).__name__}, expected a dict")
    if len(class_dict) * images_per_class != n:
        raise DataError(f"{path}: class_dict has {len(class_dict)} classes for {n} images "
                        f"({images_per_class} per class expected)")
    seen = set()
    for name, indices in class_dict.items():
        idx = np.sort(np.asarray(indices, np.int64))
        start = int(idx[0]) if len(idx) else -1
        if (len(idx) != images_per_class or start % images_per_class
                or not np.array_equal(idx, np.arange(start, start + images_per_class))):
            raise DataError(f"{path}: the images of class {name!r} are not one contiguous block "
                            f"of {images_per_class}: label = index // {images_per_class} would be wrong")
        seen.add(start // images_per_class)
    if len(seen) != len(class_dict):
        raise DataError(f"{path}: two classes of class_dict share a block of images")
