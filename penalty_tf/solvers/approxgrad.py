"""ApproxGrad: approximate hypergradient with an iteratively solved linear system.

The exact hypergradient is ``f_u - H_uv H_vv^{-1} f_v``. ApproxGrad replaces
``H_vv^{-1} f_v`` by a vector p that minimises the residual

    h(p) = || H_vv p + sig p - grad_v f ||^2          (plain sum of squares, no 1/2)

with Adam, warm-started from the previous iteration, and updates u on the surrogate

    f~(u, v) = f(u, v) - <grad_v g(u, v), stop_gradient(p)>,

whose u-gradient is ``grad_u f - H_uv p``. One upper-level iteration (`ApproxGrad.step`)
is, in the original's order: ``lower_steps`` Adam steps on g w.r.t. v, ``linear_steps`` Adam
steps on h w.r.t. p, one Adam step on f~ w.r.t. u; f, g and h are then evaluated at the new
point (docs/original.md §1.5–1.7).

Implementation notes: ``grad_p h = 2 (H_vv + sig I) r`` with ``r = H_vv p + sig p - f_v``
(H symmetric) is computed in closed form with two Hessian-vector products, which equals
the original's automatic differentiation of h; ``f_v`` is computed once per iteration
(v and u do not change during the p-steps).

Cost per iteration (`BilevelSolver.cost`), K p-steps (``linear_steps``, default T; + 1 with
``extra_linear_step``), n upper groups: T + 2K + 2n + 3 gradients, 2K + n + 1 HVPs and one
forward pass of g (each p-step is two HVPs, each recomputing G; the surrogate gradient is
one nested-tape pass of f and g per upper group; the final h one more HVP); with K = T and
one group, 3T + 5 gradients and 2T + 2 HVPs.

Faithful quirks:

* p is never reset (warm start across iterations, minibatches and few-shot tasks).
* ``extra_linear_step=True`` reproduces the synthetic variant's ``niter2 + 1`` p-steps.
* With several lower groups (few-shot: one per task) the original corrected upper group i
  with lower group i only (``correction="indexed"``, the default): with one encoder group
  and T task groups only task 0's implicit term enters the encoder update. Use
  ``correction="all"`` for the intended sum over all groups. The original's per-group
  Hessian blocks equal the full HVP used here when groups are separable (each group's
  loss depends only on its own variables and u), as in every experiment of the paper.
* When the groups are batched into one variable (few-shot: the T task classifiers as one
  (T, d, N) tensor) the indexed correction is expressed by ``correction_weights``: a
  tensor per lower variable, broadcast against it, multiplying p in the surrogate
  gradient (a one-hot along the task axis keeps task 0 only).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import tensorflow as tf

from penalty_tf import autodiff
from penalty_tf.problem import Bounds, BilevelProblem, Loss, OptimizerSpec, VariableSpec
from penalty_tf.solvers.ranges import RANGES, check_config, check_value
from penalty_tf.solvers.base import BilevelSolver, as_count, problem_arguments
from penalty_tf.solvers.variables import Level


@dataclasses.dataclass(frozen=True)
class ApproxGradConfig:
    """`ApproxGrad`'s settings: Adam learning rates of u, v and the linear-system vector p,
    the system's regulariser sigma, and the variant switches (see `ApproxGrad`)."""

    lr_u: float = 1e-3
    lr_v: float = 1e-4
    lr_p: float = 1e-4
    sig: float = 1e-3
    extra_linear_step: bool = False
    correction: str = "indexed"

    def __post_init__(self) -> None:
        check_config(self)
        if self.correction not in ("indexed", "all"):
            raise ValueError(f"correction must be 'indexed' or 'all', got {self.correction!r}")


