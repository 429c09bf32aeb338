"""Dataset distillation on MNIST: learn 20 images (two per class, pixels in [0, 1]) such that
a linear softmax classifier trained on them alone classifies real digits.

    u = the images X_s (20 x 784, box [0, 1]), their labels fixed (0, 0, 1, 1, ..., 9, 9);
    v = (W, b) of a linear softmax classifier (784 x 10 + 10);
    g(u, v) = CE(softmax(X_s W + b), y_s) + (wd / 2) |W|^2          (train on the 20 images)
    f(u, v) = CE(softmax(X_r W + b), y_r) on a minibatch of real training images.

The L2 term makes g strongly convex in v (H_vv >= wd I), so v*(u) is unique and the exact
hypergradient is well defined; with wd small, H_vv is very ill-conditioned: its range is
spanned by the 20 images (rank <= 200 of the 7,850 dimensions), every other direction has
curvature wd. That is what makes the problem hard for methods that approximate
H_vv^-1 implicitly (see docs/which_solver.md).

Quality: `refit_accuracy`, the test accuracy of a classifier trained from zero on the 20
images alone (Newton's method on g, exact), which is what distillation is for; and
`lower_accuracy`, the test accuracy of the solver's own v.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf.datasets import mnist as mnist_data

IMAGES_PER_CLASS = 2
CLASSES = 10
PIXELS = 784


class Distillation(NamedTuple):
    problem: ptf.BilevelProblem
    images: tf.Variable          # u
    weights: tf.Variable         # W
    bias: tf.Variable            # b
    labels: tf.Tensor            # y_s
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    weight_decay: float


def _as_float(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, np.float32) / 255.0).reshape(len(x), PIXELS)


def build(seed: int = 0, *, weight_decay: float = 1e-3, data_dir: Optional[str] = None,
          init: str = "noise") -> Distillation:
    """The distillation problem. ``init``: ``"noise"`` (pixels Uniform[0, 1]) or ``"real"``
    (two random training images of each class)."""
    data = mnist_data.load_mnist(data_dir, download=False)
    x_train, y_train = _as_float(data.x_train), np.asarray(data.y_train, np.int32)
    x_test, y_test = _as_float(data.x_test), np.asarray(data.y_test, np.int32)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES, dtype=np.int32), IMAGES_PER_CLASS)
    if init == "noise":
        start = rng.uniform(0.0, 1.0, size=(len(labels), PIXELS))
    elif init == "real":
        start = np.stack([x_train[rng.choice(np.flatnonzero(y_train == c))] for c in labels])
    else:
        raise ValueError(f"init must be 'noise' or 'real', got {init!r}")
    images = tf.Variable(start.astype(np.float32), name="distilled_images")
    weights = tf.Variable(tf.zeros([PIXELS, CLASSES]), name="W")
    bias = tf.Variable(tf.zeros([CLASSES]), name="b")
    y_s = tf.constant(labels)

    def lower_loss(batch: Any) -> tf.Tensor:
        logits = images @ weights + bias
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y_s, logits))
        return ce + 0.5 * weight_decay * tf.reduce_sum(tf.square(weights))

    def upper_loss(batch: Any) -> tf.Tensor:
        x, y = batch
        logits = x @ weights + bias
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    problem = ptf.BilevelProblem(upper_loss, lower_loss, images, [weights, bias], upper_bounds=(0.0, 1.0))
    return Distillation(problem, images, weights, bias, y_s, (x_train, y_train), (x_test, y_test),
                        weight_decay)


def batches(d: Distillation, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled minibatches of real training images, repeated forever."""
    x, y = d.train
    return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
            .batch(batch_size, drop_remainder=True).repeat())


def accuracy(weights: np.ndarray, bias: np.ndarray, data: tuple[np.ndarray, np.ndarray]) -> float:
    x, y = data
    return float(np.mean(np.argmax(x @ weights + bias, axis=1) == y))


def lower_accuracy(d: Distillation) -> float:
    """Test accuracy of the solver's current v."""
    return accuracy(d.weights.numpy(), d.bias.numpy(), d.test)


def refit(d: Distillation, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """argmin_v g(u, v) for the current images, from v = 0 (float64 L-BFGS on the strongly
    convex lower problem, to |grad g| <= ``tol``): the classifier a user would train on them."""
    from scipy.optimize import minimize

    x = d.images.numpy().astype(np.float64)
    y = np.eye(CLASSES)[d.labels.numpy()]
    n, wd = len(x), d.weight_decay

    def loss_and_grad(theta):
        w, b = theta[:-CLASSES].reshape(PIXELS, CLASSES), theta[-CLASSES:]
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        r = (np.exp(log_p) - y) / n
        value = -np.sum(y * log_p) / n + 0.5 * wd * np.sum(w * w)
        return value, np.concatenate([(x.T @ r + wd * w).ravel(), r.sum(axis=0)])

    result = minimize(loss_and_grad, np.zeros(PIXELS * CLASSES + CLASSES), jac=True, method="L-BFGS-B",
                      options={"gtol": tol, "maxiter": 20000, "maxcor": 30})
    theta = result.x
    return theta[:-CLASSES].reshape(PIXELS, CLASSES).astype(np.float32), theta[-CLASSES:].astype(np.float32)


def refit_accuracy(d: Distillation) -> float:
    """Test accuracy of a classifier trained from zero on the distilled images alone."""
    return accuracy(*refit(d), d.test)
