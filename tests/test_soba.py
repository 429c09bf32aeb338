"""SOBA (single-loop joint steps on v, the linear-system vector w and u) on the quadratic
bilevel problem of test_diagnostics.py, whose lower minimiser, w* = -A^-1 (v* - c), the
hypergradient and the optimum have closed forms."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf import diagnostics
from test_aid import U_STAR
from test_diagnostics import A, B, C, Quadratic


def sgd(lr):
    return keras.optimizers.SGD(lr)


def reference_iteration(u, v, w, steps, lrs):
    """One SOBA iteration in float64 from the module docstring: T - 1 joint (v, w) steps, then
    D_v = A v - B u, D_w = A w + (v - c), D_u = 0.1 u - B^T w (H_uv w = grad_u <A v - B u, w>)
    at one point and all three updates."""
    lr_u, lr_v, lr_w = lrs
    for _ in range(steps - 1):
        d_v, d_w = A @ v - B @ u, A @ w + (v - C)
        v, w = v - lr_v * d_v, w - lr_w * d_w
    d_v, d_w, d_u = A @ v - B @ u, A @ w + (v - C), 0.1 * u - B.T @ w
    out = {"f": 0.5 * np.sum((v - C) ** 2) + 0.05 * np.sum(u ** 2), "g": 0.5 * v @ A @ v - v @ B @ u,
           "lower_residual": d_v @ d_v, "linear_residual": d_w @ d_w}
    return u - lr_u * d_u, v - lr_v * d_v, w - lr_w * d_w, out


@pytest.mark.parametrize("steps", [1, 3])
def test_two_steps_follow_the_update_equations(steps):
    lrs = (0.05, 0.1, 0.15)
    q = Quadratic(ptf.SOBA, upper_optimizer=sgd(lrs[0]), lower_optimizer=sgd(lrs[1]), linear_optimizer=sgd(lrs[2]))
    u, v, w = q.u.numpy().astype(np.float64), q.v.numpy().astype(np.float64), np.zeros(3)
    for _ in range(2):
        out = q.solver.step(None, lower_steps=steps)
        u, v, w, expected = reference_iteration(u, v, w, steps, lrs)
        np.testing.assert_allclose(q.u.numpy(), u, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(q.v.numpy(), v, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(q.solver.linear.variables[0].numpy(), w, rtol=1e-5, atol=1e-6)
        for key, value in expected.items():
            assert float(out[key]) == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_at_the_fixed_point_of_v_and_w_the_direction_is_the_exact_hypergradient():
    """u frozen: the (v, w) steps converge to v* and w* = -A^-1 (v* - c) (both contract by
    1 - 0.4 * 0.61 per step), where D_u = f_u - B^T w* is dF/du exactly. At the start (w = 0)
    D_u is f_u alone, far from it."""
    q = Quadratic(ptf.SOBA, upper_optimizer=0.0, lower_optimizer=sgd(0.4), linear_optimizer=sgd(0.4))
    start = diagnostics.check_hypergradient(q.solver)
    assert start.relative_error > 0.9                     # measured 0.995
    out = q.solver.step(None, lower_steps=200)
    np.testing.assert_allclose(q.v.numpy(), q.v_star(), atol=1e-6)
    np.testing.assert_allclose(q.solver.linear.variables[0].numpy(), -np.linalg.solve(A, q.v_star() - C), atol=1e-5)
    assert float(out["lower_residual"]) < 1e-10 and float(out["linear_residual"]) < 1e-10
    check = diagnostics.check_hypergradient(q.solver)
    assert check.cosine > 0.999999 and check.relative_error < 1e-5, check    # measured 1.0 and 1.9e-7


@pytest.mark.parametrize("steps,lr_u,iterations", [(1, 0.02, 500), (5, 0.1, 100)])
def test_soba_reaches_the_bilevel_optimum(steps, lr_u, iterations):
    """SOBA's fixed point is the bilevel stationary point (no bias). The step sizes make the
    linear iteration on (v, w, u) contract: spectral radius 0.96 for T = 1 (SOBA exactly) and
    0.80 for T = 5, so 500 and 100 iterations leave ~1e-8 of the initial error; the tolerance
    1e-5 is float32 rounding (measured max |u - U_STAR| 8e-8 and 5e-8)."""
    q = Quadratic(ptf.SOBA, upper_optimizer=sgd(lr_u), lower_optimizer=sgd(0.4), linear_optimizer=sgd(0.4))
    q.solver.steps(None, iterations=iterations, lower_steps=steps)
    np.testing.assert_allclose(q.u.numpy(), U_STAR, atol=1e-5)


def test_a_restored_solver_continues_bitwise(tmp_path):
    options = dict(upper_optimizer=0.05, lower_optimizer=0.02, linear_optimizer=0.03)

    def run(q, n):
        outs = [{k: float(v) for k, v in q.solver.step(None, lower_steps=2).items()} for _ in range(n)]
        return outs, [x.numpy().copy() for x in (q.u, q.v, q.solver.linear.variables[0])]

    first = Quadratic(ptf.SOBA, **options)
    run(first, 2)
    path = tf.train.Checkpoint(solver=first.solver).write(str(tmp_path / "ckpt"))
    expected = run(first, 3)
    second = Quadratic(ptf.SOBA, **options)
    tf.train.Checkpoint(solver=second.solver).read(path).assert_consumed()
    assert second.solver.iteration == 2
    outs, values = run(second, 3)
    assert outs == expected[0]
    for a, b in zip(values, expected[1]):
        np.testing.assert_array_equal(a, b)


def test_soba_is_on_the_common_interface():
    u, v = tf.Variable([1.0]), tf.Variable([0.0, 0.5])
    problem = ptf.BilevelProblem(lambda b: tf.reduce_sum((v - 2.0) ** 2),
                                 lambda b: tf.reduce_sum((v - u) ** 2), u, v, lower_bounds=(-0.1, 0.1))
    solver = ptf.make("soba", problem, lr_u=0.1, lr_v=0.1, lr_w=0.2)
    assert isinstance(solver, ptf.SOBA) and solver.learning_rates()["linear"] == pytest.approx([0.2])
    solver.step(None, 2)
    assert np.all(np.abs(v.numpy()) <= 0.1)
    w = solver.linear.variables[0]
    assert any(x is w for x in solver.state_variables()) and np.any(w.numpy() != 0.0)
    solver.reset()
    np.testing.assert_array_equal(w.numpy(), 0.0)
    with pytest.raises(ValueError, match="lr_w must be >= 0"):
        ptf.make("soba", problem, lr_w=-1.0)
    with pytest.raises(ValueError, match="lower_steps must be >= 1"):
        solver.step(None, 0)
