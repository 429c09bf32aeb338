"""What every bilevel solver shares: variable groups, optimizers, projections, compilation.

A bilevel problem is ``min_u f(u, v*(u))`` subject to ``v*(u) = argmin_v g(u, v)``,
given as two zero-argument-after-batch callables ``upper_loss(batch) -> f`` and
``lower_loss(batch) -> g`` closing over Keras models / `tf.Variable`s, plus the upper
variables u and lower variables v. Variables may be given as a single variable, a list
of variables (one group) or a list of lists (several groups, each with its own optimizer
and learning rate: the original's "multivar" solvers used by few-shot learning).

A solver's `step(batch, lower_steps=T)` is one upper-level iteration and runs as a single
`tf.function` graph call (optionally XLA-compiled with ``jit_compile=True``). The number
of lower steps is passed as a tensor, so calling with another T does not retrace.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from penalty_tf import autodiff

VariableSpec = Union[tf.Variable, Sequence[tf.Variable], Sequence[Sequence[tf.Variable]]]
OptimizerSpec = Union[float, keras.optimizers.Optimizer, Sequence[Union[float, keras.optimizers.Optimizer]]]
Bounds = Union[None, tuple, Callable[[tf.Tensor], tf.Tensor]]
Loss = Callable[[Any], tf.Tensor]

#: Adam epsilon of TF1's ``tf.train.AdamOptimizer``, which the original code used (Keras 3
#: defaults to 1e-7). Keras 3 Adam otherwise performs exactly TF1's update
#: ``w <- w - lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(s) + eps)``.
TF1_ADAM_EPSILON = 1e-8

#: A status code packs (quantity index, lower step) as ``index * STATUS_STRIDE + step``.
STATUS_STRIDE = 1_000_000
#: The "lower step" of quantities computed after the lower loop (upper step, final f, g).
AFTER_LOWER_LOOP = STATUS_STRIDE - 1


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN or infinite during a solver step.

    The message names the quantity, the lower step and the upper iteration. `run` stops on
    it (see `penalty_tf.callbacks.run`); with `step`, catch it and restore a checkpoint::

        try:
            solver.step(batch, lower_steps=10)
        except ptf.NonFiniteError as error:
            print(error); manager.checkpoint.restore(manager.latest_checkpoint)
    """


def tf1_adam(learning_rate: float) -> keras.optimizers.Adam:
    """Keras 3 Adam with TF1's defaults (beta1 0.9, beta2 0.999, epsilon 1e-8).

    ``m <- b1 m + (1-b1) d``, ``s <- b2 s + (1-b2) d^2``,
    ``w <- w - lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(s) + 1e-8)``. A float learning rate given
    to a solver becomes this optimizer. Example: ``Penalty(..., upper_optimizer=tf1_adam(3.0))``.
    """
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.9, beta_2=0.999,
                                 epsilon=TF1_ADAM_EPSILON)


