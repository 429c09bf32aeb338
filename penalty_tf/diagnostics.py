"""How good is a solver's hypergradient? A check against the exact one, and a callback.

At a point (u, v) with v a minimiser of g(u, .), the hypergradient of F(u) = f(u, v*(u)) is

    dF/du = f_u - H_uv p,      p = H_vv^{-1} f_v                                  (IFT)

(``f_u = grad_u f``, ``f_v = grad_v f``, ``H_vv = d^2 g / dv dv``, ``H_uv = d^2 g / du dv``).
`exact_hypergradient` solves ``H_vv p = f_v`` by conjugate gradients (one Hessian-vector
product per iteration, matrix-free) to a tight tolerance; `check_hypergradient` compares it
with the direction the solver's next u-step follows (`BilevelSolver.upper_direction`:
Penalty's ``grad_u h_upper``, ApproxGrad's surrogate with its current p, GD's ``f_u``) by
cosine and relative error. `HypergradientMonitor` logs both every N iterations of
`penalty_tf.training.run` and warns when the cosine stays low.

The formula holds at a lower minimiser, so the check first finds v*(u) from the current v by
Newton steps (each solved by CG), evaluates the formula there and restores v: the result
is the true hypergradient of F when g is strongly convex in v. ``H_vv`` may be indefinite
(a non-convex lower problem, far from a minimum): CG then stops at the first direction of
non-positive curvature and the check says so.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from penalty_tf import autodiff

#: Lower problems larger than this (parameters of v) are refused by default: CG would need
#: up to that many Hessian-vector products for a tight solve.
MAX_LOWER_SIZE = 2_000_000


@dataclasses.dataclass(frozen=True)
class HypergradientCheck:
    """The comparison of a solver's u-direction ``d`` with the exact hypergradient ``h``.

    ``cosine`` = <d, h> / (|d| |h|); ``relative_error`` = |d - h| / |h|; ``cg_iterations``
    and ``cg_residual`` (|H p - f_v| / |f_v|) say how well the linear system was solved;
    ``negative_curvature``: CG met a direction with p^T H p <= 0 (v is not at a minimum);
    ``lower_grad_norm``: |grad_v g| at the v the formula was evaluated at (the minimiser found).
    """

    cosine: float
    relative_error: float
    direction_norm: float
    exact_norm: float
    cg_iterations: int
    cg_residual: float
    negative_curvature: bool
    lower_grad_norm: float


def _flatten(tensors) -> np.ndarray:
    return np.concatenate([np.asarray(t, np.float64).ravel() for t in tensors]) if tensors else np.zeros(0)


def _unflatten(flat: np.ndarray, like) -> list[tf.Tensor]:
    out, start = [], 0
    for v in like:
        n = int(np.prod(v.shape))
        out.append(tf.constant(flat[start:start + n].reshape(v.shape), v.dtype))
        start += n
    return out


def conjugate_gradients(matvec, b: np.ndarray, tol: float = 1e-8, max_iter: Optional[int] = None,
                        round_off: float = 1e-5):
    """Solve ``A x = b`` for symmetric positive definite ``A`` given as ``matvec`` (float64
    NumPy in and out), from x = 0, until ``|A x - b| <= tol |b|``. Returns ``(x, iterations,
    relative residual, negative_curvature)``.

    CG stops at a direction d with ``d^T A d <= 0`` and returns the x it has (truncated CG:
    still a descent direction). ``negative_curvature`` is True only when that curvature is
    negative beyond round-off, ``d^T A d < -round_off |d|^2 c_max`` with c_max the largest
    curvature ``d^T A d / |d|^2`` met so far: float32 Hessian-vector products of an
    ill-conditioned A give tiny curvatures of either sign in its flattest directions, which
    are not a sign of a non-convex problem."""
    x, r = np.zeros_like(b), b.copy()
    d, rr, norm_b = r.copy(), float(r @ r), float(np.linalg.norm(b))
    max_iter = len(b) if max_iter is None else int(max_iter)
    if norm_b == 0.0:
        return x, 0, 0.0, False
    largest = 0.0
    for k in range(max_iter):
        ad = matvec(d)
        dd = float(d @ d)
        curvature = float(d @ ad)
        largest = max(largest, curvature / dd)
        if curvature <= 0.0:
            return x, k, float(np.sqrt(rr)) / norm_b, curvature < -round_off * dd * largest
        alpha = rr / curvature
        x += alpha * d
        r -= alpha * ad
        rr_new = float(r @ r)
        if np.sqrt(rr_new) <= tol * norm_b:
            return x, k + 1, float(np.sqrt(rr_new)) / norm_b, False
        d = r + (rr_new / rr) * d
        rr = rr_new
    return x, max_iter, float(np.sqrt(rr)) / norm_b, False


def _lower_size(solver: Any) -> int:
    return int(sum(np.prod(v.shape) for v in solver.lower.variables))


def exact_hypergradient(solver: Any, batch: Any = None, *, at_minimiser: bool = True, newton_steps: int = 20,
                        tol: float = 1e-8, max_iter: Optional[int] = None,
                        max_lower_size: int = MAX_LOWER_SIZE) -> tuple[list[tf.Tensor], dict[str, Any]]:
    """The hypergradient ``dF/du = f_u - H_uv p``, ``H_vv p = f_v`` (solved by CG), at the
    solver's current u on ``batch``.

    ``at_minimiser`` (default): at v*(u), found from the current v by Newton steps
    ``v <- v - t H_vv^{-1} grad_v g`` (each solved by CG, t from a backtracking line search
    on g) until ``|grad_v g|`` stops falling (at most ``newton_steps``); v is restored afterwards. Otherwise at the current v (the
    IFT formula there). Returns the hypergradient (one tensor per upper variable) and a
    report: ``iterations`` and ``residual`` of the last CG solve, ``negative_curvature``,
    ``lower_grad_norm`` (|grad_v g| where the formula was evaluated).
    """
    size = _lower_size(solver)
    if size > max_lower_size:
        raise ValueError(f"the lower level has {size:,} parameters, more than max_lower_size={max_lower_size:,}: "
                         "CG may need as many Hessian-vector products. Check on a sub-problem instead: a "
                         "smaller model or a few layers as v (the rest fixed), or raise max_lower_size / "
                         "pass max_iter= for an approximate solve")
    if solver.strategy is not None:
        raise NotImplementedError("exact_hypergradient under a tf.distribute strategy: check on one device")
    u, v = solver.upper.variables, solver.lower.variables
    f_fn, g_fn = solver._bind(batch)
    hvp = tf.function(lambda q: autodiff.hvp(g_fn, v, q), autograph=False)
    gradients = tf.function(lambda: autodiff.gradient(f_fn, u + v)[1] + autodiff.gradient(g_fn, v)[1],
                            autograph=False)

    def solve(rhs):
        return conjugate_gradients(lambda q: _flatten(hvp(_unflatten(q, v))), _flatten(rhs), tol=tol,
                                   max_iter=max_iter)

    saved = [x.numpy() for x in v]
    negative = False
    try:
        if at_minimiser:
            negative = _newton(v, gradients, tf.function(g_fn, autograph=False), solve, len(u), newton_steps)
        grads = gradients()
        f_u, f_v, g_v = grads[:len(u)], grads[len(u):len(u) + len(v)], grads[len(u) + len(v):]
        p, iterations, residual, curvature = solve(f_v)
        h_uv_p = autodiff.mixed_vp(g_fn, u, v, _unflatten(p, v))
        exact = [a - b for a, b in zip(f_u, h_uv_p)]
    finally:
        for x, value in zip(v, saved):
            x.assign(value)
    return exact, {"iterations": iterations, "residual": residual, "negative_curvature": negative or curvature,
                   "lower_grad_norm": float(np.linalg.norm(_flatten(g_v)))}


def _newton(v, gradients, lower_value, solve, n_upper: int, steps: int) -> bool:
    """Damped Newton steps on g from the current v, ``v <- v - t H_vv^{-1} grad_v g`` with t
    halved from 1 until g decreases (Armijo: by at least ``1e-4 t <grad_v g, step>``), at
    most ``steps`` of them, until no step decreases g any more (round-off) or grad_v g is 0.
    True if CG met negative curvature (v is then left where it was when that happened).

    Undamped Newton overshoots on losses far from quadratic (a softmax classifier on
    separable data: |grad_v g| grew from 0.03 to 8.7 in one full step), and |grad_v g| may
    rise for a step or two while g falls, so g, not the gradient's norm, decides."""
    for _ in range(int(steps)):
        g_v = gradients()[n_upper + len(v):]
        flat = _flatten(g_v)
        if not flat.any():
            break
        step, _, _, negative = solve(g_v)
        if negative:
            return True
        if not step.any() or not _line_search(v, _unflatten(step, v), float(flat @ step), lower_value):
            break
    return False


