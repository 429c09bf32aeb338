"""MNIST as the examples use it: flattened images in [0, 1] (float32) and int32 labels.

Training set = the first ``n_train`` rows of MNIST's training set, validation = the next
``n_val`` rows, test = the first ``n_test`` rows of MNIST's test set.
"""

import numpy as np

import penalty_tf as ptf


def flat(images: np.ndarray) -> np.ndarray:
    """``(n, 28, 28)`` uint8 images as ``(n, 784)`` float32 in [0, 1]."""
    return images.reshape(-1, 784).astype(np.float32) / 255.0


def load_splits(data_dir, n_train: int, n_val: int, n_test: int):
    """``(x, y)`` of the training, validation and test sets."""
    mnist = ptf.datasets.load_mnist(data_dir)
    x, y = flat(mnist.x_train[:n_train + n_val]), mnist.y_train[:n_train + n_val].astype(np.int32)
    test = flat(mnist.x_test[:n_test]), mnist.y_test[:n_test].astype(np.int32)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), test
