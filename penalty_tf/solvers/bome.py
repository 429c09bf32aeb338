"""BOME: a first-order value-function method with a dynamic barrier (no second derivatives).

Liu, Ye, Wright, Stone & Liu, "BOME! Bilevel Optimization Made Easy: A Simple First-Order
Approach", NeurIPS 2022, Algorithm 1 (arXiv:2209.08709). The bilevel problem is read as the
constrained problem ``min_{u,v} f(u, v)`` s.t. ``q(u, v) = g(u, v) - min_w g(u, w) <= 0``,
with the value function approximated by a few gradient steps. One upper-level iteration
(`BOME.step`), u the upper and v the lower variables, alpha = ``lr_inner``:

1. T plain gradient steps on g from the current v (v itself is not moved)::

       v_0 = v,   v_{t+1} = P_V(v_t - alpha grad_v g(u, v_t)),   t = 0 … T-1

2. ``q(u, v) = g(u, v) - g(u, v_T)`` with v_T held constant; at the current (u, v)::

       grad q = (grad_u g(u, v) - grad_u g(u, v_T),  grad_v g(u, v))

3. the barrier target ``phi = eta ||grad q||^2`` (``phi="grad_norm"``, the paper's practical
   choice and benchopt's default) or ``phi = eta q(u, v)`` (``phi="value"``, the authors'
   experiment code), and the multiplier::

       lambda = max(phi - <grad f, grad q>, 0) / ||grad q||^2       (lambda = 0 if grad q = 0)

4. the joint direction ``d = grad f + lambda grad q`` over (u, v), both taken at the current
   (u, v) (not at v_T), and one step of each level along its part::

       u <- opt_u(u, d_u),   v <- opt_v(v, d_v)      (then the box projections)

Checked against benchopt's ``solvers/bome.py`` (benchopt/benchmark_bilevel, commit
fbe682ee8c0c6f367ca5e3ddce70a83baf201f80) and the authors' ``hpo/l2reg.py``
(Cranial-XIX/BOME): the inner steps restart from v every iteration, the gradients of f and q
are taken at (u, v), and v moves along its part of d. The returned f and g are those at
(u, v) before the step; ``q`` is q(u, v) and ``lamb`` the multiplier of that step.

Choices and deviations:

* The inner steps are plain gradient descent with their own step size alpha, not the lower
  optimizer: v_T is a fresh approximation of the lower minimiser from v at every iteration
  (the analysis and q's definition assume gradient steps), while the lower optimizer's
  moments belong to v's own trajectory (the joint steps) and would mix the two; an Adam
  restarted every iteration would take sign steps of size lr instead. The inner iterate is
  held in v's variables while the steps run (the losses close over them) and v is restored
  afterwards, so v_T is not kept.
* ``grad q = 0`` (v = v_T, e.g. v already minimises g): lambda = 0 and d = grad f. benchopt
  divides 0 by 0 there (NaN); the authors' code adds 1e-8 to the denominator, which gives the
  same lambda = 0 with the default phi.
* The joint step uses the solver's optimizers (a float learning rate is TF1-style Adam, as
  everywhere in penalty-tf); pass ``keras.optimizers.SGD`` for the paper's plain steps xi.
  benchopt uses one plain step size for v and its inner loop and step / outer_ratio for u.

Cost per iteration: T gradients of g w.r.t. v (the inner steps), one of g w.r.t. u at v_T,
one of f and one of g w.r.t. (u, v); no Hessian-vector products: T + 3 gradients
(`BilevelSolver.cost`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import tensorflow as tf

from penalty_tf import autodiff
from penalty_tf.problem import Bounds, BilevelProblem, Loss, OptimizerSpec, VariableSpec
from penalty_tf.solvers.base import BilevelSolver, as_count, problem_arguments
from penalty_tf.solvers.ranges import check_config

PHI_CHOICES = ("grad_norm", "value")


@dataclasses.dataclass(frozen=True)
class BOMEConfig:
    """`BOME`'s settings: the learning rates of the joint step on u and v (TF1-style Adam),
    the plain step size of the inner gradient steps, the barrier coefficient eta and the
    choice of phi (``"grad_norm"``: eta ||grad q||^2; ``"value"``: eta q)."""

    lr_u: float = 1e-3
    lr_v: float = 1e-3
    lr_inner: float = 1e-2
    eta: float = 0.5
    phi: str = "grad_norm"

    def __post_init__(self) -> None:
        check_config(self)
        if self.phi not in PHI_CHOICES:
            raise ValueError(f"phi must be one of {PHI_CHOICES}, got {self.phi!r}")


def plain_lower_steps(solver: BilevelSolver, lower_g: Callable[[], tf.Tensor], steps: tf.Tensor,
                      lr: float, status: tf.Tensor, key: str = "inner_grad") -> tf.Tensor:
    """``steps`` plain projected gradient steps ``v <- P(v - lr grad_v g)`` on the solver's
    lower variables, in place (no optimizer); the monitor's status (``key`` flags a non-finite
    gradient). The caller saves and restores v around it when the iterate is auxiliary."""
    v, check = solver.lower.variables, solver.monitor.check

    def step(k, status):
        _, grads = autodiff.gradient(lower_g, v)
        status = check(status, key, grads, k)
        solver.lower.assign_sub([lr * gr for gr in grads])
        return status

    return solver._loop(steps, step, status)


class BOME(BilevelSolver):
    """BOME: T gradient steps give v_T, then u and v step along ``grad f + lambda grad q``.

    Example::

        solver = BOME(upper_loss, lower_loss, [u], model.trainable_variables, upper_optimizer=1e-2,
                      lower_optimizer=1e-2, lr_inner=0.1, eta=0.5)
        out = solver.step(batch, lower_steps=10)      # out["lamb"], out["q"]

    Args:
      lr_inner: the plain step size alpha of the T inner gradient steps on g.
      eta: the barrier coefficient (> 0) of phi.
      phi: ``"grad_norm"`` (phi = eta ||grad q||^2, default) or ``"value"`` (phi = eta q).
      Other arguments as for `Penalty`; the optimizers make the joint step on u and v.
    """

    checked_quantities = {"inner_grad": "the gradient of g w.r.t. the lower variables in the inner steps (v_T)",
                          "direction": "BOME's joint direction grad f + lambda grad q",
                          "lamb": "the multiplier lambda", "f": "f", "g": "g"}
    outputs = {"f": tf.float32, "g": tf.float32, "q": tf.float32, "lamb": tf.float32, "status": tf.int32}

    def __init__(self, upper_loss: Loss, lower_loss: Loss, upper_vars: VariableSpec,
                 lower_vars: VariableSpec, *, upper_optimizer: OptimizerSpec = 1e-3,
                 lower_optimizer: OptimizerSpec = 1e-3, lr_inner: float = 1e-2, eta: float = 0.5,
                 phi: str = "grad_norm", upper_bounds: Bounds = None, lower_bounds: Bounds = None,
                 lower_initializer: Callable[[], None] | None = None,
                 lower_step_batch: Callable[[Any], Any] | None = None,
                 jit_compile: bool = False, check_finite: bool = True):
        config = BOMEConfig(lr_inner=lr_inner, eta=eta, phi=phi)
        problem = BilevelProblem(upper_loss, lower_loss, upper_vars, lower_vars, upper_bounds,
                                 lower_bounds, lower_initializer, lower_step_batch)
        super().__init__(problem, upper_optimizer=upper_optimizer, lower_optimizer=lower_optimizer,
                         jit_compile=jit_compile, check_finite=check_finite)
        self.lr_inner, self.eta, self.phi = float(config.lr_inner), float(config.eta), config.phi
        self._untracked.direction_steps = 1
        self._compiled_direction = tf.function(self._direction_graph, autograph=False)

    @classmethod
    def from_problem(cls, problem: BilevelProblem, config: BOMEConfig | None = None, **options: Any) -> "BOME":
        """BOME on ``problem`` with ``config`` (default `BOMEConfig()`); options as
        `Penalty.from_problem`."""
        config = BOMEConfig() if config is None else config
        options.setdefault("upper_optimizer", config.lr_u)
        options.setdefault("lower_optimizer", config.lr_v)
        return cls(**problem_arguments(problem), lr_inner=config.lr_inner, eta=config.eta, phi=config.phi,
                   **options)

    def _counts(self, lower_steps: int) -> tuple[int]:
        """T inner steps (>= 1); remembered as `upper_direction`'s default."""
        count = as_count(lower_steps, "lower_steps", minimum=1)
        self._untracked.direction_steps = count
        return (count,)

    def cost(self, lower_steps: int) -> dict[str, int]:
        """`BilevelSolver.cost`: T inner gradients, g_u at v_T, f and g at (u, v)."""
        t = as_count(lower_steps, "lower_steps", minimum=1)   # not _counts: it sets direction_steps
        return self._passes(gradients=t + 3, hvps=0)

    @property
    def direction_steps(self) -> int:
        """The T `upper_direction` uses by default: that of the last `step` (1 before any);
        settable (e.g. for `penalty_tf.diagnostics.check_hypergradient`)."""
        return self._untracked.direction_steps

    @direction_steps.setter
    def direction_steps(self, value: int) -> None:
        self._untracked.direction_steps = as_count(value, "direction_steps", minimum=1)

    def upper_direction(self, batch: Any = None, lower_steps: int | None = None) -> list[tf.Tensor]:
        """``d_u = grad_u f + lambda (grad_u g(u, v) - grad_u g(u, v_T))``, the u-part of the
        direction the next step follows from the current (u, v): v_T is recomputed by
        ``lower_steps`` inner steps (default `direction_steps`) and v is left unchanged."""
        steps = self.direction_steps if lower_steps is None else as_count(lower_steps, "lower_steps", minimum=1)
        return self._compiled_direction(batch, tf.constant(steps, tf.int32))

    def _direction_graph(self, batch: Any, steps: tf.Tensor) -> list[tf.Tensor]:
        f_fn, g_fn = self._bind(batch)
        _, lower_g = self._bind_lower_steps(batch, (f_fn, g_fn))
        d, _ = self._direction(f_fn, g_fn, lower_g, steps, self.monitor.initial())
        return d[:len(self.upper.variables)]

    def _direction(self, f_fn, g_fn, lower_g, steps, status):
        """Steps 1-4 of the module docstring at the current (u, v), which are left as they
        were; ``(d over u + v, {"f", "g", "q", "lamb", "status"})``."""
        u, v = self.upper.variables, self.lower.variables
        saved = [x.read_value() for x in v]
        status = plain_lower_steps(self, lower_g, steps, self.lr_inner, status)
        g_inner, g_u_inner = autodiff.gradient(g_fn, u)          # at v_T
        for x, value in zip(v, saved):
            x.assign(value)
        f, grad_f = autodiff.gradient(f_fn, u + v)
        g, grad_g = autodiff.gradient(g_fn, u + v)
        n = len(u)
        grad_q = [a - b for a, b in zip(grad_g[:n], g_u_inner)] + grad_g[n:]
        norm_q = autodiff.squared_norm(grad_q)
        q = g - g_inner
        phi = self.eta * (norm_q if self.phi == "grad_norm" else q)
        lamb = tf.math.divide_no_nan(tf.nn.relu(phi - autodiff.dot(grad_f, grad_q)), norm_q)
        status = self.monitor.check(status, "lamb", [lamb])
        d = [a + tf.cast(lamb, a.dtype) * b for a, b in zip(grad_f, grad_q)]
        return d, {"f": f, "g": g, "q": q, "lamb": lamb, "status": status}

    # -- the compiled iteration ---------------------------------------------------------
    def _iteration(self, batch: Any, lower_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        f_fn, g_fn = self._bind(batch)
        _, lower_g = self._bind_lower_steps(batch, (f_fn, g_fn))
        check = self.monitor.check
        d, out = self._direction(f_fn, g_fn, lower_g, lower_steps, self.monitor.initial())
        status = check(out["status"], "direction", d)
        status = check(status, "f", [out["f"]])
        status = check(status, "g", [out["g"]])
        n = len(self.upper.variables)
        self.upper.apply(d[:n])
        self.lower.apply(d[n:])
        return dict(out, status=status)