def _line_search(v, step, slope: float, lower_value, halvings: int = 30) -> bool:
    """``v <- v - t step`` for the first t in 1, 1/2, 1/4 ... that decreases g by at least
    ``1e-4 t slope``; False (v unchanged) if none does."""
    start = [x.read_value() for x in v]
    value, t = float(lower_value()), 1.0
    for _ in range(halvings):
        for x, x0, d in zip(v, start, step):
            x.assign(x0 - t * d)
        if float(lower_value()) <= value - 1e-4 * t * slope:
            return True
        t *= 0.5
    for x, x0 in zip(v, start):
        x.assign(x0)
    return False


def check_hypergradient(solver: Any, batch: Any = None, **options: Any) -> HypergradientCheck:
    """Compare ``solver.upper_direction(batch)`` (at the current u, v) with
    `exact_hypergradient` (``options``: ``at_minimiser``, ``newton_steps``, ``tol``,
    ``max_iter``, ``max_lower_size``). A cosine near 1 and a small relative error
    mean the solver's u-step follows the true hypergradient at this point."""
    exact, cg = exact_hypergradient(solver, batch, **options)
    direction = _flatten(solver.upper_direction(batch))
    h = _flatten(exact)
    norm_d, norm_h = float(np.linalg.norm(direction)), float(np.linalg.norm(h))
    cosine = float(direction @ h / (norm_d * norm_h)) if norm_d > 0 and norm_h > 0 else float("nan")
    relative = float(np.linalg.norm(direction - h) / norm_h) if norm_h > 0 else float("nan")
    return HypergradientCheck(cosine, relative, norm_d, norm_h, cg["iterations"], cg["residual"],
                              cg["negative_curvature"], cg["lower_grad_norm"])


