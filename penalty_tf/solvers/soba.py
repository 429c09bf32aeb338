"""SOBA: single-loop joint steps on v, on the linear-system vector w, and on u.

Dagréou, Ablin, Vaiter & Moreau, "A framework for bilevel optimization that enables
stochastic and global variance reduction algorithms", NeurIPS 2022 (its SOBA). The
hypergradient is ``dF/du = f_u + H_uv w*`` with ``w* = -H_vv^{-1} f_v`` (``H_vv = d^2 g /
dv dv``, ``H_uv = d^2 g / du dv``); SOBA follows, at one point (u, v, w), the three directions

    D_v = g_v(u, v)                      (v tracks v*(u) = argmin_v g)
    D_w = H_vv w + f_v(u, v)             (w tracks w*: the gradient of 1/2 w^T H_vv w + <f_v, w>)
    D_u = f_u(u, v) + H_uv w             (the hypergradient estimate)

and updates ``v <- opt_v(v, D_v)``, ``w <- opt_w(w, D_w)``, ``u <- opt_u(u, D_u)`` (paper:
``z -= rho D_z``, ``v -= rho D_v``, ``x -= gamma D_x``; its v is our w, its z our v), each
followed by the level's projection. At a fixed point of (v, w) for the current u, D_u is
exactly dF/du.

``lower_steps`` T: one `SOBA.step` is T - 1 joint (v, w) steps at fixed u, then one SOBA step
of all three from one point; T = 1 (the default) is SOBA exactly, a larger T lets v and w
catch up with a moving u (a two-loop variant; not in the paper).
Every direction comes from one nested-tape pass (``gradient_plus_hvp`` with ``w`` as the
direction gives ``f_v + H_vv w``, ``f_u + H_uv w`` and ``g_v`` together); w is state (a level
of its own, zero at the start and after `reset`, saved by checkpoints).

Step sizes are the optimizers': ``lower_optimizer`` and ``linear_optimizer`` rho (the paper
uses one rho for both; here each has its own), ``upper_optimizer`` gamma. Deviations from
benchopt's SOBA (benchopt/benchmark_bilevel, solvers/soba.py at commit 3ad65dc): benchopt
decays rho and gamma as (k+1)^-1/2 and draws a fresh minibatch for the inner and the outer
oracle; here the learning rates are the optimizers' (constant, or a Keras schedule) and one
iteration uses one batch. Signs and points of evaluation are benchopt's (w -= rho (H w +
f_v), u -= gamma (H_uv w + f_u), all at the same (u, v, w)).

Outputs, at the point of the joint step (before its updates): f, g, ``lower_residual`` =
``|g_v|^2`` and ``linear_residual`` = ``|H_vv w + f_v|^2``. Cost per iteration: T nested-tape
passes (each one gradient of f and g and one Hessian-vector product): 2T gradients and T
HVPs (`BilevelSolver.cost`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import tensorflow as tf

from penalty_tf import autodiff
from penalty_tf.problem import Bounds, BilevelProblem, Loss, OptimizerSpec, VariableSpec
from penalty_tf.solvers.base import BilevelSolver, problem_arguments
from penalty_tf.solvers.ranges import check_config
from penalty_tf.solvers.variables import Level


@dataclasses.dataclass(frozen=True)
class SOBAConfig:
    """`SOBA`'s settings: the learning rates (TF1-style Adam) of u, v and the linear-system
    vector w."""

    lr_u: float = 1e-3
    lr_v: float = 1e-4
    lr_w: float = 1e-4

    def __post_init__(self) -> None:
        check_config(self)


class SOBA(BilevelSolver):
    """SOBA: joint steps on v along g_v, on w along H_vv w + f_v, on u along f_u + H_uv w.

    Example::

        solver = SOBA(upper_loss, lower_loss, [u], model.trainable_variables, upper_optimizer=1e-3,
                      lower_optimizer=1e-3, linear_optimizer=1e-3)
        out = solver.step(batch)          # T = 1: SOBA; out["f"], out["linear_residual"]

    Args:
      linear_optimizer: learning rate (TF1 Adam) or optimizer(s) of w, one per lower group.
      Other arguments as for `Penalty`; ``lower_step_batch`` serves the T - 1 (v, w) steps.
    """

    checked_quantities = {"lower_grad": "the gradient of g w.r.t. the lower variables",
                          "linear": "the direction H_vv w + f_v of the linear-system vector w",
                          "upper_grad": "the hypergradient estimate f_u + H_uv w",
                          "f": "f", "g": "g"}
    outputs = {"f": tf.float32, "g": tf.float32, "lower_residual": tf.float32,
               "linear_residual": tf.float32, "status": tf.int32}

    def __init__(self, upper_loss: Loss, lower_loss: Loss, upper_vars: VariableSpec,
                 lower_vars: VariableSpec, *, upper_optimizer: OptimizerSpec = 1e-3,
                 lower_optimizer: OptimizerSpec = 1e-4, linear_optimizer: OptimizerSpec = 1e-4,
                 upper_bounds: Bounds = None, lower_bounds: Bounds = None,
                 lower_initializer: Callable[[], None] | None = None,
                 lower_step_batch: Callable[[Any], Any] | None = None,
                 jit_compile: bool = False, check_finite: bool = True):
        problem = BilevelProblem(upper_loss, lower_loss, upper_vars, lower_vars, upper_bounds,
                                 lower_bounds, lower_initializer, lower_step_batch)
        super().__init__(problem, upper_optimizer=upper_optimizer, lower_optimizer=lower_optimizer,
                         jit_compile=jit_compile, check_finite=check_finite)
        w = [[tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="w") for v in group]
             for group in self.lower.groups]
        self.linear = Level(w, linear_optimizer, None, "linear system (SOBA's w)")

    @classmethod
    def from_problem(cls, problem: BilevelProblem, config: SOBAConfig | None = None, **options: Any) -> "SOBA":
        """SOBA on ``problem`` with ``config`` (default `SOBAConfig()`); options as
        `Penalty.from_problem`, plus ``linear_optimizer``."""
        config = SOBAConfig() if config is None else config
        options.setdefault("upper_optimizer", config.lr_u)
        options.setdefault("lower_optimizer", config.lr_v)
        options.setdefault("linear_optimizer", config.lr_w)
        return cls(**problem_arguments(problem), **options)

    def cost(self, lower_steps: int) -> dict[str, int]:
        """`BilevelSolver.cost`: T nested-tape passes of f and g (T - 1 (v, w) steps, then
        the joint step)."""
        (t,) = self._counts(lower_steps)
        return self._passes(gradients=2 * t, hvps=t)

    # -- state ---------------------------------------------------------------------------
    def named_levels(self):
        return {"upper": self.upper, "lower": self.lower, "linear": self.linear}

    def reset(self) -> None:
        """Learning rates back to their initial values and w back to zero."""
        super().reset()
        for w in self.linear.variables:
            w.assign(tf.zeros_like(w))

    def set_learning_rates(self, upper: float | Sequence[float] | None = None,
                           lower: float | Sequence[float] | None = None,
                           linear: float | Sequence[float] | None = None) -> None:
        """As `BilevelSolver.set_learning_rates`, plus ``linear`` for w's optimizer(s)."""
        super().set_learning_rates(upper, lower)
        if linear is not None:
            self.linear.set_learning_rates(linear)

    def upper_direction(self, batch: Any = None) -> list[tf.Tensor]:
        """``D_u = f_u + H_uv w`` at the current (u, v, w): the direction of the next u-step
        when T = 1 (with T > 1 it is taken after T - 1 more (v, w) steps). At the fixed
        point of (v, w) (``g_v = 0``, ``H_vv w = -f_v``) it is the exact hypergradient."""
        f_fn, g_fn = self._bind(batch)
        return autodiff.gradient_plus_hvp(f_fn, g_fn, self.lower.variables, self.linear.variables,
                                          self.upper.variables).grads

    # -- the compiled iteration ---------------------------------------------------------
    def _iteration(self, batch: Any, lower_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        f_fn, g_fn = self._bind(batch)
        lower_f, lower_g = self._bind_lower_steps(batch, (f_fn, g_fn))
        u, v, w, check = self.upper.variables, self.lower.variables, self.linear.variables, self.monitor.check

        def lower_and_linear(r, status, k):
            """Check and apply D_v = g_v and D_w = H_vv w + f_v of one pass (at lower step k)."""
            d_w = r.grads[-len(v):]
            status = check(status, "lower_grad", r.lower_grad, k)
            status = check(status, "linear", d_w, k)
            self.lower.apply(r.lower_grad)
            self.linear.apply(d_w)
            return status

        def vw_step(k, status):
            return lower_and_linear(autodiff.gradient_plus_hvp(lower_f, lower_g, v, w, v), status, k)

        status = self._loop(lower_steps - 1, vw_step, self.monitor.initial())
        r = autodiff.gradient_plus_hvp(f_fn, g_fn, v, w, u + v)     # D_u, D_w, D_v at one point
        d_u = r.grads[:len(u)]
        lower_residual = autodiff.squared_norm(r.lower_grad)
        linear_residual = autodiff.squared_norm(r.grads[len(u):])
        status = lower_and_linear(r, status, lower_steps - 1)
        status = check(status, "upper_grad", d_u)
        status = check(status, "f", [r.upper_value])
        status = check(status, "g", [r.lower_value])
        self.upper.apply(d_u)
        return {"f": r.upper_value, "g": r.lower_value, "lower_residual": lower_residual,
                "linear_residual": linear_residual, "status": status}
