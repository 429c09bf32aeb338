"""RMD: reverse-mode differentiation through T plain gradient steps on the lower level.

Forward: ``v_t = clip(v_{t-1} - lr_v grad_v g(u, v_{t-1}))`` for t = 1 … T, storing every
iterate. Then, at ``v_T``, ``p = grad_u f`` and ``q = grad_v f``, and the reverse pass

    p <- p - lr_v H_uv(u, v_s) q
    q <- q - lr_v H_vv(u, v_s) q

over stored iterates, newest first, gives the hypergradient p; finally
``u <- clip(u - lr_u p)`` with plain gradient descent (docs/original.md §1.8).

Faithful quirk (the original's loop indexing): its storage slot t holds v_{t+1} and the
reverse loop runs over slots T-2 … 0, i.e. iterates v_{T-1} … v_1. The Jacobian of the
first step (at v_0, never stored) is omitted, so **with T = 1 the reverse pass is empty
and RMD is plain gradient descent on f w.r.t. u**. ``exact=True`` includes the first step
(iterates v_{T-1} … v_0), which is the textbook reverse-mode hypergradient.

All iterates are kept (memory grows linearly with T, the cost the paper compares
against); the original preallocated 50 slots (T <= 50), here T is unbounded.
Unlike the other solvers RMD uses no optimizer: both levels take plain gradient steps.

Cost per iteration (`BilevelSolver.cost`), R = T - 1 reverse steps (T with ``exact``):
T + 1 + R gradients (T forward steps, f w.r.t. (u, v), the G of each reverse step), R HVPs
(each reverse step is one nested-tape pass giving both H_uv q and H_vv q) and forward
passes of f and g at the new point; 2T gradients and T - 1 HVPs by default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import tensorflow as tf

from penalty_tf import autodiff
from penalty_tf.problem import Bounds, BilevelProblem, Loss, VariableSpec
from penalty_tf.solvers.ranges import check_config, check_learning_rate
from penalty_tf.solvers.base import BilevelSolver, problem_arguments


@dataclasses.dataclass(frozen=True)
class RMDConfig:
    """`RMD`'s settings: plain gradient step sizes and whether the first step's Jacobian
    enters the reverse pass (``exact``; the original omits it)."""

    lr_u: float = 1e-3
    lr_v: float = 1e-4
    exact: bool = False

    def __post_init__(self) -> None:
        check_config(self)


class RMD(BilevelSolver):
    """Reverse-mode differentiation through plain gradient descent on g.

    Args:
      upper_lr, lower_lr: the plain gradient step sizes lr_u and lr_v.
      exact: include the first step's Jacobian (off by default: the original omits it).
      Other arguments as for `Penalty`.

    Example::

        solver = RMD(upper_loss, lower_loss, [u], [v], upper_lr=1e-3, lower_lr=1e-4, exact=True)
        out = solver.step(batch, lower_steps=10)      # memory grows with lower_steps
    """

    checked_quantities = {"lower_grad": "the gradient of g w.r.t. the lower variables",
                          "hypergradient": "the reverse-mode hypergradient", "f": "f", "g": "g"}

    def __init__(self, upper_loss: Loss, lower_loss: Loss, upper_vars: VariableSpec,
                 lower_vars: VariableSpec, *, upper_lr: float = 1e-3, lower_lr: float = 1e-4,
                 exact: bool = False, upper_bounds: Bounds = None, lower_bounds: Bounds = None,
                 lower_initializer: Callable[[], None] | None = None,
                 lower_step_batch: Callable[[Any], Any] | None = None,
                 jit_compile: bool = False, check_finite: bool = True):
        problem = BilevelProblem(upper_loss, lower_loss, upper_vars, lower_vars, upper_bounds,
                                 lower_bounds, lower_initializer, lower_step_batch)
        super().__init__(problem, upper_optimizer=None, lower_optimizer=None,
                         jit_compile=jit_compile, check_finite=check_finite)
        upper_lr = check_learning_rate("upper_lr", upper_lr)
        lower_lr = check_learning_rate("lower_lr", lower_lr)
        self.upper_lr = tf.Variable(upper_lr, dtype=tf.float32, trainable=False, name="lr_u")
        self.lower_lr = tf.Variable(lower_lr, dtype=tf.float32, trainable=False, name="lr_v")
        self.exact = exact
        self._initial_lrs = (float(upper_lr), float(lower_lr))

    @classmethod
    def from_problem(cls, problem: BilevelProblem, config: RMDConfig | None = None,
                     **options: Any) -> "RMD":
        """RMD on ``problem`` with ``config`` (default `RMDConfig()`); ``options``:
        ``jit_compile``, ``check_finite``."""
        config = RMDConfig() if config is None else config
        return cls(**problem_arguments(problem), upper_lr=config.lr_u, lower_lr=config.lr_v,
                   exact=config.exact, **options)

    def cost(self, lower_steps: int) -> dict[str, int]:
        """`BilevelSolver.cost`: T forward steps, grad f, R = T - 1 (+1 if exact) reverse
        steps of one HVP pass each, forwards of f and g."""
        (t,) = self._counts(lower_steps)
        r = t - 1 + int(self.exact)
        return self._passes(gradients=t + 1 + r, hvps=r, forwards=2)

    def learning_rates(self) -> dict[str, list[float]]:
        """The plain step sizes: ``{"upper": [lr_u], "lower": [lr_v]}``."""
        return {"upper": [float(self.upper_lr.numpy())], "lower": [float(self.lower_lr.numpy())]}

    def set_learning_rates(self, upper: float | None = None, lower: float | None = None) -> None:
        """Assign the plain gradient step sizes lr_u / lr_v (no retracing)."""
        if upper is not None:
            self.upper_lr.assign(upper)
        if lower is not None:
            self.lower_lr.assign(lower)

    def _schedule_variables(self) -> list[tf.Variable]:
        """The step sizes lr_u and lr_v, for `state_variables`."""
        return [self.upper_lr, self.lower_lr]

    def reset(self) -> None:
        """Step sizes back to their initial values (RMD has no other state)."""
        self.set_learning_rates(self._initial_lrs[0], self._initial_lrs[1])

    def _iteration(self, batch: Any, lower_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        f_fn, g_fn = self._bind(batch)
        _, lower_g = self._bind_lower_steps(batch, (f_fn, g_fn))   # forward steps: w.r.t. v only
        u, v = self.upper.variables, self.lower.variables
        check = self.monitor.check
        lr_v = self.lower_lr.read_value()

        # Forward pass; iterates[k] holds v after k steps (index 0 = v_0).
        iterates = [tf.TensorArray(x.dtype, size=lower_steps + 1, element_shape=x.shape)
                    .write(0, x.read_value()) for x in v]

        def forward_step(k, state):
            status, *arrays = state
            _, grads = autodiff.gradient(lower_g, v)
            status = check(status, "lower_grad", grads, k)
            self.lower.assign_sub([lr_v * gr for gr in grads])
            arrays = [a.write(k + 1, x.read_value()) for a, x in zip(arrays, v)]
            return (status, *arrays)

        status, *iterates = self._loop(lower_steps, forward_step,
                                       (self.monitor.initial(), *iterates))

        _, grads = autodiff.gradient(f_fn, u + v)
        p, q = grads[:len(u)], grads[len(u):]

        # Reverse pass over v_{T-1} … v_1 (faithful) or … v_0 (exact).
        first = tf.constant(0 if self.exact else 1, tf.int32)

        def reverse_step(k, state):
            p_, q_ = list(state[:len(u)]), list(state[len(u):])
            index = lower_steps - 1 - k
            for x, a in zip(v, iterates):
                x.assign(a.read(index))
            h_uv_q, h_vv_q = autodiff.hvp_and_mixed_vp(g_fn, u, v, q_)
            p_ = [a - lr_v * b for a, b in zip(p_, h_uv_q)]
            q_ = [a - lr_v * b for a, b in zip(q_, h_vv_q)]
            return (*p_, *q_)

        n_reverse = tf.maximum(lower_steps - first, 0)
        state = self._loop(n_reverse, reverse_step, (*p, *q))
        state = state if isinstance(state, tuple) else (state,)
        p = list(state[:len(u)])
        for x, a in zip(v, iterates):
            x.assign(a.read(lower_steps))

        status = check(status, "hypergradient", p)
        self.upper.assign_sub([self.upper_lr * x for x in p])
        f, g = f_fn(), g_fn()
        status = check(status, "f", [f])
        status = check(status, "g", [g])
        return {"f": f, "g": g, "status": status}
