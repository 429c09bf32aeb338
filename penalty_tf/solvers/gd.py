"""Alternating gradient descent: the baseline that ignores the bilevel coupling.

One upper-level iteration: T Adam steps on g w.r.t. v, then one Adam step on f w.r.t. u
(its partial gradient ``grad_u f``, not the hypergradient), each followed by the box
projection if bounds are given (docs/original.md §1.9). On problems where f depends on u
through v*(u) this converges to non-solutions (the paper's Fig. 1).

Cost per iteration (`BilevelSolver.cost`): T + 1 gradients (T of g, one of f w.r.t. u), no
HVPs, and forward passes of f and g at the new point (the returned values).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import tensorflow as tf

from penalty_tf import autodiff
from penalty_tf.problem import Bounds, BilevelProblem, Loss, OptimizerSpec, VariableSpec
from penalty_tf.solvers.ranges import check_config
from penalty_tf.solvers.base import BilevelSolver, problem_arguments


@dataclasses.dataclass(frozen=True)
class GDConfig:
    """`GD`'s settings: the Adam learning rates of u and v."""

    lr_u: float = 1e-3
    lr_v: float = 1e-4

    def __post_init__(self) -> None:
        check_config(self)


class GD(BilevelSolver):
    """Alternating Adam steps: T on g w.r.t. v, one on f w.r.t. u. Arguments as `Penalty`.

    ``v <- Adam(v, grad_v g)`` T times, then ``u <- Adam(u, grad_u f)`` (the partial
    gradient, ignoring how v depends on u); each followed by the box projection.

    Example::

        solver = GD(upper_loss, lower_loss, [u], model.trainable_variables,
                    upper_optimizer=1e-3, lower_optimizer=1e-4)
        out = solver.step(batch, lower_steps=10)      # out["f"], out["g"]
    """

    checked_quantities = {"lower_grad": "the gradient of g w.r.t. the lower variables",
                          "upper_grad": "the gradient of f w.r.t. the upper variables",
                          "f": "f", "g": "g"}
    upper_direction_of = "f (GD's u-step is the partial gradient df/du)"
    upper_direction_is_partial = True

    def __init__(self, upper_loss: Loss, lower_loss: Loss, upper_vars: VariableSpec,
                 lower_vars: VariableSpec, *, upper_optimizer: OptimizerSpec = 1e-3,
                 lower_optimizer: OptimizerSpec = 1e-4, upper_bounds: Bounds = None,
                 lower_bounds: Bounds = None, lower_initializer: Callable[[], None] | None = None,
                 lower_step_batch: Callable[[Any], Any] | None = None,
                 jit_compile: bool = False, check_finite: bool = True):
        problem = BilevelProblem(upper_loss, lower_loss, upper_vars, lower_vars, upper_bounds,
                                 lower_bounds, lower_initializer, lower_step_batch)
        super().__init__(problem, upper_optimizer=upper_optimizer, lower_optimizer=lower_optimizer,
                         jit_compile=jit_compile, check_finite=check_finite)

    @classmethod
    def from_problem(cls, problem: BilevelProblem, config: GDConfig | None = None,
                     **options: Any) -> "GD":
        """GD on ``problem`` with ``config`` (default `GDConfig()`); options as `Penalty.from_problem`."""
        config = GDConfig() if config is None else config
        options.setdefault("upper_optimizer", config.lr_u)
        options.setdefault("lower_optimizer", config.lr_v)
        return cls(**problem_arguments(problem), **options)

    def cost(self, lower_steps: int) -> dict[str, int]:
        """`BilevelSolver.cost`: T gradients of g, one of f, forwards of f and g."""
        (t,) = self._counts(lower_steps)
        return self._passes(gradients=t + 1, hvps=0, forwards=2)

    def upper_direction(self, batch: Any = None) -> list[tf.Tensor]:
        """The partial gradient ``f_u`` at the current point."""
        return autodiff.gradient(self._bind(batch)[0], self.upper.variables)[1]

    def _iteration(self, batch: Any, lower_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        f_fn, g_fn = self._bind(batch)
        _, lower_g = self._bind_lower_steps(batch, (f_fn, g_fn))
        check = self.monitor.check
        status = self._lower_gradient_steps(lower_g, lower_steps)
        _, grads = autodiff.gradient(f_fn, self.upper.variables)
        status = check(status, "upper_grad", grads)
        self.upper.apply(grads)
        f, g = f_fn(), g_fn()
        status = check(status, "f", [f])
        status = check(status, "g", [g])
        return {"f": f, "g": g, "status": status}
