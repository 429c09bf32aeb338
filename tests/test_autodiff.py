"""Second-derivative products against closed-form Hessians of small random functions."""

import numpy as np
import pytest
import tensorflow as tf

from penalty_tf import autodiff

N = 6


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N, N))
    a = (a + a.T).astype(np.float32)
    b = rng.normal(size=(N, N)).astype(np.float32)
    u = tf.Variable(rng.normal(size=N).astype(np.float32))
    # v split into two variables to exercise lists of tensors.
    v1 = tf.Variable(rng.normal(size=N // 2).astype(np.float32))
    v2 = tf.Variable(rng.normal(size=N // 2).astype(np.float32))
    q = [tf.constant(rng.normal(size=N // 2).astype(np.float32)) for _ in range(2)]
    return a, b, u, v1, v2, q


def _loss(a, b, u, v1, v2):
    """g = 1/2 v'Av + v'Bu + sum(u * sin v); H_vv = A - diag(u sin v), H_uv = B' + diag(cos v)."""
    v = tf.concat([v1, v2], 0)
    return (0.5 * tf.tensordot(v, tf.linalg.matvec(a, v), 1) + tf.tensordot(v, tf.linalg.matvec(b, u), 1)
            + tf.reduce_sum(u * tf.sin(v)))


def _closed_form(a, b, u, v1, v2):
    v = np.concatenate([v1.numpy(), v2.numpy()]).astype(np.float64)
    u = u.numpy().astype(np.float64)
    h_vv = a - np.diag(u * np.sin(v))
    h_uv = b.T + np.diag(np.cos(v))  # rows: u, columns: v
    return h_vv, h_uv


def test_hvp_matches_explicit_hessian():
    a, b, u, v1, v2, q = _setup()
    h_vv, _ = _closed_form(a, b, u, v1, v2)
    got = autodiff.hvp(lambda: _loss(a, b, u, v1, v2), [v1, v2], q)
    expected = h_vv @ np.concatenate([x.numpy() for x in q])
    np.testing.assert_allclose(np.concatenate([x.numpy() for x in got]), expected, rtol=1e-4, atol=1e-4)


def test_mixed_product_matches_explicit_jacobian():
    a, b, u, v1, v2, q = _setup(1)
    _, h_uv = _closed_form(a, b, u, v1, v2)
    got = autodiff.mixed_vp(lambda: _loss(a, b, u, v1, v2), [u], [v1, v2], q)
    expected = h_uv @ np.concatenate([x.numpy() for x in q])
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_joint_products_equal_separate_ones_inside_tf_function():
    a, b, u, v1, v2, q = _setup(2)
    loss = lambda: _loss(a, b, u, v1, v2)  # noqa: E731
    joint = tf.function(lambda: autodiff.hvp_and_mixed_vp(loss, [u], [v1, v2], q))()
    h_vv, h_uv = _closed_form(a, b, u, v1, v2)
    qv = np.concatenate([x.numpy() for x in q])
    np.testing.assert_allclose(joint[0][0].numpy(), h_uv @ qv, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.concatenate([x.numpy() for x in joint[1]]), h_vv @ qv,
                               rtol=1e-4, atol=1e-4)


def test_gradient_plus_hvp_is_the_penalty_gradient():
    """grad_v [f + rho/2 ||grad_v g||^2] = grad_v f + rho H_vv grad_v g, checked in closed form."""
    a, b, u, v1, v2, _ = _setup(3)
    rho = 3.0
    c = tf.constant(np.linspace(-1, 1, N).astype(np.float32))
    f = lambda: tf.reduce_sum(tf.square(tf.concat([v1, v2], 0) - c))  # noqa: E731
    r = autodiff.gradient_plus_hvp(f, lambda: _loss(a, b, u, v1, v2), [v1, v2],
                                   lambda grad: [rho * x for x in grad], [v1, v2])
    h_vv, _ = _closed_form(a, b, u, v1, v2)
    grad = np.concatenate([x.numpy() for x in r.lower_grad])
    v = np.concatenate([v1.numpy(), v2.numpy()])
    expected = 2 * (v - c.numpy()) + rho * h_vv @ grad
    np.testing.assert_allclose(np.concatenate([x.numpy() for x in r.grads]), expected,
                               rtol=1e-4, atol=1e-3)
    assert float(r.upper_value) == pytest.approx(float(np.sum((v - c.numpy()) ** 2)), rel=1e-5)
    # G itself is the gradient of g: 1/2 v'Av + v'Bu + sum(u sin v) -> Av + Bu + u cos v.
    expected_grad = a @ v + b @ u.numpy() + u.numpy() * np.cos(v)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-4)


def test_missing_gradients_become_zeros():
    x = tf.Variable([1.0, 2.0])
    unused = tf.Variable([3.0])
    value, grads = autodiff.gradient(lambda: tf.reduce_sum(x ** 2), [x, unused])
    assert float(value) == 5.0
    np.testing.assert_array_equal(grads[1].numpy(), [0.0])
    np.testing.assert_array_equal(grads[0].numpy(), [2.0, 4.0])


def test_all_finite():
    assert bool(autodiff.all_finite([tf.ones(3), tf.zeros((2, 2))]))
    assert not bool(autodiff.all_finite([tf.ones(3), tf.constant([1.0, np.nan])]))
    assert not bool(autodiff.all_finite([tf.constant([np.inf])]))