class ApproxGrad(BilevelSolver):
    """ApproxGrad with Adam on v, on the linear-system vector p, and on u.

    Example::

        solver = ApproxGrad(upper_loss, lower_loss, upper_vars=[u], lower_vars=model.trainable_variables,
                            upper_optimizer=1.0, lower_optimizer=1e-4, linear_optimizer=1e-5, sig=1e-3)
        for batch in batches:
            out = solver.step(batch, lower_steps=20, linear_steps=20)   # out["f"], out["h"]

    Args:
      upper_loss, lower_loss, upper_vars, lower_vars, upper_optimizer, lower_optimizer,
      upper_bounds, lower_bounds, jit_compile, check_finite: as for `Penalty`.
      linear_optimizer: learning rate (TF1 Adam) or optimizer(s) for p, one per lower group.
      sig: the regulariser sigma of the linear system (1e-3 in the applications, 1e-6 in
        the synthetic experiments).
      extra_linear_step: run one more p-step than asked (the synthetic variant's quirk).
      correction: ``"indexed"`` (faithful) or ``"all"``, see the module docstring.
      correction_weights: optional, one tensor per lower variable (broadcastable to it):
        the surrogate gradient is ``grad_u f - H_uv (m * p)`` with these weights m.
      lower_step_batch: as for `Penalty`; here it also serves ``grad_v f`` and the
        linear-system steps (all w.r.t. v only).
    """

    checked_quantities = {"lower_grad": "the gradient of g w.r.t. the lower variables",
                          "linear_grad": "the gradient of the residual h w.r.t. p",
                          "upper_grad": "the surrogate gradient w.r.t. the upper variables",
                          "f": "f", "g": "g", "h": "h"}

    outputs = {"f": tf.float32, "g": tf.float32, "h": tf.float32, "status": tf.int32}

    def __init__(self, upper_loss: Loss, lower_loss: Loss, upper_vars: VariableSpec,
                 lower_vars: VariableSpec, *, upper_optimizer: OptimizerSpec = 1e-3,
                 lower_optimizer: OptimizerSpec = 1e-4, linear_optimizer: OptimizerSpec = 1e-4,
                 sig: float = 1e-3, extra_linear_step: bool = False, correction: str = "indexed",
                 correction_weights: Sequence[Any] | None = None,
                 upper_bounds: Bounds = None, lower_bounds: Bounds = None,
                 lower_initializer: Callable[[], None] | None = None,
                 lower_step_batch: Callable[[Any], Any] | None = None,
                 jit_compile: bool = False, check_finite: bool = True):
        if correction not in ("indexed", "all"):
            raise ValueError(f"correction must be 'indexed' or 'all', got {correction!r}")
        problem = BilevelProblem(upper_loss, lower_loss, upper_vars, lower_vars, upper_bounds,
                                 lower_bounds, lower_initializer, lower_step_batch)
        super().__init__(problem, upper_optimizer=upper_optimizer, lower_optimizer=lower_optimizer,
                         jit_compile=jit_compile, check_finite=check_finite)
        self.p = [[tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="p") for v in group]
                  for group in self.lower.groups]
        self.linear = Level(self.p, linear_optimizer, None, "linear system (p)")
        self.sig = check_value("sig", sig, RANGES["sig"])
        self.extra_linear_step = extra_linear_step
        self.correction = correction
        self._untracked.correction_weights = self._weights_for(correction_weights)

    @classmethod
    def from_problem(cls, problem: BilevelProblem, config: ApproxGradConfig | None = None,
                     correction_weights: Optional[Sequence[Any]] = None,
                     **options: Any) -> "ApproxGrad":
        """ApproxGrad on ``problem`` with ``config`` (default `ApproxGradConfig()`); options
        as `Penalty.from_problem`, plus ``linear_optimizer`` and ``correction_weights``."""
        config = ApproxGradConfig() if config is None else config
        options.setdefault("upper_optimizer", config.lr_u)
        options.setdefault("lower_optimizer", config.lr_v)
        options.setdefault("linear_optimizer", config.lr_p)
        return cls(**problem_arguments(problem), sig=config.sig,
                   extra_linear_step=config.extra_linear_step, correction=config.correction,
                   correction_weights=correction_weights, **options)

    def _counts(self, lower_steps: int, linear_steps: int | None = None) -> tuple[int, ...]:
        """``step(batch, lower_steps=T, linear_steps=None)``: T v-steps, ``linear_steps``
        (default T; plus one with ``extra_linear_step``) p-steps, one u-step."""
        lower_steps = as_count(lower_steps, "lower_steps", minimum=1)
        linear_steps = lower_steps if linear_steps is None else as_count(linear_steps, "linear_steps")
        return lower_steps, linear_steps + int(self.extra_linear_step)

    def cost(self, lower_steps: int, linear_steps: int | None = None) -> dict[str, int]:
        """`BilevelSolver.cost`: T g-gradients, f_v, K p-steps of two HVPs, one surrogate
        pass per upper group, then f_v, g and h at the new point."""
        t, k = self._counts(lower_steps, linear_steps)
        n = len(self.upper.groups)
        return self._passes(gradients=t + 2 * k + 2 * n + 3, hvps=2 * k + n + 1, forwards=1)

    def named_levels(self):
        return {"upper": self.upper, "lower": self.lower, "linear": self.linear}

    def reset(self) -> None:
        """Learning rates back to their initial values and p back to zero.

        The original never resets p during a run (warm start); it is re-initialised only
        when a driver re-initialises all variables (a new synthetic trial).
        """
        super().reset()
        for p in self.linear.variables:
            p.assign(tf.zeros_like(p))

    def set_learning_rates(self, upper=None, lower=None, linear=None) -> None:
        """As `BilevelSolver.set_learning_rates`, plus ``linear`` for the p optimizer(s)."""
        super().set_learning_rates(upper, lower)
        if linear is not None:
            self.linear.set_learning_rates(linear)

    # -- maths ---------------------------------------------------------------------------
    def _residual(self, g_fn, f_v):
        """``r = H p + sig p - f_v`` at the current point."""
        hp = autodiff.hvp(g_fn, self.lower.variables, self.linear.variables)
        return [a + self.sig * p - b for a, p, b in zip(hp, self.linear.variables, f_v)]

    def _weights_for(self, weights: Sequence[Any] | None) -> list[tf.Tensor] | None:
        """Check and convert ``correction_weights`` (one per lower variable, broadcastable)."""
        if weights is None:
            return None
        variables = self.lower.variables
        if len(weights) != len(variables):
            raise ValueError(f"correction_weights: expected {len(variables)} tensors (one per lower "
                             f"variable), got {len(weights)}")
        out = []
        for w, v in zip(weights, variables):
            w = tf.constant(w, v.dtype)
            tf.broadcast_static_shape(w.shape, v.shape)   # raises if not broadcastable
            out.append(w)
        return out

    def _correction_groups(self, upper_group: int) -> list[int]:
        if self.correction == "all":
            return list(range(len(self.lower.groups)))
        return [upper_group] if upper_group < len(self.lower.groups) else []

    def _surrogate_gradient(self, f_fn, g_fn) -> list[tf.Tensor]:
        """``grad_u [f - <G_S, m p_S>] = grad_u f - H_{u v_S} (m p_S)`` per upper group, S = its
        correction groups, m = ``correction_weights`` (1 when not given), p held constant."""
        grads = []
        weighted = self.linear.variables
        if self._untracked.correction_weights is not None:
            weighted = [m * p for m, p in zip(self._untracked.correction_weights, weighted)]
        lower_p = self.linear.split(weighted)
        for i, group in enumerate(self.upper.groups):
            chosen = self._correction_groups(i)
            minus_p = [-p if j in chosen else tf.zeros_like(p)
                       for j in range(len(self.lower.groups)) for p in lower_p[j]]
            grads += autodiff.gradient_plus_hvp(f_fn, g_fn, self.lower.variables, minus_p, group).grads
        return grads

    def upper_direction(self, batch: Any = None) -> list[tf.Tensor]:
        """The surrogate ``f_u - H_uv (m p)`` with the current p (no lower or p-steps)."""
        return self._surrogate_gradient(*self._bind(batch))

    def _iteration(self, batch: Any, lower_steps: tf.Tensor,
                   linear_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        f_fn, g_fn = self._bind(batch)
        lower_f, lower_g = self._bind_lower_steps(batch, (f_fn, g_fn))
        v = self.lower.variables
        check = self.monitor.check

        status = self._lower_gradient_steps(lower_g, lower_steps)
        _, f_v = autodiff.gradient(lower_f, v)

        def linear_step(k, status):
            r = self._residual(lower_g, f_v)
            hr = autodiff.hvp(lower_g, v, r)
            grads = [2.0 * (a + self.sig * b) for a, b in zip(hr, r)]
            status = check(status, "linear_grad", grads, k)
            self.linear.apply(grads)
            return status

        status = self._loop(linear_steps, linear_step, status)
        grads_u = self._surrogate_gradient(f_fn, g_fn)
        status = check(status, "upper_grad", grads_u)
        self.upper.apply(grads_u)

        f, f_v = autodiff.gradient(f_fn, v)
        g = g_fn()
        h = autodiff.squared_norm(self._residual(g_fn, f_v))
        status = check(status, "f", [f])
        status = check(status, "g", [g])
        status = check(status, "h", [h])
        return {"f": f, "g": g, "h": h, "status": status}
