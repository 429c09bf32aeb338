"""penalty_tf.diagnostics: the exact hypergradient by conjugate gradients and the check of a
solver's u-direction against it, on a quadratic bilevel problem with a closed form."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf import diagnostics

RNG = np.random.default_rng(0)
M = RNG.normal(size=(3, 3))
A = M @ M.T + 0.5 * np.eye(3)            # H_vv, SPD
B = RNG.normal(size=(3, 2))
C = np.array([1.0, -2.0, 0.5])
U0 = np.array([0.7, -0.3])


class Quadratic:
    """g = 1/2 v^T A v - v^T B u, f = 1/2 |v - c|^2 + 0.05 |u|^2: v*(u) = A^-1 B u and the
    IFT hypergradient at any v is 0.1 u + B^T A^-1 (v - c)."""

    def __init__(self, cls=ptf.Penalty, a=A, **options):
        self.a = tf.constant(a, tf.float32)
        self.u = tf.Variable(U0.astype(np.float32), name="u")
        self.v = tf.Variable(RNG.normal(size=3).astype(np.float32), name="v")
        self.solver = cls(self.f, self.g, self.u, self.v, **options)

    def g(self, batch):
        v = self.v[:, None]
        return tf.reduce_sum(0.5 * tf.transpose(v) @ self.a @ v) - tf.reduce_sum(self.v * tf.linalg.matvec(B.astype(np.float32), self.u))

    def f(self, batch):
        return 0.5 * tf.reduce_sum(tf.square(self.v - C.astype(np.float32))) + 0.05 * tf.reduce_sum(tf.square(self.u))

    def ift(self, v=None):
        v = self.v.numpy() if v is None else v
        return 0.1 * self.u.numpy() + B.T @ np.linalg.solve(A, v - C)

    def v_star(self):
        return np.linalg.solve(A, B @ self.u.numpy())

    def hypergradient(self):
        """dF/du of F(u) = f(u, v*(u))."""
        return self.ift(self.v_star())


def test_conjugate_gradients_solves_a_spd_system():
    b = RNG.normal(size=3)
    x, iterations, residual, negative = diagnostics.conjugate_gradients(lambda q: A @ q, b, tol=1e-12)
    np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-10)
    assert iterations <= 3 and residual < 1e-12 and not negative


def test_the_exact_hypergradient_is_df_du_at_the_lower_minimiser_and_v_is_restored():
    q = Quadratic()
    v = q.v.numpy().copy()
    exact, cg = diagnostics.exact_hypergradient(q.solver)
    np.testing.assert_allclose(exact[0].numpy(), q.hypergradient(), rtol=2e-4, atol=1e-5)
    assert cg["iterations"] <= 4 and cg["residual"] < 1e-6 and not cg["negative_curvature"]
    assert cg["lower_grad_norm"] < 1e-4
    np.testing.assert_array_equal(q.v.numpy(), v)
    at_v, _ = diagnostics.exact_hypergradient(q.solver, at_minimiser=False)   # the IFT formula at v
    np.testing.assert_allclose(at_v[0].numpy(), q.ift(), rtol=2e-4, atol=1e-5)


def test_penalty_direction_approaches_the_hypergradient_at_the_minimiser_of_h_lower_as_rho_grows():
    """Lemma 3: at the minimiser of h_lower (nu = 0, lambda = 0), grad_u h_upper -> dF/du as
    rho -> infinity; at v* with small rho it is f_u alone (G = 0), a poor direction."""
    cosines = []
    for rho in (1e-2, 1.0, 1e2, 1e4):
        q = Quadratic(schedule=ptf.PenaltySchedule(rho0=rho, lamb0=1e-12, nu0=0.0))
        bu = B @ U0
        v = np.linalg.solve(np.eye(3) + rho * A @ A, C + rho * A @ bu)   # argmin_v f + rho/2 |G|^2
        q.v.assign(v.astype(np.float32))
        check = diagnostics.check_hypergradient(q.solver)
        cosines.append(check.cosine)
        np.testing.assert_allclose(check.exact_norm, np.linalg.norm(q.hypergradient()), rtol=1e-3)
    assert cosines == sorted(cosines) and cosines[-1] > 0.9999 and cosines[0] < 0.9, cosines


def test_approxgrad_with_the_solved_p_is_exact_and_gd_is_not():
    q = Quadratic(ptf.ApproxGrad, sig=0.0)
    q.v.assign(q.v_star().astype(np.float32))
    p = np.linalg.solve(A, q.v.numpy() - C)
    q.solver.linear.variables[0].assign(p.astype(np.float32))
    check = diagnostics.check_hypergradient(q.solver)
    assert check.cosine > 0.99999 and check.relative_error < 1e-4
    g = Quadratic(ptf.GD)
    check = diagnostics.check_hypergradient(g.solver)
    f_u, exact = 0.1 * U0, g.hypergradient()
    assert check.cosine == pytest.approx(f_u @ exact / np.linalg.norm(f_u) / np.linalg.norm(exact), rel=1e-4)


def test_too_large_a_lower_level_is_refused_saying_how_to_subsample_and_indefinite_h_is_reported():
    q = Quadratic()
    with pytest.raises(ValueError, match=r"the lower level has 3 parameters, more than max_lower_size=2.*sub-problem"):
        diagnostics.check_hypergradient(q.solver, max_lower_size=2)
    indefinite = Quadratic(a=np.diag([1.0, -1.0, 2.0]))
    assert diagnostics.check_hypergradient(indefinite.solver).negative_curvature
    with pytest.raises(NotImplementedError, match="no u-direction at a fixed point"):
        diagnostics.check_hypergradient(Quadratic(ptf.RMD).solver)


def test_the_monitor_logs_the_cosine_and_warns_when_it_stays_low():
    q = Quadratic(ptf.GD, upper_optimizer=1e-3, lower_optimizer=1e-3)
    monitor = diagnostics.HypergradientMonitor(None, every=2, warn_below=0.999, patience=2)
    with pytest.warns(UserWarning, match="cosine below 0.999 with the exact hypergradient at 2 checks in a row"):
        history = q.solver.run([None] * 4, epochs=2, lower_steps=1, verbose=0, callbacks=[monitor])
    assert len(monitor.checks) == 4 and "hypergradient_cosine" in history.history
    assert history.history["hypergradient_cosine"][-1] == pytest.approx(monitor.checks[-1].cosine)
    with pytest.raises(ValueError, match="every and patience must be >= 1"):
        diagnostics.HypergradientMonitor(None, every=0)
    assert isinstance(monitor, keras.callbacks.Callback)


def test_the_lower_minimiser_is_found_where_full_newton_steps_overshoot():
    """A softmax-free logistic lower level on separable points with a small L2 term, started
    far from v*: full Newton steps diverge there (|grad g| grew 0.03 -> 8.7 on the
    distillation benchmark before the line search). The damped Newton of the check reaches
    v* to float32 round-off, and its hypergradient equals a float64 NumPy computation."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 4))
    y = np.sign(x @ np.array([1.0, -2.0, 0.5, 1.0]))                 # separable
    xv, yv = rng.normal(size=(30, 4)), np.sign(rng.normal(size=30))
    wd = 1e-2
    u = tf.Variable([0.3], name="shift")                                # moves every margin
    w = tf.Variable(rng.normal(size=4).astype(np.float32) * 8.0, name="w")
    X, Y, XV, YV = (tf.constant(a, tf.float32) for a in (x, y, xv, yv))

    def g(batch):
        return tf.reduce_mean(tf.nn.softplus(-Y * (tf.linalg.matvec(X, w) + u))) + 0.5 * wd * tf.reduce_sum(w * w)

    def f(batch):
        return tf.reduce_mean(tf.nn.softplus(-YV * tf.linalg.matvec(XV, w)))

    solver = ptf.GD(f, g, u, w, upper_optimizer=0.0, lower_optimizer=0.0)
    start = w.numpy()
    exact, report = diagnostics.exact_hypergradient(solver)
    np.testing.assert_array_equal(w.numpy(), start)              # v restored
    assert report["lower_grad_norm"] < 1e-5 and not report["negative_curvature"]

    def sig(z):
        return 1.0 / (1.0 + np.exp(-z))

    def lower_grad_hess(wv, s):                  # g's gradient and Hessian in w, float64
        m = y * (x @ wv + s)
        p = sig(-m)
        grad = -(x * (y * p)[:, None]).mean(axis=0) + wd * wv
        hess = (x.T * (p * (1 - p))) @ x / len(x) + wd * np.eye(4)
        return grad, hess, p

    wv = np.zeros(4)
    for _ in range(100):                          # Newton from 0 (no overshoot from there)
        grad, hess, _ = lower_grad_hess(wv, 0.3)
        wv = wv - np.linalg.solve(hess, grad)
    _, hess, p = lower_grad_hess(wv, 0.3)
    f_w = -(xv * (yv * sig(-yv * (xv @ wv)))[:, None]).mean(axis=0)
    g_uw = (x * (p * (1 - p))[:, None]).mean(axis=0)            # d^2 g / du dw (y^2 = 1)
    expected = -g_uw @ np.linalg.solve(hess, f_w)
    np.testing.assert_allclose(exact[0].numpy(), [expected], rtol=1e-3)
