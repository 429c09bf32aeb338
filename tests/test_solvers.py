"""The four solvers: maths (Lemma 3, exact reverse mode), schedule, compilation, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from penalty_tf import autodiff
from penalty_tf.solvers import GD, RMD, ApproxGrad, NonFiniteError, Penalty, PenaltySchedule

NU, NV = 3, 4


class Quadratic:
    """min_u 1/2||v - c||^2 + alpha/2 ||u||^2  s.t.  v in argmin_v 1/2 v'Av - v'Bu.

    v*(u) = A^{-1} B u =: M u, so u* = (M'M + alpha I)^{-1} M'c and v* = M u*; the exact
    hypergradient is f_u - g_uv g_vv^{-1} f_v = alpha u + B' A^{-1} (v - c).
    """

    alpha = 0.1

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        q = rng.normal(size=(NV, NV))
        self.A = (q @ q.T / NV + np.eye(NV)).astype(np.float32)
        self.B = rng.normal(size=(NV, NU)).astype(np.float32)
        self.c = rng.normal(size=NV).astype(np.float32)
        m = np.linalg.solve(self.A.astype(np.float64), self.B)
        self.u_star = np.linalg.solve(m.T @ m + self.alpha * np.eye(NU), m.T @ self.c)
        self.v_star = m @ self.u_star
        self.u = tf.Variable(np.zeros(NU, np.float32))
        self.v = tf.Variable(np.zeros(NV, np.float32))

    def f(self, batch=None):
        return 0.5 * tf.reduce_sum((self.v - self.c) ** 2) + 0.5 * self.alpha * tf.reduce_sum(self.u ** 2)

    def g(self, batch=None):
        return (0.5 * tf.tensordot(self.v, tf.linalg.matvec(self.A, self.v), 1)
                - tf.tensordot(self.v, tf.linalg.matvec(self.B, self.u), 1))

    def error(self):
        return float(np.sqrt(np.sum((self.u.numpy() - self.u_star) ** 2)
                             + np.sum((self.v.numpy() - self.v_star) ** 2)))

    def hypergradient(self, u, v):
        return self.alpha * u + self.B.T.astype(np.float64) @ np.linalg.solve(self.A, v - self.c)


# ----------------------------------------------------------------------------- maths


@pytest.mark.parametrize("rho", [1.0, 10.0, 100.0, 1000.0])
def test_lemma3_penalty_direction_is_the_hypergradient_at_the_penalty_minimum(rho):
    """At v_rho = argmin_v f + rho/2 ||grad_v g||^2 the Penalty u-direction equals the exact
    hypergradient at v_rho, and approaches the one at v*(u) as O(1/rho)."""
    q = Quadratic()
    u = np.array([0.3, -0.7, 1.1])
    a, b, c = (x.astype(np.float64) for x in (q.A, q.B, q.c))
    # h_v = (v - c) + rho A (A v - B u) = 0.
    v_rho = np.linalg.solve(np.eye(NV) + rho * a @ a, c + rho * a @ b @ u)
    q.u.assign(u.astype(np.float32))
    q.v.assign(v_rho.astype(np.float32))
    solver = Penalty(q.f, q.g, q.u, q.v, schedule=PenaltySchedule(rho0=rho, nu0=0.0, lamb0=0.0))
    grad_u, grad_v = solver.gradients()
    np.testing.assert_allclose(grad_v[0].numpy(), 0.0, atol=2e-4 * max(1.0, rho))  # v_rho is the minimum
    exact_at_v_rho = q.hypergradient(u, v_rho)
    np.testing.assert_allclose(grad_u[0].numpy(), exact_at_v_rho, rtol=1e-3, atol=1e-4)
    exact = q.hypergradient(u, np.linalg.solve(a, b @ u))
    gap = np.linalg.norm(grad_u[0].numpy() - exact)
    assert gap < 3.0 / rho   # O(1/rho) with this problem's constants
    if rho >= 1000:
        assert gap < 3e-3


def test_rmd_exact_reverse_mode_equals_the_closed_form_unrolled_derivative():
    """exact=True: p = grad_u f + (dv_T/du)' grad_v f with dv_T/du = sum_t (I - aA)^t a B."""
    q = Quadratic(1)
    u0 = np.array([0.5, -0.2, 0.1], np.float32)
    v0 = np.array([0.3, 0.1, -0.4, 0.2], np.float32)
    q.u.assign(u0)
    q.v.assign(v0)
    lr_u, lr_v, steps = 0.5, 0.2, 6
    RMD(q.f, q.g, q.u, q.v, upper_lr=lr_u, lower_lr=lr_v, exact=True).step(lower_steps=steps)
    a, b = q.A.astype(np.float64), q.B.astype(np.float64)
    v = v0.astype(np.float64)
    for _ in range(steps):
        v = v - lr_v * (a @ v - b @ u0)
    jac = sum(np.linalg.matrix_power(np.eye(NV) - lr_v * a, t) @ (lr_v * b) for t in range(steps))
    p = q.alpha * u0 + jac.T @ (v - q.c)
    np.testing.assert_allclose(q.u.numpy(), u0 - lr_u * p, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(q.v.numpy(), v, rtol=1e-4, atol=1e-5)


def test_rmd_faithful_indexing_omits_the_first_step():
    """Default: the reverse pass skips the first step's Jacobian; T = 1 is plain GD on f."""
    q = Quadratic(2)
    u0 = np.array([0.5, -0.2, 0.1], np.float32)
    q.u.assign(u0)
    q.v.assign(np.zeros(NV, np.float32))
    lr_u, lr_v = 0.5, 0.2
    RMD(q.f, q.g, q.u, q.v, upper_lr=lr_u, lower_lr=lr_v).step(lower_steps=1)
    np.testing.assert_allclose(q.u.numpy(), u0 - lr_u * q.alpha * u0, rtol=1e-6)
    # T = 3: the sum runs over t = 0, 1 only (the step from v_0 is missing).
    q.u.assign(u0)
    q.v.assign(np.zeros(NV, np.float32))
    RMD(q.f, q.g, q.u, q.v, upper_lr=lr_u, lower_lr=lr_v).step(lower_steps=3)
    a, b = q.A.astype(np.float64), q.B.astype(np.float64)
    v = np.zeros(NV)
    for _ in range(3):
        v = v - lr_v * (a @ v - b @ u0)
    jac = sum(np.linalg.matrix_power(np.eye(NV) - lr_v * a, t) @ (lr_v * b) for t in range(2))
    np.testing.assert_allclose(q.u.numpy(), u0 - lr_u * (q.alpha * u0 + jac.T @ (v - q.c)),
                               rtol=1e-4, atol=1e-5)


def _run(solver, iterations, lower_steps, chunk=500):
    for _ in range(iterations // chunk):
        solver.steps(None, chunk, lower_steps)


@pytest.mark.parametrize("name, make, iterations, tolerance", [
    ("approxgrad", lambda q: ApproxGrad(q.f, q.g, q.u, q.v, upper_optimizer=1e-2, lower_optimizer=1e-2,
                                        linear_optimizer=1e-2, sig=1e-6, jit_compile=True), 2000, 5e-3),
    ("rmd", lambda q: RMD(q.f, q.g, q.u, q.v, upper_lr=0.1, lower_lr=0.3, jit_compile=True), 2000, 1e-2),
    ("penalty", lambda q: Penalty(q.f, q.g, q.u, q.v, upper_optimizer=1e-2, lower_optimizer=1e-2,
                                  schedule=PenaltySchedule(rho0=1.0, lamb0=1.0, eps0=1.0, nu0=0.0),
                                  jit_compile=True), 10000, 5e-2),
])
def test_solvers_reach_the_optimum_of_a_quadratic_bilevel_problem(name, make, iterations, tolerance):
    """From (0, 0) at distance ~1.25; T = 10. Step sizes chosen for this problem (not defaults)."""
    q = Quadratic()
    start = q.error()
    solver = make(q)
    _run(solver, iterations, 10)
    assert start > 1.0
    assert q.error() < tolerance, f"{name}: err {q.error()}"


def test_gd_does_not_reach_the_optimum():
    """grad_u f = alpha u ignores v*(u): GD stays at u = 0, far from u*."""
    q = Quadratic()
    _run(GD(q.f, q.g, q.u, q.v, upper_optimizer=1e-2, lower_optimizer=1e-2, jit_compile=True), 2000, 10)
    assert q.error() > 1.0


# ------------------------------------------------------------ schedule and state


def test_schedule_fires_exactly_by_the_rule():
    """eps_0 huge: the test passes at once; rho, lambda, eps, nu, learning rates move by the rule."""
    q = Quadratic()
    q.u.assign([0.2, 0.1, -0.3])
    q.v.assign([0.5, -0.5, 0.2, 0.1])
    schedule = PenaltySchedule(rho0=2.0, lamb0=0.5, eps0=1e6, nu0=1e-2, c_rho=1.5, c_lamb=0.8,
                               c_eps=0.7, lr_decay=0.9)
    solver = Penalty(q.f, q.g, q.u, q.v, upper_optimizer=1e-2, lower_optimizer=1e-3, schedule=schedule)
    out = solver.step(lower_steps=3)
    assert bool(out["converged"])
    state = solver.state()
    assert state["rho"] == pytest.approx(3.0)
    assert state["lamb"] == pytest.approx(0.4)
    assert state["eps"] == pytest.approx(7e5)
    assert state["lr_upper"][0] == pytest.approx(9e-3)
    assert state["lr_lower"][0] == pytest.approx(9e-4)
    # nu = nu_0 + rho_new * G, G at the current point on the same batch.
    _, grad = autodiff.gradient(q.g, [q.v])
    np.testing.assert_allclose(solver.nu[0].numpy(), 1e-2 + 3.0 * grad[0].numpy(), rtol=1e-5, atol=1e-7)
    # The returned terms are those before the update (old rho, lambda, nu).
    assert float(out["penalty"]) == pytest.approx(0.5 * 2.0 * float(np.sum(grad[0].numpy() ** 2)), rel=1e-4)
    assert float(out["lamb_g"]) == pytest.approx(0.5 * float(q.g()), rel=1e-5)
    assert float(out["nu_term"]) == pytest.approx(1e-2 * float(np.sum(grad[0].numpy())), rel=1e-4)
    # The test is on fourth powers: hu^2 + hv^2 < eps^2.
    assert float(out["hu"]) ** 2 + float(out["hv"]) ** 2 < 1e12


def test_tolerance_test_is_on_fourth_powers():
    """converged <=> hu^2 + hv^2 < eps^2 with hu, hv squared norms (a norm test would differ)."""
    def run(eps0):
        q = Quadratic()
        q.v.assign([3.0, -3.0, 2.0, 1.0])   # far from v*: squared gradient norms > 1
        solver = Penalty(q.f, q.g, q.u, q.v, schedule=PenaltySchedule(eps0=eps0, nu0=1e-3))
        out = solver.step(lower_steps=2)
        return out, solver

    out, solver = run(1e-8)
    assert not bool(out["converged"])
    assert solver.state()["rho"] == pytest.approx(1e-2)
    np.testing.assert_allclose(solver.nu[0].numpy(), 1e-3)
    hu, hv = float(out["hu"]), float(out["hv"])
    assert hu + hv > 1.0
    norm, quirk = np.sqrt(hu + hv), np.sqrt(hu ** 2 + hv ** 2)
    between = 0.5 * (norm + quirk)      # the paper's norm test passes here, the code's does not
    assert not bool(run(between)[0]["converged"])
    assert bool(run(1.01 * quirk)[0]["converged"])


def test_schedule_variants():
    assert PenaltySchedule.multi_group().lr_decay == 0.99
    s = PenaltySchedule.synthetic()
    assert (s.rho0, s.lamb0, s.eps0, s.nu0) == (1.0, 10.0, 1.0, 0.0)
    assert s.c_lamb == pytest.approx(1 / 1.1) and s.lr_decay == pytest.approx(1 / 1.1)


def test_reset_restart_and_reset_lower():
    q = Quadratic()
    v0 = q.v.numpy().copy()
    solver = Penalty(q.f, q.g, q.u, q.v, schedule=PenaltySchedule(eps0=1e6, nu0=1e-3))
    solver.step(lower_steps=2)
    assert solver.state()["rho"] > 1e-2
    adam = solver.lower.optimizers[0]
    assert int(adam.iterations.numpy()) == 2
    solver.reset()
    assert solver.state()["rho"] == pytest.approx(1e-2)
    assert solver.state()["lr_lower"][0] == pytest.approx(1e-4)
    np.testing.assert_allclose(solver.nu[0].numpy(), 1e-3)
    assert int(adam.iterations.numpy()) == 2   # reset keeps Adam moments, as the original
    solver.restart()
    assert int(adam.iterations.numpy()) == 0
    assert float(tf.reduce_sum(tf.abs(adam.variables[2]))) == 0.0
    solver.reset_lower()
    np.testing.assert_array_equal(q.v.numpy(), v0)


def test_multi_group_penalty_uses_one_optimizer_per_group():
    a = tf.Variable([1.0, 2.0])
    b = tf.Variable([0.5])
    u = tf.Variable([0.3])

    def g(batch=None):
        return tf.reduce_sum((a - u) ** 2) + tf.reduce_sum((b + u) ** 2)

    def f(batch=None):
        return tf.reduce_sum(a ** 2) + tf.reduce_sum(b ** 2)

    solver = Penalty(f, g, [[u]], [[a], [b]], upper_optimizer=[1e-2], lower_optimizer=[1e-2, 1e-3],
                     schedule=PenaltySchedule.multi_group(eps0=1e6))
    solver.step(lower_steps=4)
    assert [int(o.iterations.numpy()) for o in solver.lower.optimizers] == [4, 4]
    assert solver.state()["lr_lower"] == pytest.approx([0.99e-2, 0.99e-3])
    assert solver.state()["lr_upper"] == pytest.approx([0.99e-2])
    with pytest.raises(ValueError, match="2 variable groups"):
        Penalty(f, g, u, [[a], [b]], lower_optimizer=[1e-2])
    opt = keras.optimizers.Adam(1e-3)
    with pytest.raises(ValueError, match="same optimizer instance"):
        Penalty(f, g, u, [[a], [b]], lower_optimizer=[opt, opt])


def test_approxgrad_step_counts_and_extra_linear_step():
    q = Quadratic()
    solver = ApproxGrad(q.f, q.g, q.u, q.v, extra_linear_step=True)
    solver.step(lower_steps=3, linear_steps=5)
    counts = [int(level.optimizers[0].iterations.numpy()) for level in solver.levels()]
    assert counts == [1, 3, 6]   # u, v, p: niter2 + 1 p-steps (the synthetic quirk)
    solver2 = ApproxGrad(q.f, q.g, q.u, q.v)
    solver2.step(lower_steps=2)
    assert [int(level.optimizers[0].iterations.numpy()) for level in solver2.levels()] == [1, 2, 2]


def test_approxgrad_u_step_is_the_surrogate_gradient_with_indexed_correction():
    """Two separable lower groups; 'indexed' corrects u with group 0 only, 'all' with both."""
    results = {}
    for correction in ("indexed", "all"):
        a = tf.Variable([1.0, -1.0])
        b = tf.Variable([0.5, 0.2])
        u = tf.Variable([0.3, -0.4])

        def g(batch=None):
            return tf.reduce_sum((a - u) ** 2) + tf.reduce_sum((2.0 * b - u) ** 2)

        def f(batch=None):
            return tf.reduce_sum(a ** 2) + tf.reduce_sum((b - 1.0) ** 2) + 0.1 * tf.reduce_sum(u ** 2)

        solver = ApproxGrad(f, g, [u], [[a], [b]], upper_optimizer=keras.optimizers.SGD(1.0),
                            lower_optimizer=[1e-2, 1e-2], linear_optimizer=[1e-2, 1e-2],
                            correction=correction)
        u0 = u.numpy().copy()
        solver.step(lower_steps=2, linear_steps=3)
        pa, pb = (p.numpy() for p in solver.linear.variables)
        # At the final v: grad_u f = 0.2 u; H_{u a} = -2 I, H_{u b} = -4 I.
        grad_u = 0.2 * u0 - (-2.0) * pa
        if correction == "all":
            grad_u = grad_u - (-4.0) * pb
        np.testing.assert_allclose(u.numpy(), u0 - grad_u, rtol=1e-5, atol=1e-6)
        results[correction] = u.numpy()
    assert not np.allclose(results["indexed"], results["all"])



def test_approxgrad_correction_weights_multiply_p_in_the_u_step():
    """``correction_weights`` m: the u-step uses grad_u f - H_uv (m p); here v is one
    (2, 2) variable whose rows are two batched 'tasks' and m keeps row 0 only."""
    v = tf.Variable([[1.0, -1.0], [0.5, 0.2]])
    u = tf.Variable([0.3, -0.4])

    def g(batch=None):
        return tf.reduce_sum((v - u) ** 2)            # H_uv q = -2 (q_0 + q_1)

    def f(batch=None):
        return tf.reduce_sum(v ** 2) + 0.1 * tf.reduce_sum(u ** 2)

    mask = np.array([[1.0], [0.0]], np.float32)
    solver = ApproxGrad(f, g, [u], [v], upper_optimizer=keras.optimizers.SGD(1.0),
                        lower_optimizer=1e-2, linear_optimizer=1e-2, correction_weights=[mask])
    u0 = u.numpy().copy()
    solver.step(lower_steps=2, linear_steps=3)
    p = solver.linear.variables[0].numpy()
    assert np.abs(p[1]).max() > 1e-3                     # the masked row is not zero itself
    np.testing.assert_allclose(u.numpy(), u0 - (0.2 * u0 + 2.0 * p[0]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one per lower variable"):
        ApproxGrad(f, g, [u], [v], correction_weights=[mask, mask])
    with pytest.raises(ValueError):
        ApproxGrad(f, g, [u], [v], correction_weights=[np.ones((3, 1), np.float32)])

# -------------------------------------------------------- compilation and projection


@pytest.mark.parametrize("cls", [Penalty, ApproxGrad, RMD, GD])
def test_no_retracing_across_calls_and_lower_step_counts(cls):
    x = tf.Variable(tf.zeros(3))
    w = tf.Variable(tf.ones(3))

    def g(batch):
        return tf.reduce_sum((w - x * batch) ** 2)

    def f(batch):
        # (0 x: GD's u-step uses df/du only, and a u no gradient reaches is refused)
        return tf.reduce_sum((w - 1.0) ** 2) + tf.reduce_sum(batch) * 0.0 + 0.0 * tf.reduce_sum(x)

    solver = cls(f, g, x, w)
    for k, t in enumerate([1, 3, 5, 3]):
        solver.step(tf.constant(np.full(3, k, np.float32)), lower_steps=t)
        solver.set_learning_rates(upper=0.1 / (k + 1), lower=0.01 / (k + 1))   # by assignment
    assert solver.tracing_count() == 1
    if cls is RMD:
        assert float(solver.upper_lr.numpy()) == pytest.approx(0.025)
    else:
        assert solver.upper.learning_rates() == pytest.approx([0.025])
    for t in (2, 4):
        solver.steps(tf.constant(np.ones(3, np.float32)), iterations=3, lower_steps=t)
    assert solver.tracing_count() == 2
    assert solver.iteration == 4 + 6


def test_steps_equals_repeated_step():
    outs = []
    for many in (False, True):
        q = Quadratic()
        q.v.assign([0.1, 0.2, 0.3, 0.4])
        solver = Penalty(q.f, q.g, q.u, q.v, upper_optimizer=1e-2, lower_optimizer=1e-2,
                         schedule=PenaltySchedule(eps0=0.5, nu0=0.0))
        if many:
            out = solver.steps(iterations=7, lower_steps=3)
        else:
            for _ in range(7):
                out = solver.step(lower_steps=3)
        outs.append((q.u.numpy(), q.v.numpy(), solver.state()["rho"], float(out["f"])))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert outs[0][2:] == outs[1][2:]


@pytest.mark.parametrize("cls", [Penalty, ApproxGrad, RMD, GD])
def test_box_projection_after_every_update(cls):
    """Huge steps push both levels out of the box; the projection keeps them inside."""
    u = tf.Variable([0.05, 0.05])
    v = tf.Variable([0.0, 0.0])

    def g(batch=None):
        return tf.reduce_sum((v - 10.0 * u - 5.0) ** 2)

    def f(batch=None):
        return -tf.reduce_sum(u) * 100.0 - tf.reduce_sum(v)

    kwargs = dict(upper_bounds=(0.0, 0.1), lower_bounds=(-1.0, 1.0))
    if cls is RMD:
        kwargs.update(upper_lr=10.0, lower_lr=10.0)
    else:
        kwargs.update(upper_optimizer=10.0, lower_optimizer=10.0)
    solver = cls(f, g, u, v, **kwargs)
    for _ in range(3):
        solver.step(lower_steps=2)
        assert np.all(u.numpy() >= 0.0) and np.all(u.numpy() <= 0.1)
        assert np.all(v.numpy() >= -1.0) and np.all(v.numpy() <= 1.0)
    assert np.any(np.isclose(u.numpy(), 0.1)) and np.any(np.isclose(np.abs(v.numpy()), 1.0))


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cls", [Penalty, ApproxGrad, RMD, GD])
def test_nan_stops_the_solver_with_a_clear_error(cls):
    """g = sum(log v) turns NaN once a step pushes v below zero."""
    u = tf.Variable([1.0])
    v = tf.Variable([0.5])

    def g(batch=None):
        return tf.reduce_sum(tf.math.log(v)) + tf.reduce_sum(u * v)

    def f(batch=None):
        return tf.reduce_sum(v ** 2 + u ** 2)

    kwargs = dict(upper_lr=1.0, lower_lr=10.0) if cls is RMD else dict(lower_optimizer=1.0)
    solver = cls(f, g, u, v, **kwargs)
    with pytest.raises(NonFiniteError, match=r"is not finite \(NaN or Inf\) (at lower step \d+|after the lower-level steps) of upper iteration \d+"):
        for _ in range(5):
            solver.step(lower_steps=3)


def test_nan_in_steps_names_the_iteration():
    u = tf.Variable([1.0])
    v = tf.Variable([5.0])

    def g(batch=None):
        return tf.reduce_sum(tf.math.log(v)) + tf.reduce_sum(u * v)

    def f(batch=None):
        return tf.reduce_sum(v ** 2)

    # Each Adam step (lr 0.5, constant-sign gradient) moves v by -0.5: after the 10th
    # iteration (number 9, counted from 0) v = 0 and g = log(0) = -inf.
    solver = GD(f, g, u, v, lower_optimizer=0.5)
    with pytest.raises(NonFiniteError) as info:
        solver.steps(iterations=50, lower_steps=1)
    assert str(info.value).startswith(
        "GD: g is not finite (NaN or Inf) after the lower-level steps of upper iteration 9 ")
    assert solver.iteration == 9   # iterations 0..8 completed; the failed one is not counted


def test_bad_arguments():
    q = Quadratic()
    with pytest.raises(ValueError, match="lower_steps"):
        Penalty(q.f, q.g, q.u, q.v).step(lower_steps=0)
    with pytest.raises(ValueError, match="correction"):
        ApproxGrad(q.f, q.g, q.u, q.v, correction="some")
    with pytest.raises(ValueError, match="empty box"):
        GD(q.f, q.g, q.u, q.v, upper_bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="no variables"):
        GD(q.f, q.g, [], q.v)


@pytest.mark.parametrize("cls", [Penalty, ApproxGrad])
def test_lower_step_batch_hook_gives_the_same_iterates(cls):
    """Features of u computed once per iteration (the hook) = recomputed at every lower step."""
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(20, 4)), tf.float32)
    y = tf.constant(rng.normal(size=(20, 1)), tf.float32)
    runs = []
    for hook in (False, True):
        u = tf.Variable(rng.normal(size=(4, 3)).astype(np.float32) if not runs else runs[0][2])
        v = tf.Variable(np.zeros((3, 1), np.float32))
        seen = []

        def features(batch):
            return batch["features"] if "features" in batch else tf.tanh(batch["x"] @ u)

        def g(batch):
            seen.append(sorted(batch))
            return tf.reduce_mean((features(batch) @ v - batch["y"]) ** 2) + 0.1 * tf.reduce_sum(v ** 2)

        def f(batch):
            return tf.reduce_mean((features(batch) @ v - 0.5 * batch["y"]) ** 2)

        solver = cls(f, g, [u], [v], upper_optimizer=1e-2, lower_optimizer=1e-1,
                     lower_step_batch=(lambda b: {"features": tf.tanh(b["x"] @ u), "y": b["y"]}) if hook else None)
        u0 = u.numpy().copy()
        for _ in range(3):
            solver.step({"x": x, "y": y}, lower_steps=4)
        runs.append((u.numpy(), v.numpy(), u0))
        assert (["features", "y"] in seen) == hook      # the lower steps got the features
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runs[1][1], runs[0][1], rtol=1e-5, atol=1e-6)
    assert np.abs(runs[0][0] - runs[0][2]).max() > 1e-3
