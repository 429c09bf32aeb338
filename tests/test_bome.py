"""BOME on the quadratic bilevel problem of test_diagnostics.py (closed-form hypergradient and
optimum U_STAR): one and two steps against a float64 NumPy model of the update, the optimum
up to the step-size-sized cycle the fixed-step method settles in, the u-direction where v's
part of the direction vanishes, checkpoints, the factory and bad settings."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf import diagnostics
from test_aid import U_STAR
from test_diagnostics import A, B, C, U0, Quadratic

RTOL, ATOL = 1e-5, 1e-6
V0 = np.array([0.3, -0.6, 0.9])


def quadratic(lr_u=0.05, lr_v=0.05, v0=V0, **options):
    """The quadratic with plain SGD on both levels (the paper's steps) and v at ``v0``."""
    q = Quadratic(ptf.BOME, upper_optimizer=keras.optimizers.SGD(lr_u),
                  lower_optimizer=keras.optimizers.SGD(lr_v), **options)
    q.v.assign(np.asarray(v0, np.float32))
    return q


# ------------------------------------------------------------------ the update in NumPy

def g_np(u, v):
    return 0.5 * v @ A @ v - v @ B @ u


def f_np(u, v):
    return 0.5 * np.sum((v - C) ** 2) + 0.05 * np.sum(u ** 2)


def bome_np(u, v, steps, lr_inner, eta, phi="grad_norm"):
    """Algorithm 1 of the paper on the quadratic, float64: (d_u, d_v, lambda, q)."""
    w = v.copy()
    for _ in range(steps):
        w = w - lr_inner * (A @ w - B @ u)                     # grad_v g
    grad_q = np.concatenate([-B.T @ v + B.T @ w, A @ v - B @ u])   # grad_u g = -B^T v
    grad_f = np.concatenate([0.1 * u, v - C])
    q = g_np(u, v) - g_np(u, w)
    norm = grad_q @ grad_q
    target = eta * (norm if phi == "grad_norm" else q)
    lamb = max(target - grad_f @ grad_q, 0.0) / norm if norm > 0 else 0.0
    d = grad_f + lamb * grad_q
    return d[:2], d[2:], lamb, q


@pytest.mark.parametrize("phi,start", [("grad_norm", "generic"), ("value", "generic"), ("grad_norm", "clipped")])
def test_two_steps_match_numpy(phi, start):
    """u, v and every output after each of two steps equal the float64 model (plain SGD, T = 3)."""
    lr_u, lr_v, lr_inner, eta, steps = 0.07, 0.04, 0.2, 0.8, 3
    u = U0.copy()
    # "clipped": v = v* + eps A^-1 (v* - c) makes <grad f, grad q> > phi, so lambda = max(., 0) = 0
    v_star = np.linalg.solve(A, B @ u)
    v = V0.copy() if start == "generic" else v_star + 0.05 * np.linalg.solve(A, v_star - C)
    q = quadratic(lr_u, lr_v, v, lr_inner=lr_inner, eta=eta, phi=phi)
    v = q.v.numpy().astype(np.float64)
    lambdas = []
    for _ in range(2):
        d_u, d_v, lamb, value = bome_np(u, v, steps, lr_inner, eta, phi)
        out = q.solver.step(None, lower_steps=steps)
        np.testing.assert_allclose(float(out["f"]), f_np(u, v), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(float(out["g"]), g_np(u, v), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(float(out["q"]), value, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(float(out["lamb"]), lamb, rtol=RTOL, atol=ATOL)
        u, v = u - lr_u * d_u, v - lr_v * d_v
        np.testing.assert_allclose(q.u.numpy(), u, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(q.v.numpy(), v, rtol=RTOL, atol=ATOL)
        lambdas.append(lamb)
    if start == "clipped":
        assert lambdas[0] == 0.0
    else:
        assert min(lambdas) > 0.1


def test_a_vanishing_grad_q_gives_lambda_zero_and_the_gradient_of_f():
    """v already minimises g: v_T = v and grad q = 0 exactly; lambda = 0 (not 0/0), d = grad f."""
    u, v = tf.Variable([1.0]), tf.Variable([1.0])
    problem = ptf.BilevelProblem(lambda b: tf.reduce_sum((v - 3.0) ** 2) + tf.reduce_sum(u ** 2),
                                 lambda b: tf.reduce_sum((v - u) ** 2), u, v)
    solver = ptf.make("bome", problem, upper_optimizer=keras.optimizers.SGD(0.1),
                      lower_optimizer=keras.optimizers.SGD(0.1))
    out = solver.step(None, lower_steps=4)
    assert float(out["lamb"]) == 0.0 and float(out["q"]) == 0.0
    np.testing.assert_allclose(u.numpy(), [1.0 - 0.1 * 2.0])        # grad_u f = 2u
    np.testing.assert_allclose(v.numpy(), [1.0 + 0.1 * 4.0])        # grad_v f = 2(v - 3)


def test_bome_settles_within_a_step_size_sized_distance_of_the_optimum():
    """With a fixed step BOME has no fixed point (<d, grad q> >= eta ||grad q||^2 > 0 whenever
    grad q != 0): it ends in a cycle around the optimum whose size is proportional to the step
    (measured: 0.0142 at step 0.05, 0.0056 at 0.02 after enough iterations, from any start);
    with T = 20 inner steps the finite-T error of v_T (0.85^20 ~ 4%) is far below that."""
    errors = {}
    for lr, iterations in ((0.05, 1500), (0.02, 3000)):
        q = quadratic(lr, lr, lr_inner=0.25, eta=0.5)
        q.solver.steps(None, iterations=iterations, lower_steps=20)
        cycle = []
        for _ in range(3):                       # the worst point of the (period-3) cycle
            q.solver.step(None, lower_steps=20)
            cycle.append(np.linalg.norm(q.u.numpy() - U_STAR))
        errors[lr] = max(cycle)
    assert errors[0.05] < 0.02 and errors[0.02] < 0.008, errors
    assert errors[0.02] < 0.5 * errors[0.05], errors


def v_with_stationary_v_part(eta):
    """The v at u = U0 where v's part of BOME's direction vanishes (T -> infinity, v_T = v*):
    d_v = (v - c) + lambda A (v - v*) = 0 gives v - v* = e(lambda) = -(I + lambda A)^-1 (v* - c),
    and lambda must be the method's own rule at that point (a scalar root, by bisection)."""
    u, v_star = U0, np.linalg.solve(A, B @ U0)

    def excess(lamb):
        e = -np.linalg.solve(np.eye(3) + lamb * A, v_star - C)
        grad_q = np.concatenate([-B.T @ e, A @ e])
        grad_f = np.concatenate([0.1 * u, v_star + e - C])
        return max(eta * grad_q @ grad_q - grad_f @ grad_q, 0.0) / (grad_q @ grad_q) - lamb, e

    low, high = 1e-6, 1e6                          # excess(low) > 0 > excess(high)
    for _ in range(200):
        mid = np.sqrt(low * high)
        low, high = (mid, high) if excess(mid)[0] > 0 else (low, mid)
    return v_star + excess(low)[1], low


def test_where_v_is_stationary_the_u_direction_is_the_implicit_hypergradient():
    """The stationarity condition grad f + lambda grad q = 0 of the value-function problem (the
    paper's KKT point): where its v-row holds, lambda (v - v*) = -H_vv^-1 f_v, so the u-row
    f_u + lambda grad_u q is the implicit-function hypergradient f_u - H_uv H_vv^-1 f_v at v
    (exact here, with T = 100 inner steps v_T = v* to float precision). Compared with the
    hypergradient at v*(u) the error is |B^T A^-1 (v - v*)| = O(1/lambda): it shrinks as eta
    (and with it lambda, ~1.1 eta here) grows (measured: 0.126 at eta = 10, 0.0143 at eta = 100)
    while the cosine is above 0.99999 at both."""
    errors = []
    for eta in (10.0, 100.0):
        v, lamb = v_with_stationary_v_part(eta)
        q = quadratic(v0=v, lr_inner=0.4, eta=eta)
        q.solver.direction_steps = 100
        at_v = diagnostics.check_hypergradient(q.solver, at_minimiser=False)
        _, d_v, lamb_np, _ = bome_np(U0, q.v.numpy().astype(np.float64), 100, 0.4, eta)
        np.testing.assert_allclose(lamb_np, lamb, rtol=1e-4)
        assert np.linalg.norm(d_v) < 1e-5
        np.testing.assert_allclose(q.solver.upper_direction(None, lower_steps=100)[0].numpy(), q.ift(), rtol=1e-4)
        assert at_v.cosine > 0.99999 and at_v.relative_error < 1e-4, at_v
        at_star = diagnostics.check_hypergradient(q.solver)          # vs dF/du at v*(u)
        assert at_star.cosine > 0.99999, at_star
        errors.append(at_star.relative_error)
        assert np.array_equal(q.v.numpy(), v.astype(np.float32))      # the direction left v as it was
    assert errors[1] < 0.15 * errors[0] and errors[1] < 0.02, errors


def test_a_restored_solver_continues_bitwise(tmp_path):
    """tf.train.Checkpoint(solver=...) of a BOME with Adam on both levels: a second solver on
    other variable values, restored from it, continues exactly as the first."""
    first = Quadratic(ptf.BOME, upper_optimizer=0.05, lower_optimizer=0.05, lr_inner=0.2)
    for _ in range(3):
        first.solver.step(None, lower_steps=4)
    path = tf.train.Checkpoint(solver=first.solver).write(str(tmp_path / "ckpt"))
    second = Quadratic(ptf.BOME, upper_optimizer=0.05, lower_optimizer=0.05, lr_inner=0.2)
    assert not np.array_equal(second.v.numpy(), first.v.numpy())
    tf.train.Checkpoint(solver=second.solver).read(path).assert_consumed()
    assert second.solver.iteration == 3
    for _ in range(3):
        a, b = first.solver.step(None, lower_steps=4), second.solver.step(None, lower_steps=4)
        assert {k: float(x) for k, x in a.items()} == {k: float(x) for k, x in b.items()}
    np.testing.assert_array_equal(first.u.numpy(), second.u.numpy())
    np.testing.assert_array_equal(first.v.numpy(), second.v.numpy())


def test_bome_is_on_the_common_interface():
    u, v = tf.Variable([1.0, 0.5]), tf.Variable([0.0, 0.0])
    problem = ptf.BilevelProblem(lambda b: tf.reduce_sum((v - 2.0) ** 2), lambda b: tf.reduce_sum((v - u) ** 2),
                                 u, v, lower_bounds=(-0.5, 0.5))
    solver = ptf.make("bome", problem, lr_u=0.1, lr_v=0.1, lr_inner=0.3, eta=2.0, phi="value")
    assert isinstance(solver, ptf.BOME) and (solver.lr_inner, solver.eta, solver.phi) == (0.3, 2.0, "value")
    for steps in (1, 3, 5):
        out = solver.step(None, steps)
    assert solver.tracing_count() == 1                      # T is a tensor: one graph
    assert set(out) == {"f", "g", "q", "lamb", "status"}
    assert np.all(np.abs(v.numpy()) <= 0.5)                 # the box projection after the joint step
    with pytest.raises(ValueError, match="eta must be > 0"):
        ptf.BOMEConfig(eta=0.0)
    with pytest.raises(ValueError, match="lr_inner must be > 0"):
        ptf.make("bome", problem, lr_inner=-1.0)
    with pytest.raises(ValueError, match="phi must be one of"):
        ptf.BOME(problem.upper_loss, problem.lower_loss, u, v, phi="norm")


def test_a_nan_in_the_inner_steps_is_named():
    u, v = tf.Variable([1.0]), tf.Variable([0.0])
    solver = ptf.BOME(lambda b: tf.reduce_sum(v ** 2), lambda b: tf.reduce_sum(tf.sqrt(v - u)), u, v)
    with pytest.raises(ptf.NonFiniteError, match=r"the gradient of g w.r.t. the lower variables in the inner "
                                                   r"steps \(v_T\) is not finite \(NaN or Inf\) at lower step 0"):
        solver.step(None, lower_steps=2)
