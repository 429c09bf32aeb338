"""The few-shot models: two encoders (the upper-level u) and the scaled-cosine classifier.

Encoders (docs/original.md §3.6.4, §3.7.3, §0.5):

* `OmniglotEncoder`: 4 blocks of [3x3 conv, 64 filters, no bias -> batch norm -> ReLU
  (none after the 4th block) -> 2x2 max-pool VALID]; 28 -> 14 -> 7 -> 3 -> 1, giving 64
  features; 111,424 trainable parameters.
* `MiniImageNetEncoder`: 4 residual blocks (64, 96, 128, 256 filters) of
  [1x1 conv with bias as skip; 3 x (3x3 conv no bias -> batch norm -> LeakyReLU 0.1);
  skip + out; 2x2 max-pool SAME], then a 1x1 conv to 2048 with bias and ReLU, 6x6 average
  pooling VALID and a linear 1x1 conv to 384; 84 -> 42 -> 21 -> 11 -> 6 -> 1, giving 384
  features; 3,543,424 trainable parameters.

Batch normalisation is the original's ``tf.contrib.layers.batch_norm`` with default
arguments and ``is_training=True``: a trainable offset beta (zeros), **no scale**, epsilon
1e-3, and it **always normalises with the statistics of the batch it is given** (biased
variance, as fused batch norm) — during meta-training, during meta-test classifier
training and when predicting query sets. Its moving averages were never used, so there
are none here. `TaskBatchNorm` does this per task: an encoder called on a rank-5 tensor
``(tasks, n, H, W, C)`` normalises each task's n images with their own statistics, which
equals the original's separate encoder call per task and split (2T calls) in one batched
call. A rank-4 batch ``(n, H, W, C)`` is one task.

Convolutions follow ``tf.contrib.layers.conv2d``: stride 1, SAME padding, Glorot-uniform
kernels, zero biases, and no bias when followed by batch norm.

The classifier of task t (§3.5.3) is ``W_t`` (d x N, Normal(0, 0.01^2) at each reset) and
``b_t`` (N, constant 0.001) with

    logit_k = 10 (x . W[:, k] + a b_k) / (sqrt(|x|^2 + a^2) sqrt(|W[:, k]|^2 + b_k^2)),  a = 0.001,

i.e. 10 x the cosine between [x, a] and [W[:, k], b_k] (the paper calls it "logistic
regression"). `cosine_logits` evaluates all T tasks at once from one (T, d, N) tensor.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from penalty_tf import losses

#: The constant input the classifier's bias multiplies (the original's ``wat``).
BIAS_INPUT = 0.001
#: The cosine classifier's scale.
LOGIT_SCALE = 10.0
#: Initial value of every classifier bias and standard deviation of the weights.
BIAS_INIT = 0.001
WEIGHT_INIT_STD = 0.01
#: Batch-norm epsilon of tf.contrib.layers.batch_norm.
BN_EPSILON = 1e-3

OMNIGLOT_PARAMETERS = 111_424
MINIIMAGENET_PARAMETERS = 3_543_424


class TaskBatchNorm(keras.layers.Layer):
    """Batch norm with batch statistics per task, offset beta, no scale, epsilon 1e-3.

    ``call(x, tasks)``: x is ``(tasks * n, h, w, c)`` holding ``tasks`` consecutive groups
    of n images; each group is normalised with its own mean and (biased) variance over
    its images and pixels, then beta is added.
    """

    def __init__(self, epsilon: float = BN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.beta = self.add_weight(name="beta", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x, tasks: int = 1):
        shape = tf.shape(x)
        grouped = tf.reshape(x, tf.concat([[tasks, -1], shape[1:]], axis=0))
        mean, var = tf.nn.moments(grouped, axes=[1, 2, 3], keepdims=True)
        out = (grouped - mean) * tf.math.rsqrt(var + self.epsilon) + self.beta
        return tf.reshape(out, shape)


def _conv(filters: int, size: int, use_bias: bool, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, size, padding="same", use_bias=use_bias,
                               kernel_initializer="glorot_uniform", bias_initializer="zeros",
                               name=name)


class _TaskEncoder(keras.Model):
    """Flattens a leading task axis for the convolutions and passes the task count to BN."""

    def call(self, x):
        x = tf.convert_to_tensor(x)
        if x.shape.rank == 5:
            tasks = x.shape[0]
            if tasks is None:
                raise ValueError("the task axis of a rank-5 input must have a static size")
            flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))
            out = self._features(flat, tasks)
            return tf.reshape(out, tf.concat([[tasks, -1], tf.shape(out)[1:]], axis=0))
        if x.shape.rank != 4:
            raise ValueError(f"expected images (n, H, W, C) or (tasks, n, H, W, C), got shape {x.shape}")
        return self._features(x, 1)

    def _features(self, x, tasks):
        raise NotImplementedError


class OmniglotEncoder(_TaskEncoder):
    """The 4-block conv encoder of the Omniglot experiments (``filters`` = 64 there)."""

    def __init__(self, filters: int = 64, blocks: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.convs = [_conv(filters, 3, False, f"conv_{i + 1}") for i in range(blocks)]
        self.norms = [TaskBatchNorm(name=f"bn_{i + 1}") for i in range(blocks)]
        self.pool = keras.layers.MaxPooling2D(2, 2, padding="valid")

    def _features(self, x, tasks):
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x), tasks=tasks)
            if i < len(self.convs) - 1:   # no ReLU after the last block (original's conv_4)
                x = tf.nn.relu(x)
            x = self.pool(x)
        return tf.reshape(x, [tf.shape(x)[0], -1])


class ResidualBlock(keras.layers.Layer):
    """1x1 conv skip (with bias) + 3 x [3x3 conv -> BN -> LeakyReLU 0.1], then 2x2 max-pool SAME."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.skip = _conv(filters, 1, True, "skip")
        self.convs = [_conv(filters, 3, False, f"conv_{i + 1}") for i in range(3)]
        self.norms = [TaskBatchNorm(name=f"bn_{i + 1}") for i in range(3)]
        self.pool = keras.layers.MaxPooling2D(2, 2, padding="same")

    def call(self, x, tasks: int = 1):
        skip = self.skip(x)
        for conv, norm in zip(self.convs, self.norms):
            x = tf.nn.leaky_relu(norm(conv(x), tasks=tasks), alpha=0.1)
        return self.pool(skip + x)


