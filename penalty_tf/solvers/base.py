"""What every bilevel solver shares: the compiled step, counters, state and checkpoints.

A bilevel problem is ``min_u f(u, v*(u))`` subject to ``v*(u) = argmin_v g(u, v)``, given
as a `penalty_tf.problem.BilevelProblem`: two callables ``upper_loss(batch) -> f`` and
``lower_loss(batch) -> g`` closing over Keras models / `tf.Variable`s, plus the upper
variables u and lower variables v. Variables may be given as a single variable, a list of
variables (one group) or a list of lists (several groups, each with its own optimizer and
learning rate: the original's "multivar" solvers used by few-shot learning).

A solver's `step(batch, lower_steps=T)` is one upper-level iteration and runs as a single
`tf.function` graph call (optionally XLA-compiled with ``jit_compile=True``). The number
of lower steps is passed as a tensor, so calling with another T does not retrace.

A solver is trackable (as a `tf.Module` is): u, v, every optimizer's moments and step
counters, the solver's schedule variables and its ``iteration`` / ``epoch`` counters (int64
variables) are saved by ``tf.train.Checkpoint(solver=solver, model=model)``.
"""

from __future__ import annotations

import types
import warnings
from typing import Any, Callable, Mapping, Sequence

import tensorflow as tf

from penalty_tf import autodiff
from penalty_tf.problem import BilevelProblem, OptimizerSpec
from penalty_tf.solvers.monitor import FiniteMonitor, NonFiniteError
from penalty_tf.solvers.variables import Level, as_tf_variable, restore, shared_variables, snapshot


