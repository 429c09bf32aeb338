"""PBGD: penalty-based bilevel gradient descent, with a value-gap or a gradient-norm penalty.

Shen & Chen, "On Penalty-based Bilevel Gradient Descent Method", ICML 2023 (Algorithm 1,
V-PBGD, and Algorithm 2, G-PBGD; arXiv:2302.05185). The bilevel problem is replaced by the
penalised single-level problem ``min_{u,v} f(u, v) + gamma p(u, v)`` with a penalty p that
is zero exactly on the lower solutions, and (u, v) descend it jointly. One upper-level
iteration, u the upper and v the lower variables, gamma the current penalty constant:

`VPBGD` (``"v-pbgd"``), the value gap ``p = g(u, v) - g*(u)``, ``g*(u) = min_w g(u, w)``
approximated by an auxiliary lower copy w (state, warm-started across iterations; it starts
at v's values), alpha = ``lr_inner``:

1. T plain gradient steps on g(u, .) from the previous w::

       w <- P_V(w - alpha grad_v g(u, w))        (T times)

2. at the current (u, v), with w held constant, the penalised gradient::

       d_u = grad_u f(u, v) + gamma (grad_u g(u, v) - grad_u g(u, w))
       d_v = grad_v f(u, v) + gamma grad_v g(u, v)

`GPBGD` (``"g-pbgd"``), the squared gradient norm ``p = ||grad_v g(u, v)||^2`` (no inner
loop; its gradient needs a Hessian-vector product, one nested-tape pass)::

       d = grad f + 2 gamma H_{(u,v),v} grad_v g        (H_{(u,v),v} = d^2 g / d(u,v) dv)

then, for both, one step of each level along ``s d`` and the penalty ramp::

       u <- opt_u(u, s d_u),   v <- opt_v(v, s d_v),   s = 1 / max(gamma, 1) if scale_step else 1
       gamma <- min(gamma_growth * gamma + gamma_increment, gamma_max)

The paper's analysis takes a constant gamma and a step size alpha <= 1/(L_f + gamma L_g); its
code divides the step by gamma (``s``, the default) and ramps gamma linearly from gamma_init to
gamma_max (``gamma_growth=1, gamma_increment=(max - init)/steps``); ``gamma_growth > 1`` gives a
geometric ramp; both increments 0 (the default) keep gamma = gamma0. The solutions of the
penalised problem are within O(1/gamma) of the bilevel solutions (the paper's Section 2).

Checked against the paper and the authors' code (hanshen95/penalized-bilevel-gradient-descent,
commit ae64a721b1fd25438813701901743154505d782b: ``V-PBGD/data-hyper-cleaning/data_hyper_clean.py``
and ``G-PBGD/data_hyper_clean_gpbgd.py``); benchopt/benchmark_bilevel has no PBGD solver.
Deviations and choices:

* The inner steps of V-PBGD are plain gradient descent with their own step size (the paper's
  projected GD; the authors' code uses plain SGD on a separate copy), not the lower optimizer,
  whose moments belong to v's trajectory. w is held in v's variables while its steps run
  (the losses close over them); v is restored afterwards.
* G-PBGD's penalty is ``gamma ||grad_v g||^2`` as in the paper; the authors' code uses
  ``gamma/2 ||grad_v g||^2``, i.e. its gamma is twice this one.
* The joint step uses the solver's optimizers (a float learning rate is TF1-style Adam, as
  everywhere in penalty-tf); pass ``keras.optimizers.SGD`` for the paper's plain steps.
  The authors' code divides by ``gamma + 1e-8`` (here ``max(gamma, 1)``, as its
  ``min(1/(gamma + 1e-8), 1)`` does up to the 1e-8).

Outputs: f and g at (u, v) before the step, ``penalty`` = p(u, v) there (V-PBGD: g(u, v) -
g(u, w) with the new w, an estimate of g - g* that is >= 0 up to the inner error; G-PBGD:
||grad_v g||^2), and ``gamma``, the constant this iteration used (schedule state; the
variable then advances).

Cost per iteration (`BilevelSolver.cost`): V-PBGD T + 3 gradients (T inner steps of w, g_u at
w, f and g at (u, v)) and no HVP; G-PBGD 2 gradients and 1 HVP (one nested-tape pass of f
and g, whatever T).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import tensorflow as tf

from penalty_tf import autodiff
from penalty_tf.problem import Bounds, BilevelProblem, Loss, OptimizerSpec, VariableSpec
from penalty_tf.solvers.base import BilevelSolver, problem_arguments
from penalty_tf.solvers.bome import plain_lower_steps
from penalty_tf.solvers.ranges import check_config


def _check_gamma(config: Any) -> None:
    """The ranges of the config's fields, and gamma_max >= gamma0."""
    check_config(config)
    if config.gamma_max < config.gamma0:
        raise ValueError(f"gamma_max must be >= gamma0, got gamma_max={config.gamma_max!r} < "
                         f"gamma0={config.gamma0!r} (the ramp only raises gamma up to gamma_max)")


