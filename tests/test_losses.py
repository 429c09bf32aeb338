"""The second-order-friendly cross-entropies equal TensorFlow's fused ops, to second order."""

import numpy as np
import tensorflow as tf

from penalty_tf import autodiff, losses


def _data(seed=0, n=50, d=7, c=4):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(n, d)), tf.float32)
    labels = rng.integers(0, c, size=n)
    w = tf.Variable(rng.normal(size=(d, c)), dtype=tf.float32)
    q = [tf.constant(rng.normal(size=(d, c)), tf.float32)]
    return x, labels, w, q


def test_values_equal_the_fused_ops():
    x, labels, w, _ = _data()
    logits = tf.matmul(x, w) * 5.0          # large logits: log_softmax must stay stable
    one_hot = tf.one_hot(labels, 4)
    ours = losses.softmax_cross_entropy(one_hot, logits).numpy()
    fused = tf.nn.softmax_cross_entropy_with_logits(labels=one_hot, logits=logits).numpy()
    np.testing.assert_allclose(ours, fused, rtol=1e-5, atol=1e-5)
    sparse = losses.sparse_softmax_cross_entropy(labels, logits).numpy()
    np.testing.assert_allclose(sparse, fused, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(ours)) and ours.max() > 10.0


def test_hessian_vector_products_equal_the_fused_ops():
    x, labels, w, q = _data(1)
    one_hot = tf.one_hot(labels, 4)
    ours = autodiff.hvp(lambda: tf.reduce_mean(losses.softmax_cross_entropy(one_hot, x @ w)), [w], q)
    fused = autodiff.hvp(lambda: tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
        labels=one_hot, logits=x @ w)), [w], q)
    np.testing.assert_allclose(ours[0].numpy(), fused[0].numpy(), rtol=1e-4, atol=1e-6)
    assert np.abs(ours[0].numpy()).max() > 1e-2


def _op_types(loss_of_logits):
    x, labels, w, q = _data(2)
    one_hot = tf.one_hot(labels, 4)

    @tf.function
    def pass_():
        return autodiff.hvp(lambda: tf.reduce_mean(loss_of_logits(one_hot, x @ w)), [w], q)

    return {op.type for op in pass_.get_concrete_function().graph.get_operations()}


def test_the_second_derivative_has_no_batched_matmul():
    """Why these exist: the fused op's second derivative is a batch of n tiny matmuls."""
    fused = _op_types(lambda y, z: tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=z))
    ours = _op_types(losses.softmax_cross_entropy)
    assert any(t.startswith("BatchMatMul") for t in fused)
    assert not any(t.startswith("BatchMatMul") for t in ours)