def as_tf_variable(variable: tf.Variable | keras.Variable) -> tf.Variable:
    """The `tf.Variable` behind a Keras 3 variable (tapes watch only `tf.Variable`s; both
    objects share their storage, so updates of one are seen through the other)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    if not isinstance(variable, tf.Variable):
        raise TypeError(f"expected a tf.Variable or keras.Variable, got {type(variable).__name__}")
    return variable


def as_groups(variables: VariableSpec, what: str) -> list[list[tf.Variable]]:
    """Normalise a variable, a list of variables or a list of lists to a list of groups of
    `tf.Variable`s (Keras 3 variables are unwrapped)."""
    if isinstance(variables, (tf.Variable, keras.Variable)):
        return [[as_tf_variable(variables)]]
    variables = list(variables)
    if not variables:
        raise ValueError(f"{what}: no variables given")
    if all(isinstance(v, (list, tuple)) for v in variables):
        groups = [list(group) for group in variables]
    elif any(isinstance(v, (list, tuple)) for v in variables):
        raise ValueError(f"{what}: mix of variables and lists of variables; give one or the other")
    else:
        groups = [variables]
    for group in groups:
        if not group:
            raise ValueError(f"{what}: empty variable group")
    return [[as_tf_variable(v) for v in group] for group in groups]


def make_optimizers(spec: OptimizerSpec, n_groups: int, what: str) -> list[keras.optimizers.Optimizer]:
    """One optimizer per variable group from a learning rate, an optimizer, or a list of them.

    A float becomes TF1-style Adam (`tf1_adam`). A single optimizer instance serves one group
    only: Keras 3 optimizers refuse variables they were not built with.
    """
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec] * n_groups
    if len(items) != n_groups:
        raise ValueError(f"{what}: {len(items)} optimizers/learning rates for {n_groups} variable groups")
    optimizers = [tf1_adam(float(x)) if isinstance(x, (int, float, np.floating)) else x for x in items]
    if len({id(o) for o in optimizers}) != len(optimizers):
        raise ValueError(f"{what}: the same optimizer instance was given for several groups; "
                         "give one optimizer per group (or a learning rate)")
    for opt in optimizers:
        if not isinstance(opt, keras.optimizers.Optimizer):
            raise TypeError(f"{what}: expected a learning rate or a keras optimizer, got {opt!r}")
    return optimizers


def make_projection(bounds: Bounds) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """A projection from ``(low, high)`` box bounds (clipping) or a callable; None for none."""
    if bounds is None:
        return None
    if callable(bounds):
        return bounds
    low, high = bounds
    if not low < high:
        raise ValueError(f"empty box: low {low} >= high {high}")
    return lambda x: tf.clip_by_value(x, low, high)


def reset_optimizer_state(optimizer: keras.optimizers.Optimizer) -> None:
    """Zero the step counter and slot variables (moments) of a built optimizer; keep its lr."""
    for var in optimizer.variables:
        if var is not optimizer.learning_rate:
            var.assign(tf.zeros(var.shape, var.dtype))


class Level:
    """The variables of one level, grouped, each group with its optimizer, plus a projection.

    ``apply(grads)`` performs one optimizer step per group followed by the projection,
    which reproduces TF1's variable ``constraint`` semantics (the original's box clipping).
    """

    def __init__(self, variables: VariableSpec, optimizers: OptimizerSpec | None,
                 bounds: Bounds, what: str):
        self.groups = as_groups(variables, what)
        self.variables = [v for group in self.groups for v in group]
        self.projection = make_projection(bounds)
        self.optimizers = (make_optimizers(optimizers, len(self.groups), what)
                           if optimizers is not None else [])
        for opt, group in zip(self.optimizers, self.groups):
            opt.build(group)  # eagerly: slot variables cannot be created inside tf.function
        self.initial_lrs = [float(opt.learning_rate.numpy()) for opt in self.optimizers]

    def split(self, flat: Sequence[tf.Tensor]) -> list[list[tf.Tensor]]:
        """Split a flat list shaped like `variables` into per-group lists."""
        out, start = [], 0
        for group in self.groups:
            out.append(list(flat[start:start + len(group)]))
            start += len(group)
        return out

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        """One optimizer step on every group with ``grads`` (flat, like `variables`), then project."""
        for opt, group, group_grads in zip(self.optimizers, self.groups, self.split(grads)):
            opt.apply(group_grads, group)
        self.project()

    def assign_sub(self, deltas: Sequence[tf.Tensor]) -> None:
        """Plain update ``w <- w - delta`` (no optimizer), then project."""
        for var, delta in zip(self.variables, deltas):
            var.assign_sub(delta)
        self.project()

    def project(self) -> None:
        if self.projection is not None:
            for var in self.variables:
                var.assign(self.projection(var))

    def scale_learning_rates(self, factor: tf.Tensor) -> None:
        for opt in self.optimizers:
            opt.learning_rate.assign(opt.learning_rate * factor)

    def set_learning_rates(self, values: float | Sequence[float]) -> None:
        values = list(values) if isinstance(values, (list, tuple)) else [values] * len(self.optimizers)
        for opt, value in zip(self.optimizers, values):
            opt.learning_rate.assign(value)

    def learning_rates(self) -> list[float]:
        return [float(opt.learning_rate.numpy()) for opt in self.optimizers]

    def reset_optimizer_state(self) -> None:
        """Zero the moments and step counters of this level's optimizers (lrs unchanged)."""
        for opt in self.optimizers:
            reset_optimizer_state(opt)


