"""InceptionV3 features of the dog-fish images (the original's extract_inception_features.py).

    python -m poisoning.extract_features --data-dir DIR [--weights PATH] [--batch-size 100]

Reads ``dataset_dog-fish_train-900_test-300.npz`` (found in ``--data-dir``,
``$PENALTY_TF_DATA``, Keras' cache, or their ``dogfish_dataset/`` sub-directories), runs the
frozen InceptionV3 (ImageNet weights, no top, global average pooling, inference mode; the
images are already in [-1, 1] and are not preprocessed further) in batches, and writes
``X_train_features_inception.npy`` and ``X_test_features_inception.npy`` ((N, 2048),
float64 as the original) next to the ``.npz`` (or into ``--out``).

Deviation: the original processed floor(N / 100) batches of 100 and would have left the
features of a remainder as zeros; every image is processed here (no difference for the
real 1,800 / 600 images). ``--weights PATH`` loads an offline weights file; without it
the ImageNet weights come from Keras' cache or a download, and a clear error says what to
do when neither works.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from penalty_tf import files
from penalty_tf.paper import experiment

NAME = "poisoning.extract_features"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m poisoning.extract_features",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="directory holding the dog-fish .npz")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where to write the two .npy files (default: beside the .npz)")
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' (Keras cache or download), a weights file, or 'none' "
                             "(random weights, for tests)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--quiet", action="store_true")
    return parser


def extract(model, images: np.ndarray, batch_size: int, *, quiet: bool) -> np.ndarray:
    """Features of ``images`` in batches (inference mode), float64 like the original's."""
    import tensorflow as tf

    size = images.shape[1:]
    call = tf.function(lambda x: model(x, training=False), autograph=False,  # traced once
                       input_signature=[tf.TensorSpec((None,) + tuple(size), tf.float32)])
    out = np.zeros((len(images), model.output_shape[-1]), np.float64)
    bar = experiment.progress(len(images), quiet=quiet, unit_name="image")
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        out[start:start + len(batch)] = call(tf.constant(batch, tf.float32)).numpy()
        bar.update(start + len(batch))
    return out


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise experiment.ExperimentError(f"--batch-size must be >= 1, got {args.batch_size}")
    from penalty_tf.datasets import dogfish
    from poisoning.inception import feature_model

    start = time.perf_counter()
    data = dogfish.load_dogfish(args.data_dir)
    out = experiment.check_out_dir(Path(args.out) if args.out else data.path.parent)   # before the model
    model = feature_model(args.weights, image_size=data.x_train.shape[1])
    features = {}
    for split, images in (("train", data.x_train), ("test", data.x_test)):
        if not args.quiet:
            print(f"{split}: {len(images)} images")
        features[split] = extract(model, images, args.batch_size, quiet=args.quiet)
    train_path, test_path = dogfish.feature_paths(out)
    for path, array in ((train_path, features["train"]), (test_path, features["test"])):
        files.save_npy_atomic(path, array)
    wall = time.perf_counter() - start
    if not args.quiet:
        print(f"wrote {train_path} {features['train'].shape} and {test_path} "
              f"{features['test'].shape} in {wall:.1f} s")
    return {"train_features": str(train_path), "test_features": str(test_path),
            "train_shape": features["train"].shape, "test_shape": features["test"].shape,
            "wall_time_s": wall}


if __name__ == "__main__":
    experiment.run_main(main)
