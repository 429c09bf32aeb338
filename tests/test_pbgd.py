"""V-PBGD and G-PBGD on the quadratic bilevel problem of test_diagnostics.py (closed-form
hypergradient and optimum U_STAR): two steps against a float64 NumPy model of the update, the
closed-form minimiser of the penalised problem and its O(1/gamma) distance to U_STAR, the
u-direction at the penalised minimiser in v, checkpoints, the factory and bad settings."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf import diagnostics
from test_aid import K_MAT, U_STAR
from test_diagnostics import A, B, C, U0, Quadratic

RTOL, ATOL = 1e-5, 1e-6
V0 = np.array([0.3, -0.6, 0.9])
SOLVERS = {"value": ptf.VPBGD, "gradient": ptf.GPBGD}


def quadratic(penalty, lr_u=0.05, lr_v=0.05, v0=V0, momentum=0.0, **options):
    """The quadratic with SGD on both levels and v at ``v0`` (w, V-PBGD's copy, starts there too)."""
    sgd = [keras.optimizers.SGD(lr, momentum=momentum) for lr in (lr_u, lr_v)]
    q = Quadratic(SOLVERS[penalty], upper_optimizer=sgd[0], lower_optimizer=sgd[1], **options)
    q.v.assign(np.asarray(v0, np.float32))
    if penalty == "value":
        q.solver.reset()                                   # w <- v
    return q


# ------------------------------------------------------------------ the update in NumPy

def g_np(u, v):
    return 0.5 * v @ A @ v - v @ B @ u


def f_np(u, v):
    return 0.5 * np.sum((v - C) ** 2) + 0.05 * np.sum(u ** 2)


def pbgd_np(penalty, u, v, w, gamma, steps, lr_inner):
    """Algorithms 1 / 2 on the quadratic, float64: (d_u, d_v, new w, penalty value)."""
    grad_f = np.concatenate([0.1 * u, v - C])
    lower_grad = A @ v - B @ u                                       # grad_v g
    if penalty == "value":
        for _ in range(steps):
            w = w - lr_inner * (A @ w - B @ u)
        d = grad_f + gamma * np.concatenate([-B.T @ v + B.T @ w, lower_grad])   # grad_u g = -B^T v
        value = g_np(u, v) - g_np(u, w)
    else:                                    # grad of gamma |A v - B u|^2 = 2 gamma (-B^T G, A G)
        d = grad_f + 2.0 * gamma * np.concatenate([-B.T @ lower_grad, A @ lower_grad])
        value = lower_grad @ lower_grad
    return d[:2], d[2:], w, value


@pytest.mark.parametrize("penalty", ["value", "gradient"])
@pytest.mark.parametrize("scale_step", [True, False])
def test_three_steps_match_numpy(penalty, scale_step):
    """u, v, w, gamma and every output after each of three steps equal the float64 model (SGD,
    T = 3; the ramp 0.5 -> 2 -> 4 (capped) makes the step scale 1/max(gamma, 1) = 1, 1/2, 1/4)."""
    lr_u, lr_v, lr_inner, steps = 0.03, 0.02, 0.2, 3
    ramp = dict(gamma0=0.5, gamma_growth=2.0, gamma_increment=1.0, gamma_max=4.0, scale_step=scale_step)
    options = dict(ramp, lr_inner=lr_inner) if penalty == "value" else ramp
    q = quadratic(penalty, lr_u, lr_v, **options)
    u, v = U0.copy(), q.v.numpy().astype(np.float64)
    w, gamma = v.copy(), 0.5
    for _ in range(3):
        d_u, d_v, w, value = pbgd_np(penalty, u, v, w, gamma, steps, lr_inner)
        out = q.solver.step(None, lower_steps=steps)
        np.testing.assert_allclose(float(out["f"]), f_np(u, v), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(float(out["g"]), g_np(u, v), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(float(out["penalty"]), value, rtol=RTOL, atol=ATOL)
        assert float(out["gamma"]) == gamma
        s = 1.0 / max(gamma, 1.0) if scale_step else 1.0
        u, v = u - lr_u * s * d_u, v - lr_v * s * d_v
        gamma = min(2.0 * gamma + 1.0, 4.0)
        np.testing.assert_allclose(q.u.numpy(), u, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(q.v.numpy(), v, rtol=RTOL, atol=ATOL)
        assert float(q.solver.gamma.numpy()) == gamma
        if penalty == "value":
            np.testing.assert_allclose(q.solver.w[0].numpy(), w, rtol=RTOL, atol=ATOL)


def penalised_minimiser(penalty, gamma):
    """argmin over (u, v) of f + gamma p, in closed form (p is quadratic here): V-PBGD's
    p = g - g* = 1/2 (v - K u)' A (v - K u) (K = A^-1 B), G-PBGD's p = |A v - B u|^2."""
    if penalty == "value":
        hessian_p = np.block([[K_MAT.T @ A @ K_MAT, -K_MAT.T @ A], [-A @ K_MAT, A]])
    else:
        hessian_p = 2.0 * np.block([[B.T @ B, -B.T @ A], [-A @ B, A @ A]])
    x = np.linalg.solve(gamma * hessian_p + np.diag([0.1, 0.1, 1.0, 1.0, 1.0]), np.concatenate([np.zeros(2), C]))
    return x[:2], x[2:]


#: Per penalty: SGD learning rate (below 2 / the largest curvature of the scaled penalised
#: function, 9.2 for V, 30.3 for G), heavy-ball momentum, T, iterations for gamma = 10 and 100.
RUNS = {"value": (0.1, 0.9, 20, (1000, 1500)), "gradient": (0.03, 0.95, 1, (1000, 3000))}


@pytest.mark.parametrize("penalty", ["value", "gradient"])
def test_pbgd_reaches_the_penalised_minimiser_whose_distance_to_the_optimum_is_o_of_one_over_gamma(penalty):
    """With a constant gamma the iterates converge to the closed-form minimiser (u_g, v_g) of
    f + gamma p (to 1e-4); |u_g - U_STAR| is the method's bias, O(1/gamma) (the paper's
    Section 2): 0.0039 / 0.00039 (V) and 0.0033 / 0.00034 (G) at gamma = 10 / 100."""
    lr, momentum, steps, iterations = RUNS[penalty]
    bias = []
    for gamma, n in zip((10.0, 100.0), iterations):
        options = {"lr_inner": 0.4} if penalty == "value" else {}
        q = quadratic(penalty, lr, lr, momentum=momentum, gamma0=gamma, gamma_max=gamma, **options)
        q.solver.steps(None, iterations=n, lower_steps=steps)
        u_gamma, v_gamma = penalised_minimiser(penalty, gamma)
        np.testing.assert_allclose(q.u.numpy(), u_gamma, atol=1e-4)
        np.testing.assert_allclose(q.v.numpy(), v_gamma, atol=1e-4)
        bias.append(np.linalg.norm(q.u.numpy() - U_STAR))
    assert bias[1] < 0.15 * bias[0] and bias[1] < 1e-3, bias


@pytest.mark.parametrize("penalty", ["value", "gradient"])
def test_at_the_penalised_minimiser_in_v_the_direction_approaches_the_hypergradient(penalty):
    """At u = U0 and v_g = argmin_v f + gamma p (and w = v*(u) for V-PBGD) the v-part of the
    direction is zero, so d_u = f_u + B^T A^-1 (v_g - c), the implicit formula at v_g (exact,
    cosine 1 with at_minimiser=False); against the hypergradient at v*(u) the relative error
    is O(1/gamma): measured 0.62, 0.14, 0.016 (V) and 0.57, 0.12, 0.013 (G) at gamma = 1, 10,
    100, with the cosine rising towards 1 (V: 0.999995 to 0.99999999, G: 0.99989 to 0.99999996)."""
    u, v_star = U0, np.linalg.solve(A, B @ U0)
    errors, cosines = [], []
    for gamma in (1.0, 10.0, 100.0):
        if penalty == "value":                 # (I + gamma A) v = c + gamma B u
            v = np.linalg.solve(np.eye(3) + gamma * A, C + gamma * B @ u)
        else:                                  # (I + 2 gamma A^2) v = c + 2 gamma A B u
            v = np.linalg.solve(np.eye(3) + 2 * gamma * A @ A, C + 2 * gamma * A @ B @ u)
        q = quadratic(penalty, v0=v, gamma0=gamma, gamma_max=gamma)
        if penalty == "value":
            q.solver.w[0].assign(v_star.astype(np.float32))
        d_u, d_v, _, _ = pbgd_np(penalty, u, q.v.numpy().astype(np.float64), v_star, gamma, 0, 0.0)
        assert np.linalg.norm(d_v) < 1e-5 * max(gamma, 1.0)
        at_v = diagnostics.check_hypergradient(q.solver, at_minimiser=False)
        assert at_v.cosine > 0.99999 and at_v.relative_error < 1e-4, at_v
        check = diagnostics.check_hypergradient(q.solver)
        errors.append(check.relative_error)
        cosines.append(check.cosine)
    assert errors == sorted(errors, reverse=True) and errors[2] < 0.05 * errors[0] and errors[2] < 0.02, errors
    assert cosines == sorted(cosines) and cosines[2] > 0.99999, cosines


def test_a_ramped_gamma_reaches_the_optimum():
    """gamma from 1 growing by 5% per iteration to 100 (the paper's code ramps it linearly):
    V-PBGD ends within 1e-3 of U_STAR (the O(1/gamma) bias at 100 is 0.0004)."""
    q = quadratic("value", 0.1, 0.1, momentum=0.9, lr_inner=0.4, gamma0=1.0, gamma_growth=1.05, gamma_max=100.0)
    out = q.solver.steps(None, iterations=1500, lower_steps=20)
    assert float(out["gamma"]) == 100.0
    assert np.linalg.norm(q.u.numpy() - U_STAR) < 1e-3


@pytest.mark.parametrize("penalty", ["value", "gradient"])
def test_a_restored_solver_continues_bitwise(penalty, tmp_path):
    """tf.train.Checkpoint(solver=...) with Adam on both levels and a ramped gamma: a second
    solver on other variable values, restored from it, continues exactly as the first (gamma,
    V-PBGD's w and the optimizer moments are restored)."""
    options = dict(upper_optimizer=0.05, lower_optimizer=0.05, gamma0=1.0, gamma_growth=1.5, gamma_max=50.0)
    if penalty == "value":
        options["lr_inner"] = 0.2
    first, second = (Quadratic(SOLVERS[penalty], **options) for _ in range(2))
    for _ in range(3):
        first.solver.step(None, lower_steps=4)
    path = tf.train.Checkpoint(solver=first.solver).write(str(tmp_path / "ckpt"))
    assert not np.array_equal(second.v.numpy(), first.v.numpy())
    tf.train.Checkpoint(solver=second.solver).read(path).assert_consumed()
    assert second.solver.iteration == 3 and float(second.solver.gamma.numpy()) == 1.5 ** 3
    for _ in range(3):
        a, b = first.solver.step(None, lower_steps=4), second.solver.step(None, lower_steps=4)
        assert {k: float(x) for k, x in a.items()} == {k: float(x) for k, x in b.items()}
    for x, y in zip(first.solver.variables() + first.solver.state_variables(),
                    second.solver.variables() + second.solver.state_variables()):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_pbgd_is_on_the_common_interface():
    u, v = tf.Variable([1.0, 0.5]), tf.Variable([0.0, 0.0])
    problem = ptf.BilevelProblem(lambda b: tf.reduce_sum((v - 2.0) ** 2), lambda b: tf.reduce_sum((v - u) ** 2),
                                 u, v, lower_bounds=(-0.5, 0.5))
    solver = ptf.make("v-pbgd", problem, lr_u=0.1, lr_v=0.1, lr_inner=0.3, gamma0=2.0, gamma_increment=1.0)
    assert isinstance(solver, ptf.VPBGD) and solver.lr_inner == 0.3 and float(solver.gamma.numpy()) == 2.0
    for steps in (1, 3, 5):
        out = solver.step(None, steps)
    assert solver.tracing_count() == 1 and float(out["gamma"]) == 4.0 and float(solver.gamma.numpy()) == 5.0
    assert set(out) == {"f", "g", "penalty", "gamma", "status"} and solver.state_outputs == ("gamma",)
    assert np.all(np.abs(v.numpy()) <= 0.5) and np.all(np.abs(solver.w[0].numpy()) <= 0.5)   # projections
    solver.reset()
    assert float(solver.gamma.numpy()) == 2.0
    np.testing.assert_array_equal(solver.w[0].numpy(), v.numpy())
    g_solver = ptf.make("g-pbgd", problem, ptf.GPBGDConfig(gamma0=3.0, gamma_max=3.0))
    assert isinstance(g_solver, ptf.GPBGD) and float(g_solver.step(None)["gamma"]) == 3.0
    assert any(x is solver.w[0] for x in solver.state_variables())
    with pytest.raises(ValueError, match="gamma_growth must be >= 1"):
        ptf.VPBGDConfig(gamma_growth=0.5)
    with pytest.raises(ValueError, match="gamma_max must be >= gamma0"):
        ptf.make("g-pbgd", problem, gamma0=10.0, gamma_max=5.0)
    with pytest.raises(ValueError, match="lr_inner must be > 0"):
        ptf.VPBGD(problem.upper_loss, problem.lower_loss, u, v, lr_inner=0.0)
    with pytest.raises(ValueError, match="gamma0 must be >= 0"):
        ptf.GPBGD(problem.upper_loss, problem.lower_loss, u, v, gamma0=-1.0)
    with pytest.raises(TypeError, match="g-pbgd: expected a GPBGDConfig, got VPBGDConfig"):
        ptf.make("g-pbgd", problem, ptf.VPBGDConfig())


def test_the_xla_compiled_step_is_the_same():
    """jit_compile=True (w's values swapped through v's variables inside one XLA program)."""
    runs = []
    for jit in (False, True):
        q = quadratic("value", lr_inner=0.2, gamma0=1.0, gamma_growth=1.5, jit_compile=jit)
        runs.append([float(q.solver.step(None, lower_steps=3)["penalty"]) for _ in range(3)] + list(q.u.numpy()))
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-5, atol=1e-6)


def test_a_nan_in_the_inner_steps_is_named():
    u, v = tf.Variable([1.0]), tf.Variable([0.0])
    solver = ptf.VPBGD(lambda b: tf.reduce_sum(v ** 2), lambda b: tf.reduce_sum(tf.sqrt(v - u)), u, v)
    with pytest.raises(ptf.NonFiniteError, match=r"the gradient of g w.r.t. the lower variables at the auxiliary "
                                                   r"copy w is not finite \(NaN or Inf\) at lower step 0"):
        solver.step(None, lower_steps=2)