@dataclasses.dataclass(frozen=True)
class GPBGDConfig:
    """`GPBGD`'s settings: the learning rates of the joint step on u and v (TF1-style Adam),
    the penalty ramp ``gamma <- min(gamma_growth gamma + gamma_increment, gamma_max)`` from
    gamma0, and whether the step is divided by max(gamma, 1)."""

    lr_u: float = 1e-3
    lr_v: float = 1e-3
    gamma0: float = 10.0
    gamma_max: float = 1e3
    gamma_growth: float = 1.0
    gamma_increment: float = 0.0
    scale_step: bool = True

    def __post_init__(self) -> None:
        _check_gamma(self)


@dataclasses.dataclass(frozen=True)
class VPBGDConfig:
    """`VPBGD`'s settings: those of `GPBGDConfig` and the plain step size ``lr_inner`` of the
    auxiliary copy w's inner gradient steps."""

    lr_u: float = 1e-3
    lr_v: float = 1e-3
    lr_inner: float = 1e-2
    gamma0: float = 10.0
    gamma_max: float = 1e3
    gamma_growth: float = 1.0
    gamma_increment: float = 0.0
    scale_step: bool = True

    def __post_init__(self) -> None:
        _check_gamma(self)


_RAMP_FIELDS = ("gamma0", "gamma_max", "gamma_growth", "gamma_increment", "scale_step")


