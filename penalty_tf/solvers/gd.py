"""Alternating gradient descent: the baseline that ignores the bilevel coupling.

One upper-level iteration: T Adam steps on g w.r.t. v, then one Adam step on f w.r.t. u
(its partial gradient ``grad_u f``, not the hypergradient), each followed by the box
projection if bounds are given (REFERENCE.md §1.9). On problems where f depends on u
through v*(u) this converges to non-solutions (the paper's Fig. 1).
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from penalty_tf import autodiff
from penalty_tf.solvers.base import (Bounds, BilevelSolver, Level, Loss, OptimizerSpec,
                                     VariableSpec)


class GD(BilevelSolver):
    """Alternating Adam steps: T on g w.r.t. v, one on f w.r.t. u. Arguments as `Penalty`.

    ``v <- Adam(v, grad_v g)`` T times, then ``u <- Adam(u, grad_u f)`` (the partial
    gradient, ignoring how v depends on u); each followed by the box projection.

    Example::

        solver = GD(upper_loss, lower_loss, [u], model.trainable_variables,
                    upper_optimizer=1e-3, lower_optimizer=1e-4)
        out = solver.step(batch, lower_steps=10)      # out["f"], out["g"]
    """

    checked_quantities = ("the gradient of g w.r.t. the lower variables",
                          "the gradient of f w.r.t. the upper variables", "f", "g")

    def __init__(self, upper_loss: Loss, lower_loss: Loss, upper_vars: VariableSpec,
                 lower_vars: VariableSpec, *, upper_optimizer: OptimizerSpec = 1e-3,
                 lower_optimizer: OptimizerSpec = 1e-4, upper_bounds: Bounds = None,
                 lower_bounds: Bounds = None, lower_initializer: Callable[[], None] | None = None,
                 jit_compile: bool = False, check_finite: bool = True):
        self.upper = Level(upper_vars, upper_optimizer, upper_bounds, "upper_vars")
        self.lower = Level(lower_vars, lower_optimizer, lower_bounds, "lower_vars")
        super().__init__(upper_loss, lower_loss, lower_initializer=lower_initializer,
                         jit_compile=jit_compile, check_finite=check_finite)

    def _iteration(self, batch: Any, lower_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        f_fn, g_fn = self._bind(batch)
        check, names = self.monitor.check, self.checked_quantities

        def lower_step(k, status):
            _, grads = autodiff.gradient(g_fn, self.lower.variables)
            status = check(status, names[0], grads, k)
            self.lower.apply(grads)
            return status

        status = self._loop(lower_steps, lower_step, self.monitor.initial())
        _, grads = autodiff.gradient(f_fn, self.upper.variables)
        status = check(status, names[1], grads)
        self.upper.apply(grads)
        f, g = f_fn(), g_fn()
        status = check(status, "f", [f])
        status = check(status, "g", [g])
        return {"f": f, "g": g, "status": status}
