"""F2SA: a fully first-order penalty method with a second lower sequence for g*(u).

Kwon, Kwon, Wright & Nowak, "A Fully First-Order Method for Stochastic Bilevel
Optimization", ICML 2023 (Algorithm 1). With the value function ``g*(u) = min_z g(u, z)``
the bilevel problem is relaxed to the single-level penalty problem

    min_{u, v}  L_lambda(u, v) = f(u, v) + lambda (g(u, v) - g*(u)),

whose u-gradient at the minimisers ``v_lambda(u) = argmin_v L_lambda`` and
``z*(u) = argmin_z g`` needs first derivatives only (Danskin: ``grad g* = g_u(u, z*)``)::

    f_u(u, v_lambda) + lambda (g_u(u, v_lambda) - g_u(u, z*))

and is within O(1/lambda) of the hypergradient dF/du; lambda grows over the iterations.

One upper-level iteration (`F2SA.step`), with ``lambda = lambda_k`` throughout:

1. T optimizer steps on z, an auxiliary copy of v (state, warm-started across iterations)::

       z <- opt_z(z, g_z(u, z))                               (paper: z_{t+1} = z_t - gamma_k grad_y g)

2. T optimizer steps on v (the problem's lower variables)::

       v <- opt_v(v, f_v(u, v) + lambda g_v(u, v))            (paper: y_{t+1} = y_t - alpha_k (...))

   (not divided by lambda: as in the paper and in benchopt);
3. one optimizer step on u at the new v and z::

       u <- opt_u(u, f_u(u, v) + lambda (g_u(u, v) - g_u(u, z)))   (paper: x_{k+1} = x_k - xi alpha_k h_x)

4. ``lambda <- min(lambda + delta_k, lamb_max)``, ``delta_k = lamb_delta / (k + 1)^p``
   (k counts the lambda updates since the start or the last `reset`; p =
   ``lamb_delta_power``, 0: constant increments).

Only gradients are taken (no Hessian-vector product). Each step is followed by the
level's projection (z is projected onto the lower bounds too).

The paper interleaves steps 1 and 2 in one loop; at fixed u and on one batch the two
sequences do not interact, so running the T z-steps first gives the same iterates. The
losses close over v's variables, so g at z is evaluated by copying z's values into v's
variables (and v's values back afterwards) inside the graph: the user's losses need no
change.

Step sizes are the optimizers': ``lower_optimizer`` alpha, ``z_optimizer`` gamma,
``upper_optimizer`` xi alpha. With plain SGD they must respect the paper's coupling: alpha
lambda bounded (``alpha (L_f + lamb_max L_g) < 2``) and a u-step that shrinks like 1/lambda
(an error e in v enters the u-direction as lambda e). Adam, the default for a float learning
rate, is invariant to the scale of the gradient.

Deviations. From benchopt's F2SA (benchopt/benchmark_bilevel, solvers/f2sa.py at commit
3ad65dc, identical in ec4fb09): benchopt decays its step sizes as (k+1)^-5/7 (v), (k+1)^-4/7
(z and u) and its lambda increments as (k+1)^-1/7; here the optimizers' learning rates are
used as given (constant, or a Keras schedule), and ``lamb_delta_power=1/7`` reproduces
benchopt's lambda. benchopt draws a fresh minibatch for every gradient; here one iteration
uses one batch, as every solver of penalty-tf. The cap ``lamb_max`` is not in the paper: in
float32 ``lambda (g_u(v) - g_u(z))`` cancels, its rounding error ~ lambda eps |g_u| meets the
O(1/lambda) bias near lambda ~ eps^-1/2 ~ 4e3, hence the default 1e4.

Outputs: f and g at (u, v) after the lower steps (before the u-step), ``lower_gap`` =
``g(u, v) - g(u, z)`` there (the relaxed constraint, >= 0 once z minimises g), and ``lamb``,
the lambda of the next iteration (schedule state). Cost per iteration: 2T gradients of g,
T of f, and three gradients w.r.t. u: 3T + 3 gradients, no HVP (`BilevelSolver.cost`).
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
class F2SAConfig:
    """`F2SA`'s settings: the learning rates of u, v and z (TF1-style Adam) and the lambda
    schedule ``lambda_{k+1} = min(lambda_k + lamb_delta / (k + 1)^lamb_delta_power, lamb_max)``
    from ``lamb0`` (defaults: benchopt's lambda_0 = 1 and increment 0.1)."""

    lr_u: float = 1e-3
    lr_v: float = 1e-4
    lr_z: float = 1e-4
    lamb0: float = 1.0
    lamb_delta: float = 0.1
    lamb_delta_power: float = 0.0
    lamb_max: float = 1e4

    def __post_init__(self) -> None:
        check_config(self)
        if self.lamb_max < self.lamb0:
            raise ValueError(f"lamb_max must be >= lamb0, got lamb_max={self.lamb_max!r} < lamb0={self.lamb0!r}")


class F2SA(BilevelSolver):
    """F2SA: T steps on z (min g), T steps on v (min f + lambda g), one u-step, lambda grows.

    Example::

        solver = F2SA(upper_loss, lower_loss, [u], model.trainable_variables, upper_optimizer=1e-3,
                      lower_optimizer=1e-3, z_optimizer=1e-3, lamb0=1.0, lamb_delta=0.1)
        out = solver.step(batch, lower_steps=10)      # out["f"], out["lamb"], out["lower_gap"]

    Args:
      z_optimizer: learning rate (TF1 Adam) or optimizer(s) of z, one per lower group.
      lamb0, lamb_delta, lamb_delta_power, lamb_max: the lambda schedule (`F2SAConfig`).
      Other arguments as for `Penalty`; ``lower_step_batch`` serves the z- and v-steps.
    """

    checked_quantities = {"z_grad": "the gradient of g at z (F2SA's copy of the lower variables)",
                          "lower_grad": "the gradient of f + lambda g w.r.t. the lower variables",
                          "upper_grad": "the u-direction f_u + lambda (g_u(u, v) - g_u(u, z))",
                          "f": "f", "g": "g at v or at z"}
    outputs = {"f": tf.float32, "g": tf.float32, "lower_gap": tf.float32, "lamb": tf.float32,
               "status": tf.int32}
    state_outputs = ("lamb",)

    def __init__(self, upper_loss: Loss, lower_loss: Loss, upper_vars: VariableSpec,
                 lower_vars: VariableSpec, *, upper_optimizer: OptimizerSpec = 1e-3,
                 lower_optimizer: OptimizerSpec = 1e-4, z_optimizer: OptimizerSpec = 1e-4,
                 lamb0: float = 1.0, lamb_delta: float = 0.1, lamb_delta_power: float = 0.0,
                 lamb_max: float = 1e4, upper_bounds: Bounds = None, lower_bounds: Bounds = None,
                 lower_initializer: Callable[[], None] | None = None,
                 lower_step_batch: Callable[[Any], Any] | None = None,
                 jit_compile: bool = False, check_finite: bool = True):
        self.config = F2SAConfig(lamb0=lamb0, lamb_delta=lamb_delta, lamb_delta_power=lamb_delta_power,
                                 lamb_max=lamb_max)
        problem = BilevelProblem(upper_loss, lower_loss, upper_vars, lower_vars, upper_bounds,
                                 lower_bounds, lower_initializer, lower_step_batch)
        super().__init__(problem, upper_optimizer=upper_optimizer, lower_optimizer=lower_optimizer,
                         jit_compile=jit_compile, check_finite=check_finite)
        z = [[tf.Variable(v.read_value(), trainable=False, name="z") for v in group]
             for group in self.lower.groups]
        self.z = Level(z, z_optimizer, problem.lower_bounds, "z (F2SA's copy of lower_vars)")
        self.lamb = tf.Variable(float(lamb0), dtype=tf.float32, trainable=False, name="lamb")
        self.lamb_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="lamb_updates")

    @classmethod
    def from_problem(cls, problem: BilevelProblem, config: F2SAConfig | None = None, **options: Any) -> "F2SA":
        """F2SA on ``problem`` with ``config`` (default `F2SAConfig()`); options as
        `Penalty.from_problem`, plus ``z_optimizer``."""
        config = F2SAConfig() if config is None else config
        options.setdefault("upper_optimizer", config.lr_u)
        options.setdefault("lower_optimizer", config.lr_v)
        options.setdefault("z_optimizer", config.lr_z)
        return cls(**problem_arguments(problem), lamb0=config.lamb0, lamb_delta=config.lamb_delta,
                   lamb_delta_power=config.lamb_delta_power, lamb_max=config.lamb_max, **options)

    def cost(self, lower_steps: int) -> dict[str, int]:
        """`BilevelSolver.cost`: T z-steps (g), T v-steps (f and g), three u-gradients."""
        (t,) = self._counts(lower_steps)
        return self._passes(gradients=3 * t + 3, hvps=0)

    # -- state ---------------------------------------------------------------------------
    def named_levels(self):
        return {"upper": self.upper, "lower": self.lower, "z": self.z}

    def _schedule_variables(self) -> list[tf.Variable]:
        """lambda and the count k of its updates (z and its optimizer are the level ``z``)."""
        return [self.lamb, self.lamb_updates]

    def reset(self) -> None:
        """Learning rates, lambda and its update count back to their initial values; z set
        to the current v (as a new solver would start)."""
        super().reset()
        self.lamb.assign(self.config.lamb0)
        self.lamb_updates.assign(0)
        self._copy(self.lower.variables, self.z.variables)

    def reset_lower(self) -> None:
        """Re-initialise v (as `BilevelSolver.reset_lower`) and start z from the new v."""
        super().reset_lower()
        self._copy(self.lower.variables, self.z.variables)

    def set_learning_rates(self, upper: float | Sequence[float] | None = None,
                           lower: float | Sequence[float] | None = None,
                           z: float | Sequence[float] | None = None) -> None:
        """As `BilevelSolver.set_learning_rates`, plus ``z`` for z's optimizer(s)."""
        super().set_learning_rates(upper, lower)
        if z is not None:
            self.z.set_learning_rates(z)

    # -- maths ---------------------------------------------------------------------------
    @staticmethod
    def _copy(source: Sequence[Any], target: Sequence[tf.Variable]) -> None:
        for dst, src in zip(target, source):
            dst.assign(src)

    def _g_at_z(self, g_fn: Callable[[], tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """``(g(u, z), g_u(u, z))``: z's values copied into v's variables for the evaluation,
        v's values restored after it."""
        v = self.lower.variables
        saved = [x.read_value() for x in v]
        self._copy(self.z.variables, v)
        value, grads = autodiff.gradient(g_fn, self.upper.variables)
        self._copy(saved, v)
        return value, grads

    def _direction(self, f_fn, g_fn, lamb):
        """``(f_u + lambda (g_u(u, v) - g_u(u, z)), f, g, g(u, z))`` at the current point."""
        u = self.upper.variables
        g_z, g_u_z = self._g_at_z(g_fn)
        f, f_u = autodiff.gradient(f_fn, u)
        g, g_u = autodiff.gradient(g_fn, u)
        return [a + lamb * (b - c) for a, b, c in zip(f_u, g_u, g_u_z)], f, g, g_z

    def upper_direction(self, batch: Any = None) -> list[tf.Tensor]:
        """``f_u(u, v) + lambda (g_u(u, v) - g_u(u, z))`` with the current v, z and lambda (no
        lower steps): the gradient of the penalty L_lambda in u with g* evaluated at z. At
        ``v = argmin f + lambda g`` and ``z = argmin g`` it is within O(1/lambda) of dF/du."""
        return self._direction(*self._bind(batch), self.lamb.read_value())[0]

    # -- the compiled iteration ---------------------------------------------------------
    def _iteration(self, batch: Any, lower_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        f_fn, g_fn = self._bind(batch)
        lower_f, lower_g = self._bind_lower_steps(batch, (f_fn, g_fn))
        v, z, check = self.lower.variables, self.z.variables, self.monitor.check
        lamb = self.lamb.read_value()

        saved = [x.read_value() for x in v]

        def z_step(k, status):
            self._copy(z, v)                       # g and its gradient at z
            _, grads = autodiff.gradient(lower_g, v)
            status = check(status, "z_grad", grads, k)
            self.z.apply(grads)
            return status

        status = self._loop(lower_steps, z_step, self.monitor.initial())
        self._copy(saved, v)

        def v_step(k, status):
            _, f_v = autodiff.gradient(lower_f, v)
            _, g_v = autodiff.gradient(lower_g, v)
            grads = [a + lamb * b for a, b in zip(f_v, g_v)]
            status = check(status, "lower_grad", grads, k)
            self.lower.apply(grads)
            return status

        status = self._loop(lower_steps, v_step, status)
        grads, f, g, g_z = self._direction(f_fn, g_fn, lamb)
        status = check(status, "upper_grad", grads)
        status = check(status, "f", [f])
        status = check(status, "g", [g, g_z])
        self.upper.apply(grads)

        c = self.config
        k = tf.cast(self.lamb_updates.read_value() + 1, tf.float32)
        delta = c.lamb_delta * tf.pow(k, -c.lamb_delta_power) if c.lamb_delta_power else tf.constant(c.lamb_delta)
        self.lamb.assign(tf.minimum(lamb + delta, c.lamb_max))
        self.lamb_updates.assign_add(1)
        return {"f": f, "g": g, "lower_gap": g - g_z, "lamb": self.lamb.read_value(), "status": status}