class _PBGD(BilevelSolver):
    """What V-PBGD and G-PBGD share: gamma and its ramp, the scaled joint step, the outputs.
    A subclass gives ``_prepare`` (its inner steps) and ``_gradient`` (d over u + v)."""

    outputs = {"f": tf.float32, "g": tf.float32, "penalty": tf.float32, "gamma": tf.float32,
               "status": tf.int32}
    state_outputs = ("gamma",)

    def _setup(self, config: Any) -> None:
        self.config = config
        self.gamma = tf.Variable(float(config.gamma0), dtype=tf.float32, trainable=False, name="gamma")

    @classmethod
    def _options(cls, config: Any, options: dict[str, Any]) -> dict[str, Any]:
        options.setdefault("upper_optimizer", config.lr_u)
        options.setdefault("lower_optimizer", config.lr_v)
        return dict(options, **{k: getattr(config, k) for k in _RAMP_FIELDS})

    def reset(self) -> None:
        """Learning rates and gamma back to their initial values."""
        super().reset()
        self.gamma.assign(self.config.gamma0)

    def _schedule_variables(self) -> list[tf.Variable]:
        """gamma, the penalty constant."""
        return [self.gamma]

    def upper_direction(self, batch: Any = None) -> list[tf.Tensor]:
        """``d_u``, the u-part of the penalised gradient at the current (u, v) and gamma (for
        V-PBGD with the current w, no inner steps), before the step scale s. At a minimiser
        of the penalised function in v it approaches the hypergradient as gamma grows."""
        f_fn, g_fn = self._bind(batch)
        grads, _ = self._gradient(f_fn, g_fn, self.gamma.read_value())
        return grads[:len(self.upper.variables)]

    def _prepare(self, batch: Any, bound: tuple, lower_steps: tf.Tensor, status: tf.Tensor) -> tf.Tensor:
        return status

    def _gradient(self, f_fn, g_fn, gamma) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        raise NotImplementedError

    def _iteration(self, batch: Any, lower_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        f_fn, g_fn = self._bind(batch)
        check = self.monitor.check
        gamma = self.gamma.read_value()
        status = self._prepare(batch, (f_fn, g_fn), lower_steps, self.monitor.initial())
        grads, out = self._gradient(f_fn, g_fn, gamma)
        status = check(status, "direction", grads)
        status = check(status, "f", [out["f"]])
        status = check(status, "g", [out["g"]])
        status = check(status, "penalty", [out["penalty"]])
        scale = 1.0 / tf.maximum(gamma, 1.0) if self.config.scale_step else tf.constant(1.0)
        grads = [tf.cast(scale, x.dtype) * x for x in grads]
        n = len(self.upper.variables)
        self.upper.apply(grads[:n])
        self.lower.apply(grads[n:])
        c = self.config
        self.gamma.assign(tf.minimum(c.gamma_growth * gamma + c.gamma_increment, c.gamma_max))
        return dict(out, gamma=gamma, status=status)


class VPBGD(_PBGD):
    """V-PBGD: the value-gap penalty gamma (g(u, v) - g(u, w)), w from T warm-started steps.

    Example::

        solver = VPBGD(upper_loss, lower_loss, [u], model.trainable_variables, upper_optimizer=1e-2,
                       lower_optimizer=1e-2, lr_inner=0.1, gamma0=1.0, gamma_max=100.0, gamma_growth=1.01)
        out = solver.step(batch, lower_steps=5)      # out["gamma"], out["penalty"]

    Args:
      lr_inner: the plain step size of the T inner gradient steps of w on g(u, .).
      gamma0, gamma_max, gamma_growth, gamma_increment: the penalty constant's start and its
        ramp ``gamma <- min(gamma_growth gamma + gamma_increment, gamma_max)`` per iteration.
      scale_step: divide the step by max(gamma, 1) (the paper's step size ~ 1/gamma).
      Other arguments as for `Penalty`; the optimizers make the joint step on u and v.
    """

    checked_quantities = {"inner_grad": "the gradient of g w.r.t. the lower variables at the auxiliary copy w",
                          "direction": "the gradient of the penalised function f + gamma (g - g(u, w))",
                          "f": "f", "g": "g", "penalty": "the value gap g(u, v) - g(u, w)"}

    def __init__(self, upper_loss: Loss, lower_loss: Loss, upper_vars: VariableSpec,
                 lower_vars: VariableSpec, *, upper_optimizer: OptimizerSpec = 1e-3,
                 lower_optimizer: OptimizerSpec = 1e-3, lr_inner: float = 1e-2, gamma0: float = 10.0,
                 gamma_max: float = 1e3, gamma_growth: float = 1.0, gamma_increment: float = 0.0,
                 scale_step: bool = True, upper_bounds: Bounds = None, lower_bounds: Bounds = None,
                 lower_initializer: Callable[[], None] | None = None,
                 lower_step_batch: Callable[[Any], Any] | None = None,
                 jit_compile: bool = False, check_finite: bool = True):
        config = VPBGDConfig(lr_inner=lr_inner, gamma0=gamma0, gamma_max=gamma_max, gamma_growth=gamma_growth,
                             gamma_increment=gamma_increment, scale_step=scale_step)
        problem = BilevelProblem(upper_loss, lower_loss, upper_vars, lower_vars, upper_bounds,
                                 lower_bounds, lower_initializer, lower_step_batch)
        super().__init__(problem, upper_optimizer=upper_optimizer, lower_optimizer=lower_optimizer,
                         jit_compile=jit_compile, check_finite=check_finite)
        self._setup(config)
        self.lr_inner = float(config.lr_inner)
        self.w = [tf.Variable(v.read_value(), trainable=False, name="w") for v in self.lower.variables]

    @classmethod
    def from_problem(cls, problem: BilevelProblem, config: VPBGDConfig | None = None, **options: Any) -> "VPBGD":
        """V-PBGD on ``problem`` with ``config`` (default `VPBGDConfig()`); options as
        `Penalty.from_problem`."""
        config = VPBGDConfig() if config is None else config
        return cls(**problem_arguments(problem), lr_inner=config.lr_inner, **cls._options(config, options))

    def cost(self, lower_steps: int) -> dict[str, int]:
        """`BilevelSolver.cost`: T inner gradients of w, g_u at w, f and g at (u, v)."""
        (t,) = self._counts(lower_steps)
        return self._passes(gradients=t + 3, hvps=0)

    def reset(self) -> None:
        """Learning rates and gamma back to their initial values, w to the current v (a fresh
        solver's warm start)."""
        super().reset()
        for w, v in zip(self.w, self.lower.variables):
            w.assign(v)

    def _schedule_variables(self) -> list[tf.Variable]:
        """gamma and the auxiliary lower copy w (one per lower variable)."""
        return [self.gamma, *self.w]

    def _prepare(self, batch, bound, lower_steps, status):
        """T plain gradient steps of w on g(u, .), run in v's variables, v restored."""
        _, lower_g = self._bind_lower_steps(batch, bound)
        v = self.lower.variables
        saved = [x.read_value() for x in v]
        for x, w in zip(v, self.w):
            x.assign(w)
        status = plain_lower_steps(self, lower_g, lower_steps, self.lr_inner, status)
        for w, x, value in zip(self.w, v, saved):
            w.assign(x)
            x.assign(value)
        return status

    def _gradient(self, f_fn, g_fn, gamma):
        u, v = self.upper.variables, self.lower.variables
        saved = [x.read_value() for x in v]
        for x, w in zip(v, self.w):
            x.assign(w)
        g_w, g_u_w = autodiff.gradient(g_fn, u)          # at w
        for x, value in zip(v, saved):
            x.assign(value)
        f, grad_f = autodiff.gradient(f_fn, u + v)
        g, grad_g = autodiff.gradient(g_fn, u + v)
        n = len(u)
        gap = [a - b for a, b in zip(grad_g[:n], g_u_w)] + grad_g[n:]
        grads = [a + tf.cast(gamma, a.dtype) * b for a, b in zip(grad_f, gap)]
        return grads, {"f": f, "g": g, "penalty": g - g_w}


class GPBGD(_PBGD):
    """G-PBGD: the gradient-norm penalty gamma ||grad_v g||^2 (a Hessian-vector product).

    Example::

        solver = GPBGD(upper_loss, lower_loss, [u], model.trainable_variables, upper_optimizer=1e-2,
                       lower_optimizer=1e-2, gamma0=1.0, gamma_max=100.0, gamma_increment=0.1)
        out = solver.step(batch)                 # no inner loop: lower_steps is not used

    Args:
      gamma0, gamma_max, gamma_growth, gamma_increment, scale_step: as for `VPBGD`.
      Other arguments as for `Penalty`; the optimizers make the joint step on u and v.
      ``step``'s ``lower_steps`` is accepted (the common interface) and not used.
    """

    checked_quantities = {"direction": "the gradient of the penalised function f + gamma ||grad_v g||^2",
                          "f": "f", "g": "g", "penalty": "||grad_v g||^2"}

    def __init__(self, upper_loss: Loss, lower_loss: Loss, upper_vars: VariableSpec,
                 lower_vars: VariableSpec, *, upper_optimizer: OptimizerSpec = 1e-3,
                 lower_optimizer: OptimizerSpec = 1e-3, gamma0: float = 10.0, gamma_max: float = 1e3,
                 gamma_growth: float = 1.0, gamma_increment: float = 0.0, scale_step: bool = True,
                 upper_bounds: Bounds = None, lower_bounds: Bounds = None,
                 lower_initializer: Callable[[], None] | None = None,
                 lower_step_batch: Callable[[Any], Any] | None = None,
                 jit_compile: bool = False, check_finite: bool = True):
        config = GPBGDConfig(gamma0=gamma0, gamma_max=gamma_max, gamma_growth=gamma_growth,
                             gamma_increment=gamma_increment, scale_step=scale_step)
        problem = BilevelProblem(upper_loss, lower_loss, upper_vars, lower_vars, upper_bounds,
                                 lower_bounds, lower_initializer, lower_step_batch)
        super().__init__(problem, upper_optimizer=upper_optimizer, lower_optimizer=lower_optimizer,
                         jit_compile=jit_compile, check_finite=check_finite)
        self._setup(config)

    @classmethod
    def from_problem(cls, problem: BilevelProblem, config: GPBGDConfig | None = None, **options: Any) -> "GPBGD":
        """G-PBGD on ``problem`` with ``config`` (default `GPBGDConfig()`); options as
        `Penalty.from_problem`."""
        config = GPBGDConfig() if config is None else config
        return cls(**problem_arguments(problem), **cls._options(config, options))

    def cost(self, lower_steps: int) -> dict[str, int]:
        """`BilevelSolver.cost`: one nested-tape pass of f and g (T is not used)."""
        self._counts(lower_steps)   # validated as in step
        return self._passes(gradients=2, hvps=1)

    def _gradient(self, f_fn, g_fn, gamma):
        u, v = self.upper.variables, self.lower.variables
        r = autodiff.gradient_plus_hvp(f_fn, g_fn, v, lambda grad: [tf.cast(2.0 * gamma, x.dtype) * x for x in grad],
                                       u + v)
        return r.grads, {"f": r.upper_value, "g": r.lower_value, "penalty": autodiff.squared_norm(r.lower_grad)}
