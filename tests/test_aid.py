"""AID (implicit differentiation with CG or a Neumann series) on the quadratic bilevel problem
of test_diagnostics.py, whose hypergradient and optimum have closed forms."""

import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf import diagnostics
from test_diagnostics import A, B, C, Quadratic

K_MAT = np.linalg.solve(A, B)                                      # v*(u) = K u
U_STAR = np.linalg.solve(K_MAT.T @ K_MAT + 0.1 * np.eye(2), K_MAT.T @ C)   # argmin F


def test_cg_with_as_many_steps_as_dimensions_gives_the_exact_hypergradient():
    q = Quadratic(ptf.AID, upper_optimizer=0.0, lower_optimizer=0.0)    # nothing moves but p
    q.v.assign(q.v_star().astype(np.float32))
    out = q.solver.step(None, lower_steps=1, linear_steps=3)
    np.testing.assert_allclose(q.solver.p[0].numpy(), np.linalg.solve(A, q.v.numpy() - C), rtol=1e-4, atol=1e-5)
    assert float(out["linear_residual"]) < 1e-9
    check = diagnostics.check_hypergradient(q.solver)
    assert check.cosine > 0.99999 and check.relative_error < 1e-3


def test_neumann_steps_sum_the_truncated_series():
    eta, k = 0.05, 5
    q = Quadratic(ptf.AID, upper_optimizer=0.0, lower_optimizer=0.0, linear_solver="neumann", neumann_lr=eta)
    f_v = q.v.numpy() - C
    q.solver.step(None, lower_steps=1, linear_steps=k)
    series = eta * sum(np.linalg.matrix_power(np.eye(3) - eta * A, j) for j in range(k)) @ f_v
    np.testing.assert_allclose(q.solver.p[0].numpy(), series, rtol=1e-4, atol=1e-6)


def test_a_warm_start_carries_p_so_one_cg_step_per_iteration_converges():
    cold = Quadratic(ptf.AID, upper_optimizer=0.0, lower_optimizer=0.0)
    warm = Quadratic(ptf.AID, upper_optimizer=0.0, lower_optimizer=0.0, warm_start=True)
    residuals = {}
    for name, q in (("cold", cold), ("warm", warm)):
        residuals[name] = [float(q.solver.step(None, 1, linear_steps=1)["linear_residual"]) for _ in range(40)]
    assert residuals["cold"][-1] == pytest.approx(residuals["cold"][0])       # the same one step each time
    assert residuals["warm"][-1] < 1e-4 * residuals["warm"][0]     # restarted steepest descent: linear rate


@pytest.mark.parametrize("options,linear_steps", [({"linear_solver": "cg"}, 3),
                                                  ({"linear_solver": "cg", "warm_start": True}, 1),
                                                  ({"linear_solver": "neumann", "neumann_lr": 0.05}, 50)])
def test_aid_reaches_the_bilevel_optimum(options, linear_steps):
    q = Quadratic(ptf.AID, upper_optimizer=0.05, lower_optimizer=0.05, **options)
    q.solver.steps(None, iterations=300, lower_steps=20, linear_steps=linear_steps)
    np.testing.assert_allclose(q.u.numpy(), U_STAR, atol=1e-2)


def test_aid_is_on_the_common_interface():
    u, v = tf.Variable([1.0]), tf.Variable([0.0])
    problem = ptf.BilevelProblem(lambda b: tf.reduce_sum((v - 2.0) ** 2), lambda b: tf.reduce_sum((v - u) ** 2), u, v)
    solver = ptf.make("aid", problem, lr_u=0.1, lr_v=0.1, warm_start=True)
    solver.step(None, 2)
    assert any(x is solver.p[0] for x in solver.state_variables())    # p is saved by checkpoints
    with pytest.raises(ValueError, match="linear_solver must be one of"):
        ptf.solvers.AIDConfig(linear_solver="lu")
    with pytest.raises(ValueError, match="neumann_lr must be > 0"):
        ptf.solvers.AIDConfig(neumann_lr=0.0)
