"""The classifiers of the importance-learning experiments (docs/original.md §3.0.7), returning logits.

* `mnist_softmax_regression` — 784 → Dense(10): 7,850 parameters (small-scale hyper-cleaning).
* `mnist_cnn` — the original's ``MNIST_keras_model.py`` CNN: 1,389,578 parameters.
* `cifar10_cnn` — ``cifar10_keras_model.py``: 1,172,410 parameters.
* `svhn_cnn` — ``svhn_keras_model.py`` (greyscale 32×32×1 input): 1,340,650 parameters.
* `wide_resnet` — WRN-d-k (Zagoruyko & Komodakis) for the comparison with Ren et al., which
  the original never shipped; WRN-28-10 has 36.5M parameters.

Every model ends with the last Dense layer's output (the pre-softmax logits the original
took through cleverhans' ``get_logits``); the softmax lives only in the loss.

Dropout: the original Keras CNNs contain Dropout layers, but its hand-written
``session.run`` loops never fed Keras' learning-phase flag, so dropout was a no-op in every
training and evaluation step (docs/original.md §0.2). The layers are kept here so that the
architectures read like the original, and the importance-learning code always calls the
models with ``training=False``, which keeps them inactive. (Calling a model with
``training=True``, e.g. through ``model.fit``, would enable dropout and be unfaithful.)
Initialisers are Keras' defaults (Glorot-uniform kernels, zero biases), as in the original.
"""

from __future__ import annotations

import keras
from keras import layers

#: Parameter counts of the original models (checked by the tests).
PARAMETER_COUNTS = {"mnist_softmax": 7_850, "mnist_cnn": 1_389_578, "cifar10_cnn": 1_172_410,
                    "svhn_cnn": 1_340_650}


def mnist_softmax_regression(name: str = "mnist_softmax") -> keras.Model:
    """Softmax regression on flattened MNIST: input (784,) → 10 logits."""
    inputs = keras.Input((784,))
    return keras.Model(inputs, layers.Dense(10)(inputs), name=name)


def mnist_cnn(name: str = "mnist_cnn") -> keras.Model:
    """The MNIST CNN, input (28, 28, 1) → 10 logits (dropout inactive, see module doc)."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(64, 5, padding="valid", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Conv2D(128, 5, padding="valid", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(256, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10),
    ], name=name)


def cifar10_cnn(name: str = "cifar10_cnn") -> keras.Model:
    """The CIFAR10 CNN, input (32, 32, 3) → 10 logits (dropout inactive, see module doc)."""
    stack = [keras.Input((32, 32, 3))]
    for filters in (48, 96, 192):
        stack += [layers.Conv2D(filters, 3, padding="same"), layers.Activation("relu"),
                  layers.Conv2D(filters, 3, padding="valid"), layers.Activation("relu"),
                  layers.MaxPooling2D(2), layers.Dropout(0.25)]
    stack += [layers.Flatten(),
              layers.Dense(512), layers.Activation("relu"), layers.Dropout(0.5),
              layers.Dense(256), layers.Activation("relu"), layers.Dropout(0.5),
              layers.Dense(10)]
    return keras.Sequential(stack, name=name)


def svhn_cnn(name: str = "svhn_cnn") -> keras.Model:
    """The SVHN CNN, input (32, 32, 1) greyscale in [0, 255] → 10 logits."""
    stack = [keras.Input((32, 32, 1))]
    for filters in (32, 64, 128):
        stack += [layers.Conv2D(filters, 3, padding="same", activation="relu"),
                  layers.Conv2D(filters, 3, padding="same", activation="relu"),
                  layers.MaxPooling2D(2), layers.Dropout(0.3)]
    stack += [layers.Flatten(), layers.Dense(512, activation="relu"), layers.Dropout(0.3),
              layers.Dense(10)]
    return keras.Sequential(stack, name=name)


def wide_resnet(depth: int = 28, width: int = 10, input_shape=(32, 32, 3), num_classes: int = 10,
                name: str | None = None) -> keras.Model:
    """WRN-depth-width with pre-activation basic blocks (Zagoruyko & Komodakis 2016).

    ``depth = 6n + 4``; three groups of n blocks with 16k, 32k, 64k channels (strides 1, 2,
    2), BN-ReLU before each 3×3 convolution, 1×1 projection shortcuts where the shape
    changes, then BN-ReLU, global average pooling and Dense logits. No dropout (as Ren et
    al.'s WRN-28-10 baseline). BatchNorm has moving statistics: call with ``training=False``
    to use them, ``training=True`` for batch statistics.
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n + 4 >= 10, got {depth}")
    if width < 1:
        raise ValueError(f"WRN width must be >= 1, got {width}")
    n = (depth - 4) // 6
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    channels = 16
    for group, (out_channels, stride) in enumerate(((16 * width, 1), (32 * width, 2), (64 * width, 2))):
        for block in range(n):
            s = stride if block == 0 else 1
            pre = layers.Activation("relu")(layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x))
            shortcut = x
            if s != 1 or channels != out_channels:
                shortcut = layers.Conv2D(out_channels, 1, strides=s, use_bias=False)(pre)
            y = layers.Conv2D(out_channels, 3, strides=s, padding="same", use_bias=False)(pre)
            y = layers.Activation("relu")(layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(y))
            y = layers.Conv2D(out_channels, 3, padding="same", use_bias=False)(y)
            x = layers.Add()([shortcut, y])
            channels = out_channels
    x = layers.Activation("relu")(layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x))
    x = layers.GlobalAveragePooling2D()(x)
    logits = layers.Dense(num_classes)(x)
    return keras.Model(inputs, logits, name=name or f"wrn_{depth}_{width}")


BUILDERS = {"mnist_softmax": mnist_softmax_regression, "mnist_cnn": mnist_cnn,
            "cifar10_cnn": cifar10_cnn, "svhn_cnn": svhn_cnn}


def build(name: str) -> keras.Model:
    """A model of `BUILDERS` by name."""
    try:
        return BUILDERS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(BUILDERS)}") from None
