"""Penalty method with augmented Lagrangian (Mehra & Hamm 2021, Algorithm 1 + Sec. 2).

With ``G = grad_v g(u, v)`` the solver alternates over the two penalty functions

    h_upper(u, v) = f(u, v) + <nu, G> + rho/2 ||G||^2
    h_lower(u, v) = h_upper(u, v) + lambda g(u, v)

One upper-level iteration (`Penalty.step`) is, exactly in the original's order:

1. T Adam steps on ``h_lower`` w.r.t. v (G recomputed at every step),
2. one Adam step on ``h_upper`` w.r.t. u,
3. at the new point and on the same batch: ``hu = ||grad_u h_upper||^2`` and
   ``hv = ||grad_v h_lower||^2`` (both already squared norms),
4. if ``hu^2 + hv^2 < eps^2`` ("the sub-problem is solved"):
   ``rho <- c_rho rho``, ``lambda <- c_lamb lambda``, ``eps <- c_eps eps``, then
   ``nu <- nu + rho_new G`` and every learning rate ``<- lr_decay * lr`` — of the
   optimizers the solver made from float learning rates (the original's case); a Keras
   optimizer passed in is left alone unless marked with `penalty_tf.optimizers.schedule_owned`.

Faithful quirks of the original (docs/original.md §1.1–1.3, §5.1), all reproduced here:

* The tolerance test squares already-squared norms: ``||grad_u h||^4 + ||grad_v h||^4 <
  eps^2`` (the paper states a norm test).
* The multiplier update reads the *new* rho (rho is multiplied first) and G at the current
  point on the same batch.
* The decay factors differ per variant of the original; `PenaltySchedule` has one
  constructor for each: `single_group` (lambda, eps x0.9, lr x0.9), `multi_group` (lr x0.99)
  and `synthetic` (lambda, eps, lr divided by c_rho, nu_0 = 0).
* nu starts at ``nu_0`` in every entry (not zero) except in the synthetic variant.
* Adam moments are never reset by the schedule; the returned loss terms are those before
  the schedule update.

Cost per iteration (`BilevelSolver.cost`): 2T + 4 gradients and T + 2 HVPs, i.e. T + 2
nested-tape passes of f and g (the T lower steps, the u-step and the tolerance test).
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
class PenaltySchedule:
    """Initial penalty state and the factors applied when the tolerance test passes.

    Defaults are the original's single-group settings used by most applications
    (rho_0 = lambda_0 = eps_0 = 1e-2, nu_0 = 1e-4, c_rho 1.1, c_lamb = c_eps = 0.9, learning
    rates x0.9). The factors multiply; the synthetic variant's divisions by c_rho are
    expressed as multiplications by 1/c_rho (equal up to float32 rounding).

    Choosing values for a new problem: the defaults are tuned for the paper's importance
    learning. With small rho0 and lamb0 the v-steps are dominated by f (weight 1 in h_lower),
    so v drifts towards the upper problem's optimum while ``G`` stays small; and the
    (faithful) fourth-power tolerance test may rarely pass, so rho can stay at rho0 for a
    long time. Start with rho0 = lamb0 in 1..10 and watch ``out["g"]`` and ``out["penalty"]``
    (docs/using_the_solver.md, section 3, "Reading the logs, and choosing the settings").
    """

    rho0: float = 1e-2
    lamb0: float = 1e-2
    eps0: float = 1e-2
    nu0: float = 1e-4
    c_rho: float = 1.1
    c_lamb: float = 0.9
    c_eps: float = 0.9
    lr_decay: float = 0.9

    def __post_init__(self) -> None:
        check_config(self)   # a ValueError naming the setting and its range

    @classmethod
    def single_group(cls, **kwargs: float) -> "PenaltySchedule":
        """``bilevel_penalty_aug_lag.py``: lambda x c_lamb, eps x c_eps, learning rates x0.9."""
        return cls(**kwargs)

    @classmethod
    def multi_group(cls, **kwargs: float) -> "PenaltySchedule":
        """``bilevel_penalty_multivar_augm_lag.py`` (few-shot): every learning rate x0.99."""
        kwargs.setdefault("lr_decay", 0.99)
        return cls(**kwargs)

    @classmethod
    def synthetic(cls, rho0: float = 1.0, lamb0: float = 10.0, eps0: float = 1.0,
                  c_rho: float = 1.1) -> "PenaltySchedule":
        """``bilevel_penalty_aug_lag_synthetic.py``: nu_0 = 0; lambda, eps and lrs / c_rho."""
        return cls(rho0=rho0, lamb0=lamb0, eps0=eps0, nu0=0.0, c_rho=c_rho,
                   c_lamb=1.0 / c_rho, c_eps=1.0 / c_rho, lr_decay=1.0 / c_rho)


@dataclasses.dataclass(frozen=True)
class PenaltyConfig(PenaltySchedule):
    """`Penalty`'s settings: the learning rates of u and v (TF1-style Adam) and the
    `PenaltySchedule` fields (a `PenaltyConfig` is itself the schedule)."""

    lr_u: float = 1e-3
    lr_v: float = 1e-4

    def schedule(self) -> PenaltySchedule:
        """The schedule part alone."""
        return PenaltySchedule(**{f.name: getattr(self, f.name)
                                  for f in dataclasses.fields(PenaltySchedule)})


class Penalty(BilevelSolver):
    """Penalty method with augmented Lagrangian; one or several variable groups per level.

    Example::

        solver = Penalty(upper_loss, lower_loss, upper_vars=u, lower_vars=model.trainable_variables,
                         upper_optimizer=3.0, lower_optimizer=1e-4,
                         schedule=PenaltySchedule(nu0=1e-6))
        for batch in batches:
            out = solver.step(batch, lower_steps=20)   # out["f"], out["rho"], ...

    Args:
      upper_loss, lower_loss: ``batch -> scalar`` callables for f and g.
      upper_vars, lower_vars: u and v: a variable, a list, or a list of groups.
      upper_optimizer, lower_optimizer: a learning rate (TF1-style Adam), a Keras optimizer,
        or one per group.
      schedule: `PenaltySchedule`.
      upper_bounds, lower_bounds: ``(low, high)`` box or projection callable applied after
        every step on that level (TF1's variable constraints in the original).
      lower_initializer: callable re-initialising v for `reset_lower` (default: restore the
        values v had when the solver was built).
      lower_step_batch: optional ``batch -> batch'`` evaluated once per iteration, before the
        lower steps, whose result the losses receive during the lower steps. Those steps
        differentiate w.r.t. v only, so whatever depends on u and the batch alone (e.g. the
        features of an upper-level encoder) can be computed there once instead of T times;
        the losses must accept both forms. Same maths, fewer passes (few-shot learning).
      jit_compile: compile the step with XLA.
      check_finite: raise `NonFiniteError` when a loss or gradient is NaN/Inf.
    """

    checked_quantities = {"lower_grad": "the gradient of h_lower w.r.t. the lower variables",
                          "upper_grad": "the gradient of h_upper w.r.t. the upper variables",
                          "f": "f", "g": "g", "tolerance": "the tolerance-test gradients"}
    state_outputs = ("rho", "lamb", "eps")

    outputs = {**{k: tf.float32 for k in ("f", "g", "penalty", "nu_term", "lamb_g", "hu", "hv",
                                          "h_upper", "h_lower", "rho", "lamb", "eps")},
               "converged": tf.bool, "status": tf.int32}

    def __init__(self, upper_loss: Loss, lower_loss: Loss, upper_vars: VariableSpec,
                 lower_vars: VariableSpec, *, upper_optimizer: OptimizerSpec = 1e-3,
                 lower_optimizer: OptimizerSpec = 1e-4,
                 schedule: PenaltySchedule = PenaltySchedule(), upper_bounds: Bounds = None,
                 lower_bounds: Bounds = None, lower_initializer: Callable[[], None] | None = None,
                 lower_step_batch: Callable[[Any], Any] | None = None,
                 jit_compile: bool = False, check_finite: bool = True):
        problem = BilevelProblem(upper_loss, lower_loss, upper_vars, lower_vars, upper_bounds,
                                 lower_bounds, lower_initializer, lower_step_batch)
        super().__init__(problem, upper_optimizer=upper_optimizer, lower_optimizer=lower_optimizer,
                         jit_compile=jit_compile, check_finite=check_finite)
        if not isinstance(schedule, PenaltySchedule):
            raise TypeError(f"schedule must be a PenaltySchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.rho = tf.Variable(schedule.rho0, dtype=tf.float32, trainable=False, name="rho")
        self.lamb = tf.Variable(schedule.lamb0, dtype=tf.float32, trainable=False, name="lamb")
        self.eps = tf.Variable(schedule.eps0, dtype=tf.float32, trainable=False, name="eps")
        self.nu = [tf.Variable(tf.fill(v.shape, tf.cast(schedule.nu0, v.dtype)), trainable=False,
                               name="nu") for v in self.lower.variables]

    @classmethod
    def from_problem(cls, problem: BilevelProblem, config: PenaltyConfig | None = None,
                     **options: Any) -> "Penalty":
        """Penalty on ``problem`` with ``config`` (default `PenaltyConfig()`); ``options``:
        ``upper_optimizer`` / ``lower_optimizer`` (replacing the config's learning rates),
        ``jit_compile``, ``check_finite``."""
        config = PenaltyConfig() if config is None else config
        options.setdefault("upper_optimizer", config.lr_u)
        options.setdefault("lower_optimizer", config.lr_v)
        return cls(**problem_arguments(problem), schedule=config.schedule(), **options)

    # -- state -------------------------------------------------------------------------
    def reset(self) -> None:
        """rho, lambda, eps, nu and learning rates back to their initial values.

        As the original's ``reset_penalty_parameters``: Adam moments are kept; call
        `reset_optimizers` (or `restart`) to zero them too.
        """
        super().reset()
        s = self.schedule
        self.rho.assign(s.rho0)
        self.lamb.assign(s.lamb0)
        self.eps.assign(s.eps0)
        for nu in self.nu:
            nu.assign(tf.fill(nu.shape, tf.cast(s.nu0, nu.dtype)))

    def state(self) -> dict[str, float]:
        """Current rho, lambda, eps and learning rates as Python floats."""
        return {"rho": float(self.rho.numpy()), "lamb": float(self.lamb.numpy()),
                "eps": float(self.eps.numpy()), "lr_upper": self.upper.learning_rates(),
                "lr_lower": self.lower.learning_rates()}

    def _schedule_variables(self) -> list[tf.Variable]:
        """rho, lambda, eps and nu (one per lower variable), for `state_variables`."""
        return [self.rho, self.lamb, self.eps, *self.nu]

    # -- the compiled iteration --------------------------------------------------------
    def _state(self) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        """rho, lambda and nu, read once per iteration (they change only at its end)."""
        return self.rho.read_value(), self.lamb.read_value(), [nu.read_value() for nu in self.nu]

    @staticmethod
    def _directions(f_fn, g_fn, v, wrt, rho, lamb, nu):
        """One nested-tape pass at the current point.

        Returns ``grad_wrt h_upper = grad f + H_{wrt,v} (nu + rho G)`` and the pass result
        (f, g, G). ``h_upper = f + <nu, G> + rho/2 ||G||^2`` has exactly this gradient.
        """
        r = autodiff.gradient_plus_hvp(f_fn, g_fn, v, lambda grad: [n + rho * gr for n, gr in zip(nu, grad)],
                                       wrt)
        return r.grads, r

    @staticmethod
    def _add_lambda_g(grads_v: list[tf.Tensor], lower_grad: list[tf.Tensor], lamb: tf.Tensor):
        """``grad_v h_lower = grad_v h_upper + lambda G`` (d(lambda g)/dv = lambda G)."""
        return [gv + lamb * gr for gv, gr in zip(grads_v, lower_grad)]

    def _both_gradients(self, f_fn, g_fn, rho, lamb, nu):
        """``(grad_u h_upper, grad_v h_lower, pass result)`` from one nested-tape pass."""
        u, v = self.upper.variables, self.lower.variables
        grads, r = self._directions(f_fn, g_fn, v, u + v, rho, lamb, nu)
        return grads[:len(u)], self._add_lambda_g(grads[len(u):], r.lower_grad, lamb), r

    def gradients(self, batch: Any = None) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """The step directions at the current point: ``(grad_u h_upper, grad_v h_lower)``.

        At a minimiser of h_lower in v, ``grad_u h_upper`` approaches the exact hypergradient
        ``f_u - g_uv g_vv^{-1} f_v`` as rho grows (the paper's Lemma 3).
        """
        grad_u, grad_v, _ = self._both_gradients(*self._bind(batch), *self._state())
        return grad_u, grad_v

    def upper_direction(self, batch: Any = None) -> list[tf.Tensor]:
        """``grad_u h_upper = f_u + H_uv (nu + rho G)`` at the current point (`gradients`)."""
        return self.gradients(batch)[0]

    def cost(self, lower_steps: int) -> dict[str, int]:
        """T + 2 nested-tape passes of f and g (`BilevelSolver.cost`): T lower steps, the
        u-step and the tolerance test, each 2 gradients and 1 HVP."""
        (t,) = self._counts(lower_steps)
        return self._passes(gradients=2 * (t + 2), hvps=t + 2)

    def _iteration(self, batch: Any, lower_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        f_fn, g_fn = self._bind(batch)
        lower_f, lower_g = self._bind_lower_steps(batch, (f_fn, g_fn))
        u, v = self.upper.variables, self.lower.variables
        check = self.monitor.check
        rho, lamb, nu = self._state()

        def lower_step(k, status):
            grads, r = self._directions(lower_f, lower_g, v, v, rho, lamb, nu)
            grads = self._add_lambda_g(grads, r.lower_grad, lamb)
            status = check(status, "lower_grad", grads, k)
            self.lower.apply(grads)
            return status

        status = self._loop(lower_steps, lower_step, self.monitor.initial())

        grads, _ = self._directions(f_fn, g_fn, v, u, rho, lamb, nu)
        status = check(status, "upper_grad", grads)
        self.upper.apply(grads)

        # Tolerance test at the new point, same batch.
        grad_u, grad_v_lower, r = self._both_gradients(f_fn, g_fn, rho, lamb, nu)
        hu = autodiff.squared_norm(grad_u)
        hv = autodiff.squared_norm(grad_v_lower)
        f, g = r.upper_value, r.lower_value
        status = check(status, "f", [f])
        status = check(status, "g", [g])
        status = check(status, "tolerance", [hu, hv])
        converged = hu * hu + hv * hv < self.eps * self.eps   # quirk: fourth powers of norms

        out = {"f": f, "g": g, "penalty": 0.5 * rho * autodiff.squared_norm(r.lower_grad),
               "nu_term": autodiff.dot(nu, r.lower_grad), "lamb_g": lamb * g,
               "hu": hu, "hv": hv, "converged": converged}
        out["h_upper"] = out["f"] + out["nu_term"] + out["penalty"]
        out["h_lower"] = out["h_upper"] + out["lamb_g"]
        self._advance_schedule(converged, r.lower_grad)
        out.update(rho=self.rho.read_value(), lamb=self.lamb.read_value(),
                   eps=self.eps.read_value(), status=status)
        return out

    def _advance_schedule(self, converged: tf.Tensor, grad: list[tf.Tensor]) -> None:
        """On convergence: rho, lambda, eps scaled; then nu += rho_new G; then lrs decayed."""
        s = self.schedule

        def scaled(var, factor):
            return tf.where(converged, var * factor, var)

        rho_new = scaled(self.rho, s.c_rho)
        self.rho.assign(rho_new)
        self.lamb.assign(scaled(self.lamb, s.c_lamb))
        self.eps.assign(scaled(self.eps, s.c_eps))
        for nu, gr in zip(self.nu, grad):          # uses the new rho (original's order)
            nu.assign(tf.where(converged, nu + rho_new * gr, nu))
        decay = tf.where(converged, tf.constant(s.lr_decay, tf.float32), 1.0)
        self.upper.scale_learning_rates(decay, only_owned=True)
        self.lower.scale_learning_rates(decay, only_owned=True)