class HypergradientMonitor(keras.callbacks.Callback):
    """Log `check_hypergradient` on a fixed ``batch`` every ``every`` upper iterations as
    ``hypergradient_cosine`` / ``hypergradient_relative_error`` (batch and epoch logs), and
    warn when the cosine has been below ``warn_below`` at ``patience`` checks in a row.

    Args:
      batch: the batch the check uses (small enough for CG, see `exact_hypergradient`).
      every: check every this many iterations (>= 1).
      warn_below, patience: the warning's threshold and how many low checks in a row.
      **options: for `exact_hypergradient` (``tol``, ``max_iter``, ``max_lower_size``).
    """

    def __init__(self, batch: Any, every: int = 100, warn_below: float = 0.5, patience: int = 3, **options: Any):
        super().__init__()
        if int(every) < 1 or int(patience) < 1:
            raise ValueError(f"every and patience must be >= 1, got {every}, {patience}")
        self.batch, self.every, self.warn_below, self.patience = batch, int(every), float(warn_below), int(patience)
        self.options = options
        self.low, self.last = 0, None
        self.checks: list[HypergradientCheck] = []

    def on_train_batch_end(self, batch, logs=None):
        if self.model.iteration % self.every:
            return
        self.last = check_hypergradient(self.model, self.batch, **self.options)
        self.checks.append(self.last)
        if logs is not None:
            logs.update(self._logs())
        self.low = self.low + 1 if not self.last.cosine >= self.warn_below else 0
        if self.low == self.patience:
            warnings.warn(f"{type(self.model).__name__}'s u-direction has had a cosine below {self.warn_below} with "
                          f"the exact hypergradient at {self.patience} checks in a row (now {self.last.cosine:.3f}, "
                          f"relative error {self.last.relative_error:.3g}): the upper level follows a poor "
                          "direction. Try more lower steps, a larger rho (Penalty), or ApproxGrad / implicit "
                          "differentiation", stacklevel=2)

    def _logs(self) -> dict[str, float]:
        return {"hypergradient_cosine": self.last.cosine, "hypergradient_relative_error": self.last.relative_error}

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.last is not None:
            logs.update(self._logs())
