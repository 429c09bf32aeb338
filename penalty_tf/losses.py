"""Cross-entropy losses whose second derivatives are cheap.

The bilevel solvers differentiate the lower-level loss twice (the Hessian-vector products
of `penalty_tf.autodiff`). TensorFlow's fused ``tf.nn.softmax_cross_entropy_with_logits``
and its sparse variant have a second-derivative rule that builds a *batched* matrix product
of n tiny (1 x C) @ (C x 1) products (n = rows of the batch); on CPU that op dominates the
non-matmul time of a pass. Written with ``log_softmax`` the same value

    CE(y, z) = -sum_c y_c log softmax(z)_c

has a second derivative made of row reductions only. Measured on the MNIST poisoning
update (docs/original.md §3.8, 1,060 x 10 logits, T = 20): 43 ms -> 35 ms per update, same
trajectory to float32 rounding (poisoning/README.md). Use these in every loss that a solver
differentiates twice; first-order training may use either.
"""

from __future__ import annotations

import tensorflow as tf


def softmax_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-row ``-sum_c labels_c * log_softmax(logits)_c`` (labels one-hot or soft, last axis)."""
    return -tf.reduce_sum(labels * tf.nn.log_softmax(logits), axis=-1)


def sparse_softmax_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-row ``-log_softmax(logits)[label]`` for integer ``labels`` (shape = logits' minus the last axis)."""
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
    return softmax_cross_entropy(one_hot, logits)
