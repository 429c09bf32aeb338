"""F2SA (fully first-order penalty method with an auxiliary lower sequence z) on the quadratic
bilevel problem of test_diagnostics.py, where v_lambda = argmin_v f + lambda g, z* = argmin_z g,
the hypergradient and the optimum have closed forms."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf import diagnostics
from test_aid import K_MAT, U_STAR
from test_diagnostics import A, B, C, Quadratic

L_A = float(np.linalg.eigvalsh(A).max())          # the largest curvature of g in v


def sgd(lr):
    return keras.optimizers.SGD(lr)


def direction_at(u, lamb):
    """F2SA's u-direction at v = v_lambda(u), z = z*(u): 0.1 u + B^T (A + I/lambda)^-1 (z* - c)
    (f_u = 0.1 u, g_u = -B^T v, lambda (v_lambda - z*) = (A + I/lambda)^-1 (c - z*))."""
    return 0.1 * u + B.T @ np.linalg.solve(A + np.eye(3) / lamb, K_MAT @ u - C)


def u_lambda(lamb):
    """The u where that direction vanishes: F2SA's fixed point for a fixed lambda."""
    inverse = np.linalg.inv(A + np.eye(3) / lamb)
    return np.linalg.solve(0.1 * np.eye(2) + B.T @ inverse @ K_MAT, B.T @ inverse @ C)


def reference_iteration(u, v, z, lamb, k, steps, lrs, schedule):
    """One F2SA iteration in float64 from the module docstring: T z-steps on g, T v-steps on
    f + lambda g, the u-step at the new v and z, then lambda <- min(lambda + d / (k+1)^p, max)."""
    lr_u, lr_v, lr_z = lrs
    delta, power, lamb_max = schedule
    for _ in range(steps):
        z = z - lr_z * (A @ z - B @ u)
    for _ in range(steps):
        v = v - lr_v * ((v - C) + lamb * (A @ v - B @ u))

    def g(x):
        return 0.5 * x @ A @ x - x @ B @ u

    out = {"f": 0.5 * np.sum((v - C) ** 2) + 0.05 * np.sum(u ** 2), "g": g(v), "lower_gap": g(v) - g(z)}
    u = u - lr_u * (0.1 * u + lamb * (-B.T @ v + B.T @ z))
    lamb = min(lamb + delta / (k + 1) ** power, lamb_max)
    out["lamb"] = lamb
    return u, v, z, lamb, out