class FiniteMonitor:
    """Tracks, inside a compiled step, the first quantity that stopped being finite.

    The status is an int32 scalar: 0 while everything is finite, otherwise
    ``(index of the quantity + 1) * STATUS_STRIDE + lower step`` of the first failure.
    """

    def __init__(self, names: Sequence[str], enabled: bool):
        self.names = list(names)
        self.enabled = enabled

    def initial(self) -> tf.Tensor:
        return tf.constant(0, tf.int32)

    def check(self, status: tf.Tensor, name: str, tensors: Sequence[tf.Tensor],
              lower_step: tf.Tensor | None = None) -> tf.Tensor:
        """Flag ``name`` if ``tensors`` are not all finite (``lower_step`` None: a quantity
        computed after the lower loop)."""
        if not self.enabled:
            return status
        step = AFTER_LOWER_LOOP if lower_step is None else tf.cast(lower_step, tf.int32)
        code = (self.names.index(name) + 1) * STATUS_STRIDE + step
        ok = autodiff.all_finite(tensors)
        return tf.where(tf.logical_or(status != 0, ok), status, code)

    def describe(self, status: int) -> str:
        """``"<quantity> ... lower step k"`` for a status code."""
        index, lower_step = divmod(int(status), STATUS_STRIDE)
        where = ("after the lower-level steps" if lower_step == AFTER_LOWER_LOOP
                 else f"at lower step {lower_step}")
        return f"{self.names[index - 1]} is not finite (NaN or Inf) {where}"


