"""Approximate implicit differentiation (AID): lower steps, a linear solve, the IFT step.

One upper-level iteration (`AID.step`):

1. T optimizer steps on g w.r.t. v:  ``v <- opt_v(v, grad_v g)``;
2. K steps of a linear solver for ``H_vv p = grad_v f`` (``H_vv = d^2 g / dv dv``), from
   ``p_0 = 0`` or, with ``warm_start``, from the previous iteration's p:
   * ``"cg"`` (conjugate gradients; AID-CG, Pedregosa, ICML 2016; Grazzi et al., ICML 2020)::

         r_0 = f_v - H p_0,  d_0 = r_0;   a = |r|^2 / <d, H d>,  p += a d,  r -= a H d,
         d = r + (|r_new|^2 / |r|^2) d

     (a step with ``<d, H d> <= 0``, non-positive curvature, is skipped: a = 0);
   * ``"neumann"`` (fixed-point / truncated Neumann series; AID-FP, Grazzi et al. 2020;
     Lorraine et al., AISTATS 2020)::

         p_{k+1} = p_k + eta (f_v - H p_k)       (from p_0 = 0: p_K = eta sum_{j<K} (I - eta H)^j f_v)

3. one optimizer step on u along the implicit-function-theorem hypergradient estimate
   ``u <- opt_u(u, f_u - H_uv p)`` (``H_uv = d^2 g / du dv``), then the projections.

Cost per iteration: T gradients of g, one gradient of f w.r.t. v, K Hessian-vector
products (one more for the initial residual of a warm start with CG), and one nested-tape
pass for ``f_u - H_uv p``; in `BilevelSolver.cost`'s units (an HVP call is 1 gradient + 1
HVP, the last pass 2 gradients + 1 HVP): T + K + w + 3 gradients and K + w + 1 HVPs, w = 1
for a warm-started CG, else 0. p is state (saved by checkpoints); ``linear_residual`` is
``|f_v - H p|^2`` of the last residual the solver computed. f and g are returned at the
point after the lower steps, before the u-step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import tensorflow as tf

from penalty_tf import autodiff
from penalty_tf.problem import Bounds, BilevelProblem, Loss, OptimizerSpec, VariableSpec
from penalty_tf.solvers.base import BilevelSolver, as_count, problem_arguments
from penalty_tf.solvers.ranges import check_config

LINEAR_SOLVERS = ("cg", "neumann")


@dataclasses.dataclass(frozen=True)
class AIDConfig:
    """`AID`'s settings: the learning rates of u and v (TF1-style Adam), the linear solver,
    the Neumann step size eta, and whether p starts from its previous value."""

    lr_u: float = 1e-3
    lr_v: float = 1e-4
    linear_solver: str = "cg"
    neumann_lr: float = 1e-2
    warm_start: bool = False

    def __post_init__(self) -> None:
        check_config(self)
        if self.linear_solver not in LINEAR_SOLVERS:
            raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {self.linear_solver!r}")


class AID(BilevelSolver):
    """Approximate implicit differentiation with conjugate gradients or a Neumann series.

    Example::

        solver = AID(upper_loss, lower_loss, [u], model.trainable_variables, upper_optimizer=1e-2,
                     lower_optimizer=1e-3, linear_solver="cg", warm_start=True)
        out = solver.step(batch, lower_steps=10, linear_steps=10)   # out["linear_residual"]

    Args:
      linear_solver: ``"cg"`` or ``"neumann"``.
      neumann_lr: eta of the Neumann iteration (below 2 / the largest eigenvalue of H_vv).
      warm_start: start the linear solver from the previous iteration's p (else from 0).
      Other arguments as for `Penalty`.
    """

    checked_quantities = {"lower_grad": "the gradient of g w.r.t. the lower variables",
                          "linear": "the linear-system iterate p", "upper_grad": "the hypergradient estimate",
                          "f": "f", "g": "g"}
    outputs = {"f": tf.float32, "g": tf.float32, "linear_residual": tf.float32, "status": tf.int32}

    def __init__(self, upper_loss: Loss, lower_loss: Loss, upper_vars: VariableSpec,
                 lower_vars: VariableSpec, *, upper_optimizer: OptimizerSpec = 1e-3,
                 lower_optimizer: OptimizerSpec = 1e-4, linear_solver: str = "cg",
                 neumann_lr: float = 1e-2, warm_start: bool = False, upper_bounds: Bounds = None,
                 lower_bounds: Bounds = None, lower_initializer: Callable[[], None] | None = None,
                 lower_step_batch: Callable[[Any], Any] | None = None,
                 jit_compile: bool = False, check_finite: bool = True):
        config = AIDConfig(linear_solver=linear_solver, neumann_lr=neumann_lr, warm_start=warm_start)
        problem = BilevelProblem(upper_loss, lower_loss, upper_vars, lower_vars, upper_bounds,
                                 lower_bounds, lower_initializer, lower_step_batch)
        super().__init__(problem, upper_optimizer=upper_optimizer, lower_optimizer=lower_optimizer,
                         jit_compile=jit_compile, check_finite=check_finite)
        self.linear_solver, self.neumann_lr, self.warm_start = config.linear_solver, config.neumann_lr, warm_start
        self.p = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="p") for v in self.lower.variables]

    @classmethod
    def from_problem(cls, problem: BilevelProblem, config: AIDConfig | None = None, **options: Any) -> "AID":
        """AID on ``problem`` with ``config`` (default `AIDConfig()`); options as
        `Penalty.from_problem`."""
        config = AIDConfig() if config is None else config
        options.setdefault("upper_optimizer", config.lr_u)
        options.setdefault("lower_optimizer", config.lr_v)
        return cls(**problem_arguments(problem), linear_solver=config.linear_solver,
                   neumann_lr=config.neumann_lr, warm_start=config.warm_start, **options)

    def _counts(self, lower_steps: int, linear_steps: int | None = None) -> tuple[int, int]:
        """T lower steps and K linear-solver steps (default K = T)."""
        lower_steps = as_count(lower_steps, "lower_steps", minimum=1)
        return lower_steps, lower_steps if linear_steps is None else as_count(linear_steps, "linear_steps")

    def cost(self, lower_steps: int, linear_steps: int | None = None) -> dict[str, int]:
        """`BilevelSolver.cost`: T g-gradients, f_v, K (+1 warm CG) HVPs, one IFT pass."""
        t, k = self._counts(lower_steps, linear_steps)
        w = int(self.warm_start and self.linear_solver == "cg")
        return self._passes(gradients=t + k + w + 3, hvps=k + w + 1)

    def reset(self) -> None:
        """Learning rates back to their initial values and p back to zero."""
        super().reset()
        for p in self.p:
            p.assign(tf.zeros_like(p))

    def _schedule_variables(self) -> list[tf.Variable]:
        """p, the linear-system iterate (for warm starts)."""
        return list(self.p)

    def upper_direction(self, batch: Any = None) -> list[tf.Tensor]:
        """``f_u - H_uv p`` with the current p (no lower or linear-solver steps)."""
        f_fn, g_fn = self._bind(batch)
        return autodiff.gradient_plus_hvp(f_fn, g_fn, self.lower.variables, [-p for p in self.p],
                                          self.upper.variables).grads

    # -- the linear solvers ---------------------------------------------------------------
    def _cg(self, g_fn, f_v, p0, steps):
        """K conjugate-gradient steps on ``H p = f_v`` from p0; ``(p, |r|^2)``."""
        v = self.lower.variables
        r = f_v if not self.warm_start else [b - hp for b, hp in zip(f_v, autodiff.hvp(g_fn, v, p0))]

        def body(k, state):
            p, r, d, rr = state
            hd = autodiff.hvp(g_fn, v, d)
            alpha = tf.math.divide_no_nan(rr, tf.nn.relu(autodiff.dot(d, hd)))
            p = [a + alpha * b for a, b in zip(p, d)]
            r = [a - alpha * b for a, b in zip(r, hd)]
            rr_new = autodiff.squared_norm(r)
            beta = tf.math.divide_no_nan(rr_new, rr)
            return p, r, [a + beta * b for a, b in zip(r, d)], rr_new

        p, _, _, rr = self._loop(steps, body, (list(p0), list(r), list(r), autodiff.squared_norm(r)))
        return p, rr

    def _neumann(self, g_fn, f_v, p0, steps):
        """K fixed-point steps ``p <- p + eta (f_v - H p)`` from p0; ``(p, |r|^2)`` of the last
        residual computed (|f_v|^2 when K = 0)."""
        v, eta = self.lower.variables, self.neumann_lr

        def body(k, state):
            p, _ = state
            r = [b - hp for b, hp in zip(f_v, autodiff.hvp(g_fn, v, p))]
            return [a + eta * b for a, b in zip(p, r)], autodiff.squared_norm(r)

        return self._loop(steps, body, (list(p0), autodiff.squared_norm(f_v)))

    # -- the compiled iteration ---------------------------------------------------------
    def _iteration(self, batch: Any, lower_steps: tf.Tensor, linear_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        f_fn, g_fn = self._bind(batch)
        lower_f, lower_g = self._bind_lower_steps(batch, (f_fn, g_fn))
        v, check = self.lower.variables, self.monitor.check
        status = self._lower_gradient_steps(lower_g, lower_steps)
        _, f_v = autodiff.gradient(lower_f, v)
        p0 = [p.read_value() for p in self.p] if self.warm_start else [tf.zeros_like(x) for x in f_v]
        solve = self._cg if self.linear_solver == "cg" else self._neumann
        p, residual = solve(lower_g, f_v, p0, linear_steps)
        status = check(status, "linear", p)
        for var, value in zip(self.p, p):
            var.assign(value)
        r = autodiff.gradient_plus_hvp(f_fn, g_fn, v, [-x for x in p], self.upper.variables)
        status = check(status, "upper_grad", r.grads)
        status = check(status, "f", [r.upper_value])
        status = check(status, "g", [r.lower_value])
        self.upper.apply(r.grads)
        return {"f": r.upper_value, "g": r.lower_value, "linear_residual": residual, "status": status}