class MiniImageNetEncoder(_TaskEncoder):
    """The residual encoder of the Mini-ImageNet experiments.

    Defaults are the original's; smaller ``filters``/``hidden``/``features`` give the same
    architecture at a size suitable for tests.
    """

    def __init__(self, filters: Sequence[int] = (64, 96, 128, 256), hidden: int = 2048,
                 features: int = 384, pool: int = 6, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [ResidualBlock(f, name=f"res_{i + 1}") for i, f in enumerate(filters)]
        self.hidden = _conv(hidden, 1, True, "hidden")
        self.avg = keras.layers.AveragePooling2D(pool, pool, padding="valid")
        self.out = _conv(features, 1, True, "features")

    def _features(self, x, tasks):
        for block in self.blocks:
            x = block(x, tasks=tasks)
        x = self.out(self.avg(tf.nn.relu(self.hidden(x))))
        return tf.reshape(x, [tf.shape(x)[0], -1])


def build_encoder(kind: str, image_shape: Sequence[int], **kwargs) -> _TaskEncoder:
    """An `OmniglotEncoder` (``kind="omniglot"``) or `MiniImageNetEncoder`
    (``"miniimagenet"``), built on images of ``image_shape`` (H, W, C)."""
    cls = {"omniglot": OmniglotEncoder, "miniimagenet": MiniImageNetEncoder}[kind]
    encoder = cls(**kwargs)
    encoder(tf.zeros((2, *image_shape)))
    return encoder


def count_parameters(model: keras.Model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def feature_dim(encoder: keras.Model, image_shape: Sequence[int]) -> int:
    return int(encoder(tf.zeros((2, *image_shape))).shape[-1])


def cosine_logits(features: tf.Tensor, weights: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """Scaled-cosine logits of every task at once.

    features (T, n, d), weights (T, d, N), bias (T, N) -> logits (T, n, N).
    """
    a = BIAS_INPUT
    dots = tf.matmul(features, weights) + a * bias[:, None, :]
    x_norm = tf.sqrt(tf.reduce_sum(tf.square(features), axis=-1, keepdims=True) + a * a)
    w_norm = tf.sqrt(tf.reduce_sum(tf.square(weights), axis=1) + tf.square(bias))[:, None, :]
    return LOGIT_SCALE * dots / (x_norm * w_norm)


def initial_classifiers(rng: np.random.Generator, tasks: int, dim: int,
                        ways: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh classifiers for ``tasks`` tasks: W ~ Normal(0, 0.01^2) (T, d, N), b = 0.001 (T, N)."""
    w = (rng.standard_normal((tasks, dim, ways)) * WEIGHT_INIT_STD).astype(np.float32)
    b = np.full((tasks, ways), BIAS_INIT, np.float32)
    return w, b


def task_losses(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy per task: logits (T, n, N), integer labels (T, n) -> (T,).

    Sparse labels give the same value as the original's one-hot softmax cross-entropy."""
    return tf.reduce_mean(losses.sparse_softmax_cross_entropy(labels, logits), axis=-1)
