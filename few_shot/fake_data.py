"""Tiny generated datasets in the real file formats, for tests and for trying the scripts.

    python -m few_shot.fake_data --out /tmp/fake     # omniglot_resized/ PNG tree + mini-imagenet pickles

* `write_omniglot_tree`: ``<alphabet>/<character>/<image>.png``, 28x28 greyscale PNGs
  (white background, dark strokes, as the resized Omniglot), input of
  ``few_shot.omniglot_build``.
* `write_miniimagenet_pickles`: ``mini-imagenet-cache-{train,val,test}.pkl``, dicts with
  ``image_data`` uint8 (classes x m, 84, 84, 3) stored class by class and ``class_dict``
  (class name -> list of indices), as few-shot-ssl-public (m = 600 there).

Each class has its own mean brightness, so an encoder can in principle tell classes apart.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from penalty_tf.files import atomic_file


def write_omniglot_tree(root, *, alphabets: int = 2, characters: int = 3, images: int = 20,
                        seed: int = 0) -> Path:
    """Write a small PNG tree; directories are created in reverse name order (so that a
    builder relying on creation order rather than sorting would be caught)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for a in reversed(range(alphabets)):
        for c in reversed(range(characters)):
            folder = root / f"Alphabet_{a:02d}" / f"character{c + 1:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            stroke = rng.random((28, 28)) < 0.15 + 0.05 * c
            for i in reversed(range(images)):
                pixels = np.where(stroke ^ (rng.random((28, 28)) < 0.03), 0, 255).astype(np.uint8)
                with atomic_file(folder / f"{1000 + i:04d}_{i + 1:02d}.png") as handle:
                    Image.fromarray(pixels, mode="L").save(handle, format="PNG")
    return root


def miniimagenet_dict(classes: int, images_per_class: int, rng: np.random.Generator,
                      class_dict: bool = True) -> dict:
    base = rng.integers(0, 200, classes).astype(np.uint8)
    images = np.repeat(base, images_per_class)[:, None, None, None] + \
        rng.integers(0, 56, (classes * images_per_class, 84, 84, 3)).astype(np.uint8)
    data = {"image_data": images}
    if class_dict:
        data["class_dict"] = {f"n{k:08d}": list(range(k * images_per_class, (k + 1) * images_per_class))
                              for k in range(classes)}
    return data


def write_miniimagenet_pickles(directory, *, classes=None, images_per_class: int = 20,
                               seed: int = 0, class_dict: bool = True) -> Path:
    """Write the three pickles (default 6 / 2 / 5 classes for train / val / test)."""
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    classes = classes or {"train": 6, "val": 2, "test": 5}
    for split, n in classes.items():
        with atomic_file(directory / f"mini-imagenet-cache-{split}.pkl") as handle:
            pickle.dump(miniimagenet_dict(n, images_per_class, rng, class_dict), handle, protocol=2)
    return directory


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    write_omniglot_tree(out / "omniglot_resized", alphabets=3, characters=4)
    write_miniimagenet_pickles(out / "dataset_miniimagenet")
    print(f"wrote {out / 'omniglot_resized'} and {out / 'dataset_miniimagenet'}")


if __name__ == "__main__":
    main()
