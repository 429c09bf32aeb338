"""Build ``x_omniglot_1.npy`` / ``y_omniglot_1.npy`` from the resized Omniglot PNGs.

    python -m few_shot.omniglot_build --images DIR/omniglot_resized --out DATA_DIR

``--images`` is an ``<alphabet>/<character>/*.png`` tree of 28x28 greyscale images (all
50 alphabets of images_background and images_evaluation: 1,623 characters, 20 images
each). Each character becomes 4 classes (rotations 0, 90, 180, 270 degrees), giving
129,840 images and 6,492 classes. Listings are sorted (the original used the
filesystem's order; see penalty_tf/datasets/omniglot.py). A tree of another size is
accepted with a warning (tests use tiny trees).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from penalty_tf import files
from penalty_tf.paper import experiment


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="python -m few_shot.omniglot_build",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="the omniglot_resized directory")
    parser.add_argument("--out", default=".", help="directory for the two .npy files")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from penalty_tf.datasets import omniglot

    out = experiment.check_out_dir(Path(args.out))          # before reading the images
    report = None if args.quiet else (lambda name: print(f"  {name}", flush=True))
    data = omniglot.build_omniglot_arrays(args.images, progress=report)
    x_path = files.save_npy_atomic(out / omniglot.X_FILE, data.x)
    y_path = files.save_npy_atomic(out / omniglot.Y_FILE, data.y)
    characters = data.num_classes // 4
    if len(data.x) != omniglot.FULL_IMAGES or characters != omniglot.FULL_CHARACTERS:
        print(f"warning: {len(data.x)} images of {characters} characters; the full Omniglot has "
              f"{omniglot.FULL_IMAGES} images of {omniglot.FULL_CHARACTERS} characters", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {x_path} {data.x.shape} and {y_path} ({data.num_classes} classes)")
    return {"x": str(x_path), "y": str(y_path), "images": len(data.x), "classes": data.num_classes}


if __name__ == "__main__":
    experiment.run_main(main)
