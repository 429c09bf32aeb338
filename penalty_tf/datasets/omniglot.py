"""Omniglot as the original's two arrays, and the builder that makes them from PNGs.

Files (docs/original.md §3.6.1): ``x_omniglot_1.npy`` float32 (n, 28, 28, 1), stroke pixels 1
and background 0; ``y_omniglot_1.npy`` int32 (n,), class ids. The full dataset has
32,460 images of 1,623 characters, each in 4 rotations: n = 129,840 and 6,492 classes,
with class id = 4 x (character index) + (rotation index). The first 1,200 characters
(4,800 classes) are meta-train, the other 423 (1,692 classes) meta-test.

`build_omniglot_arrays` makes the arrays from the ``omniglot_resized/<alphabet>/
<character>/*.png`` tree of 28x28 greyscale PNGs (the layout of common MAML
preprocessing): pixel = 1 - value / 255, each character's images rotated by 0, 90, 180
and 270 degrees with ``scipy.ndimage.rotate(..., reshape=False)`` (cubic spline, zero
padding; values may overshoot [0, 1] slightly, as in the original), each rotation its own
class.

Documented deviation: the original listed alphabets, characters and images in
``os.listdir`` order, which depends on the filesystem, so which 1,200 characters were
meta-train is not reproducible. The builder sorts every listing (and keeps only ``.png``
files), so the split is the same on every machine; it may differ from the authors' split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np

from penalty_tf.datasets.lookup import DataError, find_file

X_FILE = "x_omniglot_1.npy"
Y_FILE = "y_omniglot_1.npy"
IMAGE_SHAPE = (28, 28, 1)
ROTATIONS = (0, 90, 180, 270)
FULL_IMAGES = 129_840
FULL_CHARACTERS = 1_623
TRAIN_CHARACTERS = 1_200
#: How far pixels may lie outside [0, 1]: the builder's cubic-spline rotations overshoot a little.
PIXEL_SLACK = 0.5
HOW_TO_GET = ("Build the two files with `python -m few_shot.omniglot_build --images DIR/omniglot_resized "
              "--out DIR` from the 28x28 Omniglot PNGs (images_background + images_evaluation "
              "resized to 28x28, one folder per alphabet and character; see the README of "
              "few-shot-ssl-public or MAML's omniglot_resized).")


class Omniglot(NamedTuple):
    """Images float32 (n, 28, 28, 1) and class ids int32 (n,), 4 classes per character."""

    x: np.ndarray
    y: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1


def _listing(path: Path, keep: Callable[[Path], bool]) -> list[Path]:
    return sorted((p for p in path.iterdir() if not p.name.startswith(".") and keep(p)),
                  key=lambda p: p.name)


def build_omniglot_arrays(images_dir: os.PathLike | str,
                          progress: Optional[Callable[[str], None]] = None) -> Omniglot:
    """The two arrays from an ``<alphabet>/<character>/*.png`` tree (sorted listings).

    Raises `DataError` for a missing directory, an empty tree, a character without
    images, an unreadable image or one that is not 28x28.
    """
    from PIL import Image, UnidentifiedImageError
    from scipy import ndimage

    root = Path(images_dir)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory. {HOW_TO_GET}")
    alphabets = _listing(root, Path.is_dir)
    if not alphabets:
        raise DataError(f"{root} holds no alphabet folders (expected <alphabet>/<character>/*.png)")
    xs, ys, label = [], [], 0
    for alphabet in alphabets:
        if progress is not None:
            progress(alphabet.name)
        characters = _listing(alphabet, Path.is_dir)
        if not characters:
            raise DataError(f"{alphabet} holds no character folders")
        for character in characters:
            files = _listing(character, lambda p: p.is_file() and p.suffix.lower() == ".png")
            if not files:
                raise DataError(f"{character} holds no .png images")
            images = []
            for file in files:
                try:
                    with Image.open(file) as img:
                        pixels = np.asarray(img.convert("L"), np.float32)
                except (UnidentifiedImageError, OSError) as error:
                    raise DataError(f"{file} is not a readable image ({error})") from error
                if pixels.shape != IMAGE_SHAPE[:2]:
                    raise DataError(f"{file} is {pixels.shape[1]}x{pixels.shape[0]} pixels; "
                                    "expected 28x28 (use the resized Omniglot)")
                images.append(1.0 - pixels / 255.0)
            for angle in ROTATIONS:
                for img in images:
                    xs.append(ndimage.rotate(img, angle, reshape=False) if angle else img)
                    ys.append(label)
                label += 1
    x = np.stack(xs).astype(np.float32)[..., None]
    return Omniglot(x, np.asarray(ys, np.int32))


def save_omniglot_arrays(data: Omniglot, out_dir: os.PathLike | str) -> tuple[Path, Path]:
    """Write ``x_omniglot_1.npy`` and ``y_omniglot_1.npy`` (atomically) into ``out_dir``."""
    from penalty_tf.files import save_npy_atomic

    out = Path(out_dir)
    paths = [save_npy_atomic(out / name, array) for name, array in ((X_FILE, data.x), (Y_FILE, data.y))]
    return paths[0], paths[1]


def load_omniglot(data_dir: Optional[os.PathLike | str] = None) -> Omniglot:
    """Find, load and validate the two arrays (see `find_file` for where they are looked for)."""
    x_path = find_file(X_FILE, data_dir, subdirs=("", "omniglot"), how_to_get=HOW_TO_GET)
    y_path = find_file(Y_FILE, data_dir, subdirs=("", "omniglot"), how_to_get=HOW_TO_GET)
    return validate_omniglot(x_path, y_path)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{path} is truncated or not a .npy array ({error}); build it again") from error


def validate_omniglot(x_path: Path, y_path: Path) -> Omniglot:
    """Check dtypes, shapes, finiteness and the 4-rotations class structure."""
    x, y = _load_npy(Path(x_path)), _load_npy(Path(y_path))
    if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{x_path}: shape {x.shape}, expected (n, 28, 28, 1)")
    if x.dtype != np.float32:
        raise DataError(f"{x_path}: dtype {x.dtype}, expected float32")
    if y.shape != (x.shape[0],):
        raise DataError(f"{y_path}: shape {y.shape}, expected ({x.shape[0]},) to match {x_path}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{y_path}: dtype {y.dtype}, expected integer class ids")
    if len(y) == 0 or y.min() < 0:
        raise DataError(f"{y_path}: class ids must be >= 0 (and the file not empty)")
    classes = int(y.max()) + 1
    if classes % len(ROTATIONS) or len(np.unique(y)) != classes:
        raise DataError(f"{y_path}: expected class ids 0..C-1, all present, C a multiple of 4 "
                        f"(each character in 4 rotations); found {len(np.unique(y))} ids up to {classes - 1}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{x_path} holds NaN or infinite pixels")
    low, high = float(x.min()), float(x.max())
    if low < -PIXEL_SLACK or high > 1 + PIXEL_SLACK:
        raise DataError(f"{x_path}: pixels span [{low:g}, {high:g}], expected 0..1 (stroke 1, background 0)"
                        + (": they look like 0..255 values; divide by 255" if high > 2 else "")
                        + f". {HOW_TO_GET}")
    if len(x) and float(x.mean()) > 0.5:
        raise DataError(f"{x_path}: the mean pixel is {float(x.mean()):.2f}: the images look inverted "
                        "(background 1, strokes 0); the loader expects strokes 1 and background 0 (1 - x). "
                        f"{HOW_TO_GET}")
    return Omniglot(x, y.astype(np.int32))