class BilevelSolver:
    """Base class: owns the compiled step, the iteration counter and the NaN check.

    Subclasses implement ``_iteration(batch, lower_steps) -> dict`` in TensorFlow ops (it
    is traced once into a graph) and may use ``self.monitor`` to flag non-finite values.
    The dict must contain the int32 ``status`` of the monitor.
    """

    #: Names of the quantities a subclass checks for finiteness (used in error messages).
    checked_quantities: Sequence[str] = ()
    #: The scalars `step` returns, with their dtypes.
    outputs: Mapping[str, tf.DType] = {"f": tf.float32, "g": tf.float32, "status": tf.int32}

    #: Set by subclasses before calling ``super().__init__``.
    upper: Level
    lower: Level

    def __init__(self, upper_loss: Loss, lower_loss: Loss, *,
                 lower_initializer: Callable[[], None] | None = None, jit_compile: bool = False,
                 check_finite: bool = True):
        self._lower_init_values = snapshot(self.lower.variables)
        self._lower_initializer = lower_initializer
        self.upper_loss = upper_loss
        self.lower_loss = lower_loss
        self.jit_compile = jit_compile
        self.check_finite = check_finite
        self.monitor = FiniteMonitor(self.checked_quantities, check_finite)
        self.iteration = 0
        self.epoch = 0
        self.stop_training = False
        self.strategy = distribution_strategy(self.upper.variables + self.lower.variables)
        self._compiled = tf.function(self._typed_iteration, jit_compile=jit_compile, autograph=False)
        self._compiled_many = tf.function(self._many, jit_compile=jit_compile, autograph=False)

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
        self._raise_if_failed(out, 0)
        self.iteration += 1
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
        self._raise_if_failed(out, int(out["failed_iteration"]))
        self.iteration += int(iterations)
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
            callbacks: Sequence[Any] = (), *, initial_epoch: int = 0,
            verbose: int = 1, on_nonfinite: str = "stop", **counts: int) -> Any:
        """Keras-style training loop: ``step(batch, lower_steps)`` for every batch of
        ``dataset``, epochs ``initial_epoch … epochs - 1``, with callbacks.

        See `penalty_tf.callbacks.run` for the arguments; returns a `keras.callbacks.History`
        whose ``history`` holds the per-epoch logs.

        Example::

            history = solver.run(train_ds, epochs=5, lower_steps=10,
                                 callbacks=[ptf.callbacks.TensorBoard("logs")])
        """
        from penalty_tf.callbacks import run
        return run(self, dataset, epochs, lower_steps, callbacks, initial_epoch=initial_epoch,
                   verbose=verbose, on_nonfinite=on_nonfinite, **counts)

    def state_variables(self) -> list[tf.Variable]:
        """Every `tf.Variable` of the solver's own state, in a fixed order: each optimizer's
        variables (step counter, learning rate, moments), the auxiliary variables of a
        solver (ApproxGrad's p) and the solver's schedule variables (Penalty's rho, lambda,
        eps, nu; RMD's step sizes). Not included: the problem's u and v (`variables`).

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
        variables). Before saving call `sync_counters_to_checkpoint` (done by
        `penalty_tf.callbacks.Checkpoint`).

        Example::

            manager = tf.train.CheckpointManager(solver.checkpoint(), "ckpt", max_to_keep=2)
        """
        return tf.train.Checkpoint(upper=list(self.upper.variables), lower=list(self.lower.variables),
                                   state=self.state_variables(), **self._counter_variables(), **extra)

    def _counter_variables(self) -> dict[str, tf.Variable]:
        """The int64 variables that carry `iteration` and `epoch` in checkpoints."""
        if "_counters" not in self.__dict__:
            self._counters = {
                "iteration": tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration"),
                "epoch": tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")}
        return self._counters

    def sync_counters_to_checkpoint(self) -> None:
        """Copy `iteration` and `epoch` into the variables `checkpoint` saves."""
        counters = self._counter_variables()
        counters["iteration"].assign(self.iteration)
        counters["epoch"].assign(self.epoch)

    def sync_counters_from_checkpoint(self) -> None:
        """Set `iteration` and `epoch` from the variables a restored checkpoint filled."""
        counters = self._counter_variables()
        self.iteration = int(counters["iteration"].numpy())
        self.epoch = int(counters["epoch"].numpy())

    def _counts(self, lower_steps: int) -> tuple[int, ...]:
        """The loop counts passed to `_iteration` (subclasses add their own)."""
        return (int(lower_steps),)

    def _count_tensors(self, lower_steps: int, **counts: int) -> tuple[tf.Tensor, ...]:
        if int(lower_steps) < 1:
            raise ValueError(f"lower_steps must be >= 1, got {lower_steps}")
        values = self._counts(lower_steps, **counts)
        cache = self.__dict__.setdefault("_constants", {})
        if values not in cache:  # reuse the int32 tensors: creating one costs a host op
            cache[values] = tuple(tf.constant(n, tf.int32) for n in values)
        return cache[values]

    def _raise_if_failed(self, out: Mapping[str, tf.Tensor], iteration_offset: int) -> None:
        if not self.check_finite:
            return
        status = int(out["status"])
        if status != 0:
            raise NonFiniteError(
                f"{type(self).__name__}: {self.monitor.describe(status)} of upper iteration "
                f"{self.iteration + max(iteration_offset, 0)} (counted from 0). The solver "
                "stopped; the variables now hold non-finite values, so restart from the last "
                "checkpoint, e.g. with smaller learning rates.")

    def _typed_iteration(self, batch: Any, *counts: tf.Tensor) -> dict[str, tf.Tensor]:
        """`_iteration` with its outputs checked against and cast to `outputs`."""
        out = self._iteration(batch, *counts)
        if set(out) != set(self.outputs):
            raise TypeError(f"{type(self).__name__}._iteration returned {sorted(out)}, "
                            f"declared outputs are {sorted(self.outputs)}")
        return {k: tf.cast(v, self.outputs[k]) for k, v in out.items()}

    def _many(self, batch: Any, iterations: tf.Tensor, *counts: tf.Tensor) -> dict[str, tf.Tensor]:
        """``iterations`` calls of `_iteration` in one while loop; stops at the first failure.

        The loop starts from zeros shaped like `outputs` so that `_iteration` is traced
        (and compiled) once.
        """
        def cond(i, out, failed_at):
            return tf.logical_and(i < iterations, failed_at < 0)

        def body(i, out, failed_at):
            new = self._typed_iteration(batch, *counts)
            failed_at = tf.where(new["status"] != 0, i, failed_at)
            return i + 1, new, failed_at

        start = {k: tf.zeros([], dtype) for k, dtype in self.outputs.items()}
        _, out, failed = tf.while_loop(cond, body, (tf.constant(0, tf.int32), start, tf.constant(-1)))
        return dict(out, failed_iteration=failed)

    def levels(self) -> list[Level]:
        """Every `Level` whose optimizers the solver steps (u, v, and p for ApproxGrad)."""
        return [self.upper, self.lower]

    def set_learning_rates(self, upper: float | Sequence[float] | None = None,
                           lower: float | Sequence[float] | None = None) -> None:
        """Assign learning rates (e.g. a driver's halving schedule); None leaves one as is."""
        for level, value in ((self.upper, upper), (self.lower, lower)):
            if value is not None:
                level.set_learning_rates(value)

    def reset(self) -> None:
        """Solver state back to its start: learning rates (and, in subclasses, the penalty
        state or the linear-system vector). Optimizer moments are kept, as in the original;
        see `reset_optimizers` and `restart`."""
        for level in self.levels():
            level.set_learning_rates(level.initial_lrs)

    def reset_optimizers(self) -> None:
        """Zero every optimizer's moments and step counter (learning rates unchanged)."""
        for level in self.levels():
            level.reset_optimizer_state()

    def restart(self) -> None:
        """`reset` and `reset_optimizers`: a fresh solver on the current variable values."""
        self.reset()
        self.reset_optimizers()

    def reset_lower(self) -> None:
        """Re-initialise v (the original's ``reset_lower_level``).

        Calls ``lower_initializer`` if one was given, else restores the values v had when
        the solver was built.
        """
        if self._lower_initializer is not None:
            self._lower_initializer()
        else:
            restore(self.lower.variables, self._lower_init_values)

    def tracing_count(self) -> int:
        """How often the compiled functions have been traced (1 after the first `step`)."""
        return (self._compiled.experimental_get_tracing_count()
                + self._compiled_many.experimental_get_tracing_count())

    # -- helpers for subclasses -------------------------------------------------------
    def _bind(self, batch: Any) -> tuple[Callable[[], tf.Tensor], Callable[[], tf.Tensor]]:
        """Zero-argument closures ``f()`` and ``g()`` on the given batch (under a
        `tf.distribute` strategy: `autodiff.DistributedLoss` objects, means over replicas)."""
        if self.strategy is not None:
            return (autodiff.DistributedLoss(self.upper_loss, batch, self.strategy),
                    autodiff.DistributedLoss(self.lower_loss, batch, self.strategy))
        return (lambda: self.upper_loss(batch)), (lambda: self.lower_loss(batch))

    def _bind_lower_steps(self, batch: Any, bound: tuple[Callable, Callable]) -> tuple[Callable, Callable]:
        """f and g for the steps that differentiate w.r.t. v only (lower steps, and
        ApproxGrad's linear-system steps): on ``lower_step_batch(batch)``, computed once per
        iteration, when the solver was given that hook; else ``bound`` (f and g on ``batch``)."""
        hook = getattr(self, "lower_step_batch", None)
        if hook is None:
            return bound
        if self.strategy is not None:
            raise NotImplementedError("lower_step_batch is not supported under a tf.distribute strategy")
        return self._bind(hook(batch))

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


def snapshot(variables: Sequence[tf.Variable]) -> list[np.ndarray]:
    """Copies of the current values (to restore with `restore`)."""
    return [v.numpy().copy() for v in variables]


def restore(variables: Sequence[tf.Variable], values: Sequence[np.ndarray]) -> None:
    for v, x in zip(variables, values):
        v.assign(x)


def as_float_dict(out: Mapping[str, tf.Tensor]) -> dict[str, float]:
    """Convert a step's output to Python floats (one host transfer per entry)."""
    return {k: float(v) for k, v in out.items()}
