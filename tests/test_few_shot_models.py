"""Few-shot encoders and the scaled-cosine classifier (docs/original.md §3.5.3, §3.6.4, §3.7.3, §0.5)."""

import numpy as np
import pytest
import tensorflow as tf

from penalty_tf.models import few_shot as m


def test_omniglot_encoder_parameter_count_and_shapes():
    enc = m.build_encoder("omniglot", (28, 28, 1))
    assert m.count_parameters(enc) == m.OMNIGLOT_PARAMETERS == 111_424
    # conv kernels without bias, BN offsets only (no gamma)
    shapes = sorted(tuple(v.shape) for v in enc.trainable_variables)
    assert shapes.count((64,)) == 4 and (3, 3, 1, 64) in shapes and len(shapes) == 8
    assert enc(tf.zeros((7, 28, 28, 1))).shape == (7, 64)
    assert enc(tf.zeros((3, 5, 28, 28, 1))).shape == (3, 5, 64)


def test_miniimagenet_encoder_parameter_count_and_shapes():
    enc = m.build_encoder("miniimagenet", (84, 84, 3))
    assert m.count_parameters(enc) == m.MINIIMAGENET_PARAMETERS == 3_543_424
    assert enc(tf.zeros((2, 3, 84, 84, 3))).shape == (2, 3, 384)


def test_task_batch_norm_uses_each_tasks_own_batch_statistics():
    """A rank-5 call equals one call per task (the original's 2T separate encoder calls)."""
    tf.random.set_seed(0)
    enc = m.build_encoder("omniglot", (28, 28, 1), filters=6)
    for v in enc.trainable_variables:   # non-zero betas so that the offset matters
        if len(v.shape) == 1:
            v.assign(tf.random.normal(v.shape))
    x = tf.random.uniform((3, 4, 28, 28, 1)) * tf.constant([1.0, 3.0, 0.2])[:, None, None, None, None]
    batched = enc(x).numpy()
    separate = np.stack([enc(x[t]).numpy() for t in range(3)])
    np.testing.assert_allclose(batched, separate, rtol=1e-5, atol=1e-5)
    # and differs from normalising the three tasks together
    together = enc(tf.reshape(x, (12, 28, 28, 1))).numpy().reshape(3, 4, -1)
    assert np.abs(together - batched).max() > 1e-2


def test_task_batch_norm_formula():
    """(x - mean) / sqrt(biased var + 1e-3) + beta, per task, over images and pixels; no scale."""
    bn = m.TaskBatchNorm()
    x = tf.random.normal((2 * 3, 4, 4, 5), seed=1) * 2.0 + 1.0
    bn(x, tasks=2)
    bn.beta.assign(np.arange(5, dtype=np.float32))
    out = bn(x, tasks=2).numpy()
    xs = x.numpy().reshape(2, 3, 4, 4, 5)
    mean = xs.mean(axis=(1, 2, 3), keepdims=True)
    var = xs.var(axis=(1, 2, 3), keepdims=True)   # ddof=0
    expected = (xs - mean) / np.sqrt(var + 1e-3) + np.arange(5)
    np.testing.assert_allclose(out, expected.reshape(out.shape), rtol=1e-4, atol=1e-4)
    assert len(bn.trainable_variables) == 1


def test_omniglot_encoder_has_no_relu_after_the_last_block():
    enc = m.build_encoder("omniglot", (28, 28, 1), filters=16)
    out = enc(tf.random.uniform((20, 28, 28, 1), seed=2)).numpy()
    assert out.min() < -0.1   # BN output of block 4, max-pooled, without ReLU


def test_cosine_classifier_against_a_hand_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    w = rng.normal(size=(2, 4, 5)).astype(np.float32)
    b = rng.normal(size=(2, 5)).astype(np.float32)
    got = m.cosine_logits(x, w, b).numpy()
    a = 0.001
    for t in range(2):
        for i in range(3):
            for k in range(5):
                num = float(np.dot(x[t, i], w[t, :, k])) + a * b[t, k]
                den = np.sqrt(np.sum(x[t, i] ** 2) + a * a) * np.sqrt(np.sum(w[t, :, k] ** 2) + b[t, k] ** 2)
                assert got[t, i, k] == pytest.approx(10.0 * num / den, rel=1e-5, abs=1e-5)
    assert np.abs(got).max() <= 10.0 + 1e-4   # 10 x a cosine


def test_classifier_initialisation():
    w, b = m.initial_classifiers(np.random.default_rng(0), 15, 64, 20)
    assert w.shape == (15, 64, 20) and b.shape == (15, 20) and w.dtype == np.float32
    assert np.all(b == np.float32(0.001))
    assert abs(w.std() - 0.01) < 5e-4 and abs(w.mean()) < 5e-4


def test_task_losses_equal_one_hot_cross_entropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (3, 6))
    got = m.task_losses(logits, labels).numpy()
    one_hot = np.eye(4)[labels]
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(got, -(one_hot * log_p).sum(-1).mean(-1), rtol=1e-5)
