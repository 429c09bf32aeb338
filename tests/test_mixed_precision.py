"""Penalty's second-order terms under Keras' mixed_bfloat16 policy.

The layers compute in bfloat16, the variables (and so every gradient, G, nu and the
Hessian-vector products' outputs) stay float32; the logits are cast to float32 by the
model's last layer, as Keras recommends. The run must stay close to the float32 run.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf.losses import sparse_softmax_cross_entropy


def run_penalty(policy, steps=5):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        rng = np.random.default_rng(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                                  keras.layers.Dense(3),
                                  keras.layers.Activation("linear", dtype="float32")])
        model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5 for w in model.weights])
        u = tf.Variable(np.zeros(32, np.float32))
        x = rng.normal(size=(32, 6)).astype(np.float32)
        y = rng.integers(0, 3, 32)

        def lower_loss(_):
            return tf.reduce_mean(tf.sigmoid(u) * sparse_softmax_cross_entropy(y, model(x)))

        def upper_loss(_):
            return tf.reduce_mean(sparse_softmax_cross_entropy(y, model(x)))

        solver = ptf.Penalty(upper_loss, lower_loss, u, model.trainable_variables,
                             upper_optimizer=0.1, lower_optimizer=0.01)
        for _ in range(steps):
            out = solver.step(None, lower_steps=3)
        compute = model.layers[0].compute_dtype
        return u.numpy(), model.get_weights(), {k: float(v) for k, v in out.items()}, compute
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_penalty_under_mixed_bfloat16_tracks_the_float32_run():
    u32, w32, out32, compute32 = run_penalty("float32")
    u16, w16, out16, compute16 = run_penalty("mixed_bfloat16")
    assert (compute32, compute16) == ("float32", "bfloat16")
    assert all(w.dtype == np.float32 for w in w16)
    moved = np.max(np.abs(u32))
    assert moved > 0.1
    assert np.max(np.abs(u16 - u32)) < 0.05 * moved            # measured 1.3 %
    for k in ("f", "g", "hv", "penalty"):
        assert out16[k] == pytest.approx(out32[k], rel=0.02), k  # measured <= 0.2 %
    assert keras.mixed_precision.global_policy().name == "float32"