class BilevelSolver(tf.__internal__.tracking.AutoTrackable):
    """Base class: owns the levels, the compiled step, the counters and the NaN check.

    A subclass is built from a `BilevelProblem` (``super().__init__(problem, ...)`` creates
    ``self.upper`` and ``self.lower``), then creates its own state, and implements
    ``_iteration(batch, lower_steps) -> dict`` in TensorFlow ops (traced once into a
    graph), using ``self.monitor.check(status, key, tensors)`` to flag non-finite values.
    The dict must contain the int32 ``status`` of the monitor.
    """

    #: Key -> description of the quantities a subclass checks for finiteness (the
    #: description is what `NonFiniteError` prints).
    checked_quantities: Mapping[str, str] = {}
    #: The scalars `step` returns, with their dtypes.
    outputs: Mapping[str, tf.DType] = {"f": tf.float32, "g": tf.float32, "status": tf.int32}
    #: The outputs that are schedule state, not measurements (epoch logs keep the last value).
    state_outputs: Sequence[str] = ()
    #: The losses whose gradients u's direction is made of (named when none reaches u).
    upper_direction_of: str = "f or g"
    #: True when u's direction ignores v's dependence on u (GD): a u that f does not use is
    #: then a warning, not an error (the method's known limit, not a broken problem).
    upper_direction_is_partial: bool = False

    def __init__(self, problem: BilevelProblem, *, upper_optimizer: OptimizerSpec | None,
                 lower_optimizer: OptimizerSpec | None, jit_compile: bool = False,
                 check_finite: bool = True):
        self.problem = problem
        self.upper = Level(problem.upper_vars, upper_optimizer, problem.upper_bounds, "upper_vars")
        self.lower = Level(problem.lower_vars, lower_optimizer, problem.lower_bounds, "lower_vars")
        shared = shared_variables(self.upper.variables, self.lower.variables)
        if shared:
            raise ValueError(f"these variables are in both upper_vars and lower_vars: {shared[:5]}; each "
                             "variable belongs to one level (u or v)")
        # Plain Python state in a non-trackable holder (trackable attributes would turn these
        # lists and dicts into tracked containers that a checkpoint would try to save).
        self._untracked = types.SimpleNamespace(lower_init=snapshot(self.lower.variables), constants={})
        self.upper_loss = scalar_loss(problem.upper_loss, "upper_loss (f)")
        self.lower_loss = scalar_loss(problem.lower_loss, "lower_loss (g)")
        self.lower_step_batch = problem.lower_step_batch
        self.jit_compile = jit_compile
        self.check_finite = check_finite
        self.monitor = FiniteMonitor(self.checked_quantities, check_finite)
        self.iteration_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        self.epoch_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.stop_training = False
        self.strategy = distribution_strategy(self.upper.variables + self.lower.variables)
        self._compiled = tf.function(self._counted_iteration, jit_compile=jit_compile, autograph=False)
        self._compiled_many = tf.function(self._many, jit_compile=jit_compile, autograph=False)
        # Not XLA-compiled itself (reading an iterator is not an XLA op); the iteration it
        # calls is `_compiled`, compiled when the solver is.
        self._compiled_from = tf.function(self._many_from, autograph=False)

    @classmethod
    def from_problem(cls, problem: BilevelProblem, config: Any = None, **options: Any) -> "BilevelSolver":
        """The solver on ``problem`` with the settings of ``config`` (the solver's config
        dataclass, e.g. `PenaltyConfig`; None: its defaults). ``options``: ``jit_compile``,
        ``check_finite`` and optimizers that replace the config's learning rates
        (``upper_optimizer=``, ``lower_optimizer=``, ...)."""
        raise NotImplementedError

    # -- counters ---------------------------------------------------------------------
    @property
    def iteration(self) -> int:
        """Upper-level iterations done (an int64 variable, saved with the solver)."""
        return int(self.iteration_counter.numpy())

    @iteration.setter
    def iteration(self, value: int) -> None:
        self.iteration_counter.assign(int(value))

    @property
    def epoch(self) -> int:
        """The current epoch of `run` (an int64 variable, saved with the solver)."""
        return int(self.epoch_counter.numpy())

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.epoch_counter.assign(int(value))

    # -- public API -------------------------------------------------------------------
    def step(self, batch: Any = None, lower_steps: int = 1, **counts: int) -> dict[str, tf.Tensor]:
        """One upper-level iteration (one graph call); returns a dict of scalar tensors.

        ``lower_steps`` = T updates of v, then one update of u, each on the solver's
        objective (see the subclass), all evaluated on ``batch``, which is passed to
        ``upper_loss(batch)`` and ``lower_loss(batch)`` unchanged (any nest of tensors,
        e.g. an element of a `tf.data.Dataset`; None for losses that need no batch).
        Batches of equal shapes and any T reuse one traced graph.

        Example::

            out = solver.step((x, y, x_val, y_val), lower_steps=20)
            float(out["f"]), float(out["g"])

        Raises `NonFiniteError` naming the iteration, the lower step and the quantity if a
        loss or gradient became NaN or infinite (unless ``check_finite=False``).
        """
        out = self._compiled(batch, *self._count_tensors(lower_steps, **counts))
        self._raise_if_failed(out)
        return out

    def steps(self, batch: Any = None, iterations: int = 1, lower_steps: int = 1,
              **counts: int) -> dict[str, tf.Tensor]:
        """``iterations`` upper-level iterations on the same batch in ONE graph call.

        For full-batch problems (synthetic, poisoning) this removes the per-call host
        overhead; the result is identical to calling `step` ``iterations`` times. Returns
        the last iteration's outputs. Stops early and raises `NonFiniteError` on NaN/Inf.
        """
        if int(iterations) < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        out = self._compiled_many(batch, tf.constant(int(iterations), tf.int32),
                                  *self._count_tensors(lower_steps, **counts))
        self._raise_if_failed(out)
        return out

    def steps_from(self, iterator: Any, iterations: int = 1, lower_steps: int = 1,
                   **counts: int) -> dict[str, tf.Tensor]:
        """``iterations`` upper-level iterations in ONE graph call, iteration i on the next
        batch of ``iterator`` (``iter(dataset)`` of a `tf.data.Dataset`, or of a distributed
        dataset): Keras' ``steps_per_execution`` for streamed data, used by
        ``run(..., steps_per_execution=N)``.

        The iterates equal those of ``step(next(iterator), lower_steps)`` called
        ``iterations`` times (the same graph of one iteration runs inside a while loop;
        tests/test_steps_per_execution.py), without a host round trip per iteration.
        Returns every iteration's outputs stacked (key -> tensor of shape [n]) with
        ``done`` = n, the number of iterations run; fewer than ``iterations`` only when
        the iterator ran out (then ``done`` tells how many) or an iteration failed, which
        raises `NonFiniteError` as `step` does (the iterations before it are kept).
        """
        n = as_count(iterations, "iterations", minimum=1)
        out = self._compiled_from(iterator, tf.constant(n, tf.int32), *self._count_tensors(lower_steps, **counts))
        failed = int(out["failed_iteration"])
        if failed >= 0:
            self._raise_if_failed({"status": out["status"][failed]})
        return out

    def trace(self, batch_spec: Any, lower_steps: int = 1, **counts: int) -> None:
        """Trace `step` once for every batch matching ``batch_spec`` (a nest of
        `tf.TensorSpec`, e.g. ``dataset.element_spec``; None dimensions match any size).

        Batches from a `tf.data.Dataset` iterator have the same shapes except possibly the
        last, smaller one, which would retrace `step`; after ``trace(dataset.element_spec)``
        no batch of that dataset retraces. `run` calls it for you.
        """
        count_specs = [tf.TensorSpec([], tf.int32) for _ in self._counts(lower_steps, **counts)]
        self._compiled.get_concrete_function(batch_spec, *count_specs)

    def run(self, dataset: Any, epochs: int = 1, lower_steps: int = 1,
            callbacks: Sequence[Any] = (), **options: Any) -> Any:
        """Keras-style training loop: ``step(batch, lower_steps)`` for every batch of
        ``dataset``, epochs ``initial_epoch … epochs - 1``, with callbacks.

        See `penalty_tf.training.run` for the arguments (``initial_epoch``, ``verbose``,
        ``batch_size`` for arrays, ``validation_data`` and ``metrics`` ...); returns a
        `keras.callbacks.History` whose ``history`` holds the per-epoch logs.

        Example::

            history = solver.run(train_ds, epochs=5, lower_steps=10,
                                 callbacks=[ptf.callbacks.TensorBoard("logs")])
        """
        from penalty_tf.training import run
        return run(self, dataset, epochs, lower_steps, callbacks, **options)

    def refit(self, dataset: Any, epochs: int = 1, optimizer: Any = 1e-3, **options: Any) -> dict[str, list[float]]:
        """Train v alone on g with u fixed, from re-initialised v: `penalty_tf.training.refit`."""
        from penalty_tf.training import refit
        return refit(self, dataset, epochs, optimizer, **options)

    def get_weights(self) -> list[Any]:
        """The values of u and v (`variables`) as NumPy arrays (Keras' ``Model.get_weights``;
        ``EarlyStopping(restore_best_weights=True)`` uses it)."""
        return [v.numpy() for v in self.variables()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Assign values from `get_weights` to u and v."""
        variables = self.variables()
        if len(weights) != len(variables):
            raise ValueError(f"set_weights: {len(weights)} arrays for {len(variables)} variables")
        for var, value in zip(variables, weights):
            var.assign(value)

    def cost(self, lower_steps: int, **counts: int) -> dict[str, int]:
        """The passes one upper iteration ``step(batch, lower_steps, **counts)`` makes.

        Returns ``{"gradients": n_g, "hvps": n_h, "forwards": n_f}``, counted in these units
        (every derivative is taken through `penalty_tf.autodiff`):

        * ``"gradients"``: one evaluation of f or of g (a forward pass) that is then
          differentiated, i.e. one forward + backward of ONE loss w.r.t. some variables.
          Gradients w.r.t. several variables taken from one tape and one forward pass
          count once per loss differentiated: `autodiff.gradient` is 1, and the nested-tape
          pass `autodiff.gradient_plus_hvp` is 1 for g (the inner tape's ``G = grad_v g``)
          plus 1 for f when f is given (its backward runs inside the outer pass).
        * ``"hvps"``: one extra reverse pass through a gradient (a Hessian- or mixed-vector
          product ``H_{wrt,v} w``): the outer tape of `autodiff.gradient_plus_hvp`, hence
          1 for each call of it and of `autodiff.hvp`, `mixed_vp`, `hvp_and_mixed_vp` (whose
          own G is one more ``"gradients"``: an HVP call costs 1 gradient + 1 hvp).
        * ``"forwards"``: an evaluation of f or g that is not differentiated (e.g. the loss
          values a solver reports after its u-step). Not part of the arithmetic
          ``gradients + hvps`` the speed benchmark divides by.

        Optimizer updates, projections and vector arithmetic are not counted. The counts
        are functions of T = ``lower_steps`` and of the solver's other counts (e.g. K =
        ``linear_steps``, defaulting as in `step`), with the defaults of `step`; a solver's
        module docstring states them ("Cost per iteration: ..."), and
        tests/test_solver_costs.py checks them against the passes an eager iteration makes.

        Example::

            solver.cost(20)                    # Penalty: {"gradients": 44, "hvps": 22, ...}
            solver.cost(20, linear_steps=10)   # ApproxGrad / AID: K = 10
        """
        raise NotImplementedError(f"{type(self).__name__} does not state its cost per iteration")

    @staticmethod
    def _passes(gradients: int, hvps: int, forwards: int = 0) -> dict[str, int]:
        """The dict `cost` returns."""
        return {"gradients": int(gradients), "hvps": int(hvps), "forwards": int(forwards)}

    def upper_direction(self, batch: Any = None) -> list[tf.Tensor]:
        """The direction u's next step follows at the current point, before the optimizer
        (one tensor per upper variable): the solver's estimate of the hypergradient, which
        `penalty_tf.diagnostics.check_hypergradient` compares with the exact one."""
        raise NotImplementedError(f"{type(self).__name__} has no u-direction at a fixed point "
                                  "(its direction depends on the lower steps of the iteration)")

    def state_variables(self) -> list[tf.Variable]:
        """Every `tf.Variable` of the solver's own state, in a fixed order: each optimizer's
        variables (step counter, learning rate, moments), the auxiliary variables of a
        solver (ApproxGrad's p) and the solver's schedule variables (Penalty's rho, lambda,
        eps, nu; RMD's step sizes). Not included: the problem's u and v (`variables`) and
        the counters.

        Saving these together with `variables` (see `checkpoint`) and restoring them
        continues a run exactly.
        """
        state = []
        for level in self.levels():
            for opt in level.optimizers:
                state += [as_tf_variable(v) for v in opt.variables]
        for level in self.levels()[2:]:
            state += level.variables
        return state + list(self._schedule_variables())

    def _schedule_variables(self) -> list[tf.Variable]:
        """The variables of a subclass's schedule (Penalty: rho, lambda, eps, nu)."""
        return []

    def variables(self) -> list[tf.Variable]:
        """The problem's variables: u (every upper group) followed by v."""
        return self.upper.variables + self.lower.variables

    def checkpoint(self, **extra: Any) -> tf.train.Checkpoint:
        """A `tf.train.Checkpoint` of u, v, `state_variables`, the iteration and epoch
        counters, plus ``extra`` trackables (e.g. ``model=model`` for its non-trainable
        variables). ``tf.train.Checkpoint(solver=solver)`` saves the same state.

        Example::

            manager = tf.train.CheckpointManager(solver.checkpoint(), "ckpt", max_to_keep=2)
        """
        return tf.train.Checkpoint(upper=list(self.upper.variables), lower=list(self.lower.variables),
                                   state=self.state_variables(), iteration=self.iteration_counter,
                                   epoch=self.epoch_counter, **extra)

    def sync_counters_to_checkpoint(self) -> None:
        """Kept for code written against 0.1: the counters are variables now; nothing to do."""

    def sync_counters_from_checkpoint(self) -> None:
        """Kept for code written against 0.1: the counters are variables now; nothing to do."""

    def learning_rates(self) -> dict[str, list[float]]:
        """Current learning rates per level: ``{"upper": [...], "lower": [...]}`` (one per
        group; further levels, e.g. ApproxGrad's ``linear``, under their own names)."""
        return {name: level.learning_rates() for name, level in self.named_levels().items()}

    def _counts(self, lower_steps: int) -> tuple[int, ...]:
        """The loop counts passed to `_iteration` (subclasses add their own)."""
        return (as_count(lower_steps, "lower_steps", minimum=1),)

    def _count_tensors(self, lower_steps: int, **counts: int) -> tuple[tf.Tensor, ...]:
        values = self._counts(lower_steps, **counts)
        cache = self._untracked.constants   # reuse the int32 tensors: creating one costs a host op
        if values not in cache:
            cache[values] = tuple(tf.constant(n, tf.int32) for n in values)
        return cache[values]

    def _raise_if_failed(self, out: Mapping[str, tf.Tensor]) -> None:
        if not self.check_finite:
            return
        status = int(out["status"])
        if status != 0:
            raise NonFiniteError(
                f"{type(self).__name__}: {self.monitor.describe(status)} of upper iteration "
                f"{self.iteration} (counted from 0). The solver stopped; the variables now hold "
                "non-finite values, so restart from the last checkpoint, e.g. with smaller "
                "learning rates.")

    def _typed_iteration(self, batch: Any, *counts: tf.Tensor) -> dict[str, tf.Tensor]:
        """`_iteration` with its outputs checked against and cast to `outputs`."""
        with autodiff.record_connections() as connected:
            out = self._iteration(batch, *counts)
        self._check_connections(connected)
        if set(out) != set(self.outputs):
            raise TypeError(f"{type(self).__name__}._iteration returned {sorted(out)}, "
                            f"declared outputs are {sorted(self.outputs)}")
        return {k: tf.cast(v, self.outputs[k]) for k, v in out.items()}

    def _check_connections(self, record: autodiff.ConnectionRecord) -> None:
        """Refuse a level that no gradient reaches (for v: no gradient of g) and warn about
        single variables that get none (they would never move), from what tracing the step
        recorded."""
        for level, loss, reached in ((self.upper, self.upper_direction_of, record.reached),
                                     (self.lower, "g", record.reached_by_g)):
            cut = [v.name for v in level.variables if v.ref() not in reached]
            if not cut:
                continue
            message = (f"{type(self).__name__}: no gradient of {loss} reaches the {level.what} {cut[:5]} "
                       f"({len(cut)} of {len(level.variables)}), so they would never move")
            if len(cut) == len(level.variables) and not (level is self.upper and self.upper_direction_is_partial):
                raise ValueError(message + "; the losses must use them (e.g. model(x) inside the loss, with "
                                           "the variables of that model), and not through .numpy() or a "
                                           "tf.stop_gradient")
            warnings.warn(message + "; leave them out of the level or make the losses use them", stacklevel=2)

    def _counted_iteration(self, batch: Any, *counts: tf.Tensor) -> dict[str, tf.Tensor]:
        """`_typed_iteration`, then ``iteration += 1`` unless it failed (inside the graph)."""
        out = self._typed_iteration(batch, *counts)
        self.iteration_counter.assign_add(tf.cast(tf.equal(out["status"], 0), tf.int64))
        return out

    def _many(self, batch: Any, iterations: tf.Tensor, *counts: tf.Tensor) -> dict[str, tf.Tensor]:
        """``iterations`` calls of `_iteration` in one while loop; stops at the first failure.

        The loop starts from zeros shaped like `outputs` so that `_iteration` is traced
        (and compiled) once.
        """
        def cond(i, out, failed_at):
            return tf.logical_and(i < iterations, failed_at < 0)

        def body(i, out, failed_at):
            new = self._counted_iteration(batch, *counts)
            failed_at = tf.where(new["status"] != 0, i, failed_at)
            return i + 1, new, failed_at

        start = {k: tf.zeros([], dtype) for k, dtype in self.outputs.items()}
        _, out, failed = tf.while_loop(cond, body, (tf.constant(0, tf.int32), start, tf.constant(-1)))
        return dict(out, failed_iteration=failed)

    def _many_from(self, iterator: Any, iterations: tf.Tensor, *counts: tf.Tensor) -> dict[str, tf.Tensor]:
        """Up to ``iterations`` calls of the compiled iteration on successive batches of
        ``iterator`` in one while loop; stops at the first failure or when the iterator is
        exhausted. Every iteration's outputs are written to a TensorArray."""
        keys = list(self.outputs)
        arrays = [tf.TensorArray(self.outputs[k], size=iterations, element_shape=[]) for k in keys]

        def cond(i, failed_at, more, *_):
            return tf.logical_and(tf.logical_and(i < iterations, failed_at < 0), more)

        def body(i, failed_at, more, *arrays):
            batch = iterator.get_next_as_optional()
            def iterate():
                new = self._compiled(batch.get_value(), *counts)
                return [tf.where(new["status"] != 0, i, failed_at)] + [new[k] for k in keys]
            def exhausted():
                return [failed_at] + [tf.zeros([], self.outputs[k]) for k in keys]
            has = batch.has_value()
            failed_at, *values = tf.cond(has, iterate, exhausted)
            arrays = [a.write(i, v) for a, v in zip(arrays, values)]
            return (i + tf.cast(has, tf.int32), failed_at, has, *arrays)

        done, failed, _, *arrays = tf.while_loop(
            cond, body, (tf.constant(0, tf.int32), tf.constant(-1), tf.constant(True), *arrays))
        stacked = {k: a.stack()[:done] for k, a in zip(keys, arrays)}
        return dict(stacked, done=done, failed_iteration=failed)

    def named_levels(self) -> dict[str, Level]:
        """Every `Level` whose optimizers the solver steps, by name (u, v, and ApproxGrad's p)."""
        return {"upper": self.upper, "lower": self.lower}

    def levels(self) -> list[Level]:
        """`named_levels` as a list: upper, lower, then any further level."""
        return list(self.named_levels().values())

    def set_learning_rates(self, upper: float | Sequence[float] | None = None,
                           lower: float | Sequence[float] | None = None) -> None:
        """Assign learning rates (e.g. a driver's halving schedule); None leaves one as is."""
        for level, value in ((self.upper, upper), (self.lower, lower)):
            if value is not None:
                level.set_learning_rates(value)

    def scale_learning_rates(self, factor: float, levels: Sequence[str] = ("upper", "lower")) -> None:
        """Multiply the learning rates of the named levels by ``factor`` (e.g. 0.5: halve)."""
        named = self.named_levels()
        for name in levels:
            named[name].scale_learning_rates(tf.constant(factor, tf.float32))

    def reset(self) -> None:
        """Solver state back to its start: learning rates (and, in subclasses, the penalty
        state or the linear-system vector). Optimizer moments are kept, as in the original;
        see `reset_optimizers` and `restart`."""
        for level in self.levels():
            level.reset_learning_rates()

    def reset_optimizers(self) -> None:
        """Zero every optimizer's moments and step counter (learning rates unchanged)."""
        for level in self.levels():
            level.reset_optimizer_state()

    def reset_lower_optimizers(self) -> None:
        """Zero the lower level's optimizer moments and step counters only (e.g. between
        the task batches of meta-learning); u's optimizer and the learning rates are kept."""
        self.lower.reset_optimizer_state()

    def restart(self) -> None:
        """`reset` and `reset_optimizers`: a fresh solver on the current variable values."""
        self.reset()
        self.reset_optimizers()

    def reset_lower(self) -> None:
        """Re-initialise v (the original's ``reset_lower_level``).

        Calls the problem's ``lower_initializer`` if it has one, else restores the values v
        had when the solver was built.
        """
        if self.problem.lower_initializer is not None:
            self.problem.lower_initializer()
        else:
            restore(self.lower.variables, self._untracked.lower_init)

    def tracing_count(self) -> int:
        """How often the compiled functions have been traced (1 after the first `step`)."""
        return (self._compiled.experimental_get_tracing_count()
                + self._compiled_many.experimental_get_tracing_count())

    # -- helpers for subclasses -------------------------------------------------------
    def _bind(self, batch: Any) -> tuple[Callable[[], tf.Tensor], Callable[[], tf.Tensor]]:
        """Zero-argument closures ``f()`` and ``g()`` on the given batch (under a
        `tf.distribute` strategy: `autodiff.DistributedLoss` objects, means over replicas)."""
        def lower_loss(b):
            return autodiff.note_lower_value(self.lower_loss(b))   # for the gradient-path check

        if self.strategy is not None:
            return (autodiff.DistributedLoss(self.upper_loss, batch, self.strategy),
                    autodiff.DistributedLoss(lower_loss, batch, self.strategy))
        return (lambda: self.upper_loss(batch)), (lambda: lower_loss(batch))

    def _bind_lower_steps(self, batch: Any, bound: tuple[Callable, Callable]) -> tuple[Callable, Callable]:
        """f and g for the steps that differentiate w.r.t. v only (lower steps, and
        ApproxGrad's linear-system steps): on ``lower_step_batch(batch)``, computed once per
        iteration, when the problem has that hook; else ``bound`` (f and g on ``batch``)."""
        if self.lower_step_batch is None:
            return bound
        if self.strategy is not None:
            raise NotImplementedError("lower_step_batch is not supported under a tf.distribute strategy")
        return self._bind(self.lower_step_batch(batch))

    def _lower_gradient_steps(self, lower_g: Callable[[], tf.Tensor], steps: tf.Tensor) -> tf.Tensor:
        """``steps`` optimizer steps ``v <- opt_v(v, grad_v g)`` (GD, ApproxGrad, AID); the
        monitor's status."""
        v, check = self.lower.variables, self.monitor.check

        def lower_step(k, status):
            _, grads = autodiff.gradient(lower_g, v)
            status = check(status, "lower_grad", grads, k)
            self.lower.apply(grads)
            return status

        return self._loop(steps, lower_step, self.monitor.initial())

    @staticmethod
    def _loop(n: tf.Tensor, body: Callable[[tf.Tensor, Any], Any], state: Any) -> Any:
        """Run ``state = body(k, state)`` for k = 0 … n-1 as one `tf.while_loop`."""
        def cond(k, *_):
            return k < n

        def wrapped(k, *state_):
            new = body(k, state_[0] if len(state_) == 1 else state_)
            new = new if isinstance(new, tuple) else (new,)
            return (k + 1, *new)

        init = state if isinstance(state, tuple) else (state,)
        result = tf.while_loop(cond, wrapped, (tf.constant(0, tf.int32), *init))
        result = result[1:]
        return result[0] if len(result) == 1 else tuple(result)

    def _iteration(self, batch: Any, lower_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        raise NotImplementedError


def scalar_loss(loss: Callable[[Any], Any], name: str) -> Callable[[Any], Any]:
    """``loss`` with a check, made when the step is traced, that it returns a scalar (a
    per-example vector would otherwise be differentiated as its sum)."""
    if not callable(loss):
        raise TypeError(f"{name} must be a callable batch -> scalar tensor, got {type(loss).__name__}")

    def checked(batch: Any) -> Any:
        value = tf.convert_to_tensor(loss(batch))
        if value.shape.rank != 0:
            raise ValueError(f"{name} returned a tensor of shape {value.shape}; it must return a scalar "
                             "(reduce a per-example loss, e.g. with tf.reduce_mean)")
        return value

    return checked


def problem_arguments(problem: BilevelProblem) -> dict[str, Any]:
    """``problem``'s fields as the keyword arguments every solver's constructor takes."""
    return {f: getattr(problem, f) for f in ("upper_loss", "lower_loss", "upper_vars", "lower_vars",
                                             "upper_bounds", "lower_bounds", "lower_initializer",
                                             "lower_step_batch")}


def as_count(value: Any, name: str, minimum: int = 0) -> int:
    """``value`` as a loop count: an integer (or integral float/array) >= ``minimum``."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if count != value:
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if count < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return count


def distribution_strategy(variables: Sequence[tf.Variable]) -> tf.distribute.Strategy | None:
    """The `tf.distribute` strategy whose scope the solver is built in, or None.

    Under a strategy (other than the default one) every variable of the problem must have
    been created in its scope (``with strategy.scope(): model = ...``), so that it is
    mirrored across replicas.
    """
    if not tf.distribute.has_strategy():
        return None
    strategy = tf.distribute.get_strategy()
    plain = [v.name for v in variables if not isinstance(v, tf.distribute.DistributedValues)]
    if plain:
        raise ValueError(f"the solver is built under {type(strategy).__name__}.scope() but these "
                         f"variables were created outside it: {plain[:5]}; create the model and "
                         "every variable of the problem under the same strategy.scope()")
    return strategy
