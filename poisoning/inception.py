"""The frozen InceptionV3 feature map of the clean-label attack (docs/original.md §3.11).

``feature_model(weights, image_size)`` = `keras.applications.InceptionV3` without its top,
followed by global average pooling (2048-d features), all layers frozen, called in
inference mode (BatchNorm uses its moving statistics, as the original's Keras learning
phase did). ``weights`` is ``"imagenet"`` (Keras' cache, else a download), a path to a
weights file (offline), or ``None`` (random weights: tests only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from penalty_tf.paper.experiment import ExperimentError

WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
               + WEIGHTS_FILE)
#: InceptionV3's smallest input size.
MIN_SIZE = 75


def _cached_imagenet_weights() -> Optional[Path]:
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
    path = home / "models" / WEIGHTS_FILE
    return path if path.is_file() else None


def feature_model(weights: Optional[str] = "imagenet", image_size: int = 299):
    """The frozen feature map ``images (N, S, S, 3) in [-1, 1] -> (N, 2048)``.

    Raises `ExperimentError` with what to do when the weights cannot be had.
    """
    import keras

    if image_size < MIN_SIZE:
        raise ExperimentError(f"InceptionV3 needs images of at least {MIN_SIZE}x{MIN_SIZE}, "
                              f"got {image_size}x{image_size}")
    source: Optional[str] = None
    if weights is None or str(weights).lower() == "none":
        source = None
    elif str(weights) == "imagenet":
        cached = _cached_imagenet_weights()
        source = str(cached) if cached is not None else "imagenet"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ExperimentError(f"--weights {weights}: no such file. Give the path of the "
                                  f"InceptionV3 no-top weights ({WEIGHTS_FILE}, from {WEIGHTS_URL}) "
                                  "or a Keras .weights.h5 file of the same architecture.")
        source = str(path)
    try:
        model = keras.applications.InceptionV3(include_top=False, weights=None,
                                               input_shape=(image_size, image_size, 3),
                                               pooling="avg")
        if source == "imagenet":
            path = keras.utils.get_file(WEIGHTS_FILE, WEIGHTS_URL, cache_subdir="models")
            model.load_weights(path)
        elif source is not None:
            model.load_weights(source)
    except ExperimentError:
        raise
    except Exception as error:  # no network, wrong file, wrong architecture
        what = "download the ImageNet weights" if source == "imagenet" else f"load {source}"
        raise ExperimentError(
            f"could not {what} for InceptionV3 ({type(error).__name__}: {str(error)[:300]}). "
            f"Download {WEIGHTS_URL} where you have network access and pass --weights PATH "
            f"(or put it in ~/.keras/models/).") from error
    model.trainable = False
    for layer in model.layers:
        layer.trainable = False
    return model