def test_two_steps_follow_the_update_equations():
    lrs, schedule = (0.05, 0.02, 0.1), (0.5, 0.5, 2.6)     # 2 -> 2.5 -> min(2.5 + 0.5/sqrt 2, 2.6): the cap
    q = Quadratic(ptf.F2SA, upper_optimizer=sgd(lrs[0]), lower_optimizer=sgd(lrs[1]), z_optimizer=sgd(lrs[2]),
                  lamb0=2.0, lamb_delta=schedule[0], lamb_delta_power=schedule[1], lamb_max=schedule[2])
    u, v, lamb = q.u.numpy().astype(np.float64), q.v.numpy().astype(np.float64), 2.0
    z = v.copy()                                         # z starts at v
    for k in range(2):
        out = q.solver.step(None, lower_steps=3)
        u, v, z, lamb, expected = reference_iteration(u, v, z, lamb, k, 3, lrs, schedule)
        np.testing.assert_allclose(q.u.numpy(), u, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(q.v.numpy(), v, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(q.solver.z.variables[0].numpy(), z, rtol=1e-5, atol=1e-6)
        for key, value in expected.items():
            assert float(out[key]) == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert float(q.solver.lamb) == pytest.approx(2.6)
    assert q.solver.tracing_count() == 1


def test_the_direction_at_the_converged_v_and_z_is_within_order_one_over_lambda_of_the_hypergradient():
    """u frozen, lambda fixed: the T steps converge to v_lambda(u) and z*(u) (plain gradient
    descent with step 1/L), where the direction's error is Bt [(A + I/lambda)^-1 - A^-1] (z* - c)
    = O(1/lambda): the relative error falls tenfold per tenfold lambda."""
    errors = []
    for lamb in (10.0, 100.0, 1000.0):
        q = Quadratic(ptf.F2SA, upper_optimizer=0.0, lower_optimizer=sgd(1.0 / (1.0 + L_A * lamb)),
                      z_optimizer=sgd(1.0 / L_A), lamb0=lamb, lamb_delta=0.0)
        u = q.u.numpy().astype(np.float64)
        q.solver.step(None, lower_steps=150)
        np.testing.assert_allclose(q.v.numpy(), np.linalg.solve(np.eye(3) + lamb * A, C + lamb * B @ u), atol=1e-6)
        np.testing.assert_allclose(q.solver.z.variables[0].numpy(), K_MAT @ u, atol=1e-6)
        check = diagnostics.check_hypergradient(q.solver)
        exact = q.hypergradient()
        predicted = np.linalg.norm(direction_at(u, lamb) - exact) / np.linalg.norm(exact)
        assert check.relative_error == pytest.approx(predicted, rel=0.05)   # measured 0.139, 0.0160, 0.00159
        errors.append(check.relative_error)
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(7.0 < r < 13.0 for r in ratios), ratios                  # measured 8.7, 10.0


def test_f2sa_reaches_its_order_one_over_lambda_neighbourhood_of_the_bilevel_optimum():
    """lambda grows from 1 by 2 per iteration to the cap 100. With plain SGD the steps follow the
    paper's coupling: alpha = 1/(1 + 100 L_A) keeps alpha lambda L_g < 1, and the u-step (0.02) is
    small enough for lambda times the lag of v (a stable linear iteration at every lambda on the
    way). The limit is the fixed point u_100, whose distance to U_STAR is the penalty's bias
    ~ 0.039 / lambda = 3.9e-4; u is asserted within 1e-3 of U_STAR (measured: 2.8e-7 from u_100, 3.9e-4 from U_STAR)."""
    lamb_max = 100.0
    q = Quadratic(ptf.F2SA, upper_optimizer=sgd(0.02), lower_optimizer=sgd(1.0 / (1.0 + L_A * lamb_max)),
                  z_optimizer=sgd(0.25), lamb0=1.0, lamb_delta=2.0, lamb_max=lamb_max)
    out = q.solver.steps(None, iterations=300, lower_steps=20)
    assert float(out["lamb"]) == lamb_max
    bias = np.linalg.norm(u_lambda(lamb_max) - U_STAR)
    assert bias == pytest.approx(3.9e-4, rel=0.01)
    np.testing.assert_allclose(q.u.numpy(), u_lambda(lamb_max), atol=1e-4)
    assert np.linalg.norm(q.u.numpy() - U_STAR) < 1e-3
    assert 0.0 <= float(out["lower_gap"]) < 1e-3           # g(v) - g(z) = O(1/lambda^2) at the limit


def test_a_restored_solver_continues_bitwise(tmp_path):
    options = dict(upper_optimizer=0.05, lower_optimizer=0.02, z_optimizer=0.03, lamb0=1.0, lamb_delta=0.5,
                   lamb_delta_power=0.5)

    def run(q, n):
        outs = [{k: float(v) for k, v in q.solver.step(None, lower_steps=3).items()} for _ in range(n)]
        return outs, [x.numpy().copy() for x in (q.u, q.v, q.solver.z.variables[0])]

    first = Quadratic(ptf.F2SA, **options)
    run(first, 2)
    path = tf.train.Checkpoint(solver=first.solver).write(str(tmp_path / "ckpt"))
    expected = run(first, 3)
    second = Quadratic(ptf.F2SA, **options)              # other initial v, z: the checkpoint overwrites them
    tf.train.Checkpoint(solver=second.solver).read(path).assert_consumed()
    assert second.solver.iteration == 2 and float(second.solver.lamb) == pytest.approx(1.0 + 0.5 + 0.5 / 2 ** 0.5)
    outs, values = run(second, 3)
    assert outs == expected[0]
    for a, b in zip(values, expected[1]):
        np.testing.assert_array_equal(a, b)


def test_f2sa_is_on_the_common_interface():
    u, v = tf.Variable([1.0]), tf.Variable([0.0, 0.5])
    problem = ptf.BilevelProblem(lambda b: tf.reduce_sum((v - 2.0) ** 2),
                                 lambda b: tf.reduce_sum((v - u) ** 2), u, v, lower_bounds=(-0.1, 0.1))
    solver = ptf.make("f2sa", problem, lr_u=0.1, lr_v=0.1, lr_z=0.1, lamb0=2.0, lamb_max=2.1)
    assert isinstance(solver, ptf.F2SA) and solver.learning_rates()["z"] == pytest.approx([0.1])
    out = solver.step(None, 2)
    assert float(out["lamb"]) == pytest.approx(2.1) and float(solver.lamb) == pytest.approx(2.1)
    assert np.all(np.abs(v.numpy()) <= 0.1) and np.all(np.abs(solver.z.variables[0].numpy()) <= 0.1)  # bounds
    state = solver.state_variables()
    assert any(x is solver.lamb for x in state) and any(x is solver.z.variables[0] for x in state)
    solver.reset()
    assert float(solver.lamb) == 2.0 and int(solver.lamb_updates.numpy()) == 0
    np.testing.assert_array_equal(solver.z.variables[0].numpy(), v.numpy())
    for field, value, message in (("lamb_delta", -0.1, "lamb_delta must be >= 0"),
                                  ("lamb_max", 0.5, "lamb_max must be >= lamb0"),
                                  ("lamb_delta_power", -1.0, "lamb_delta_power must be >= 0"),
                                  ("lr_z", -1e-3, "lr_z must be >= 0")):
        with pytest.raises(ValueError, match=message):
            ptf.make("f2sa", problem, **{field: value})


def test_a_non_finite_gradient_at_z_is_named():
    q = Quadratic(ptf.F2SA)
    q.a = tf.fill([3, 3], np.nan)                     # g and its gradients NaN from the first z-step on
    with pytest.raises(ptf.NonFiniteError, match="the gradient of g at z .* at lower step 0"):
        q.solver.step(None, lower_steps=2)
