"""The solvers on a user's Keras model (Keras 3 variables), as in the README example."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf


def _problem(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(3)])
    weights = tf.Variable(tf.zeros(16))
    rng = np.random.default_rng(seed)
    batch = (rng.normal(size=(16, 20)).astype(np.float32), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)],
             rng.normal(size=(16, 20)).astype(np.float32), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)])

    def lower_loss(b):
        x, y, _, _ = b
        a = 0.5 * (tf.tanh(weights) + 1.0)
        ce = tf.nn.softmax_cross_entropy_with_logits(y, model(x))
        return tf.reduce_sum(a * ce) / tf.reduce_sum(a)

    def upper_loss(b):
        _, _, xv, yv = b
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(yv, model(xv)))

    return model, weights, batch, upper_loss, lower_loss


@pytest.mark.parametrize("cls", [ptf.Penalty, ptf.ApproxGrad, ptf.RMD, ptf.GD])
def test_solvers_train_a_keras_model(cls):
    model, weights, batch, upper_loss, lower_loss = _problem()
    before = [w.numpy().copy() for w in model.trainable_variables]
    kwargs = dict(upper_lr=1.0, lower_lr=0.1) if cls is ptf.RMD else dict(upper_optimizer=1.0, lower_optimizer=1e-2)
    solver = cls(upper_loss, lower_loss, [weights], model.trainable_variables, **kwargs)
    for _ in range(3):
        solver.step(batch, lower_steps=5)
    assert solver.tracing_count() == 1
    # The Keras model sees the updates (its variables share storage with the solver's).
    assert all(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_variables))
    # f depends on the importance logits only through v*(u): GD's partial gradient is 0.
    assert np.any(weights.numpy() != 0.0) == (cls is not ptf.GD)


def test_penalty_direction_on_a_keras_model_matches_a_hand_computation():
    """grad_v h_lower = grad f + H (nu + rho G) + lambda G, with H G from a separate double tape."""
    model, weights, batch, upper_loss, lower_loss = _problem(1)
    schedule = ptf.PenaltySchedule(rho0=0.7, lamb0=0.3, nu0=0.05)
    solver = ptf.Penalty(upper_loss, lower_loss, [weights], model.trainable_variables, schedule=schedule)
    grad_u, grad_v = solver.gradients(batch)
    v = [w.value for w in model.trainable_variables]
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            g = lower_loss(batch)
        gv = inner.gradient(g, v)
        f = upper_loss(batch)
        h = f + sum(tf.reduce_sum(0.05 * x) for x in gv) + 0.35 * sum(tf.reduce_sum(x * x) for x in gv) + 0.3 * g
        h_u = h - 0.3 * g
    expected_v = outer.gradient(h, v)
    expected_u = outer.gradient(h_u, [weights])
    for a, b in zip(grad_v, expected_v):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_u[0].numpy(), expected_u[0].numpy(), rtol=1e-4, atol=1e-7)


def test_the_readme_library_example_runs_as_written():
    """The README's first library snippet, executed verbatim: a new user can paste it."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### The library"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    solver = namespace["solver"]
    assert solver.iteration == 1
    assert np.isfinite(float(namespace["out"]["f"]))
    assert float(namespace["weights"].numpy().std()) > 0.0   # u moved
