"""The Keras-style training loop of the bilevel solvers (`run`, also `BilevelSolver.run`).

`run` calls ``solver.step(batch, lower_steps)`` for every batch of a dataset, epoch after
epoch, and calls the usual `keras.callbacks.Callback` hooks (``on_train_begin``,
``on_epoch_begin``, ``on_train_batch_end(i, logs)``, ``on_epoch_end(epoch, logs)``,
``on_train_end``) with ``callback.model`` set to the solver. Batch logs are the step's
outputs as floats (f, g and, for `Penalty`, the penalty terms and rho, lamb, eps) plus the
learning rates; epoch logs are their means over the epoch, except the schedule state (the
solver's ``state_outputs`` and the learning rates: last value). Setting
``solver.stop_training = True`` in a callback ends the run after the current batch (so
`keras.callbacks.EarlyStopping(monitor="f", mode="min")` works). The callbacks are in
`penalty_tf.callbacks`
(`ProgressBar`, the default progress display, is defined here).

A NaN or Inf (`NonFiniteError`) stops the run: callbacks with an ``on_nonfinite(error)``
method are told, and the returned history carries the error in ``history.error``
(``on_nonfinite="raise"`` re-raises it instead).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from penalty_tf.solvers.monitor import NonFiniteError

#: Outputs of a step that are the NaN monitor's bookkeeping, not quantities of the problem.
MONITOR_OUTPUTS = ("status", "failed_iteration")


def step_values(out: dict[str, Any]) -> dict[str, float]:
    """A step's outputs as floats, without the monitor's `MONITOR_OUTPUTS`."""
    return {k: float(v) for k, v in out.items() if k not in MONITOR_OUTPUTS}


def batch_logs(solver: Any, out: dict[str, tf.Tensor]) -> dict[str, float]:
    """`step_values` of a step, plus ``lr_upper``/``lr_lower`` (``lr_upper_<i>`` per group
    when a level has several)."""
    logs = step_values(out)
    rates_by_level = solver.learning_rates()
    for name in ("upper", "lower"):
        rates = rates_by_level.get(name, [])
        if len(rates) == 1:
            logs[f"lr_{name}"] = rates[0]
        else:
            logs.update({f"lr_{name}_{i}": r for i, r in enumerate(rates)})
    return logs


def is_state_key(key: str, state_outputs: Sequence[str]) -> bool:
    """Whether a log entry is schedule state (a solver's ``state_outputs`` or a learning rate)."""
    return key in state_outputs or key.startswith("lr_")


def epoch_logs(history: Sequence[dict[str, float]], state_outputs: Sequence[str] = ()) -> dict[str, float]:
    """Means over an epoch's batch logs; the last value for the schedule state."""
    if not history:
        return {}
    return {k: history[-1][k] if is_state_key(k, state_outputs) else float(np.mean([h[k] for h in history]))
            for k in history[-1]}


def prepare(solver: Any, dataset: Any) -> tuple[Iterable, int | None]:
    """Distribute a `tf.data.Dataset` over the solver's strategy (if any), trace `step` for
    its element spec, and return ``(batches, batches per epoch or None)``."""
    steps = None
    if isinstance(dataset, tf.data.Dataset):
        n = int(dataset.cardinality())
        steps = n if n >= 0 else None
        if solver.strategy is not None:
            dataset = solver.strategy.experimental_distribute_dataset(dataset)
    if hasattr(dataset, "element_spec"):
        solver.trace(dataset.element_spec)
    return dataset, steps


def run(solver: Any, dataset: Any, epochs: int = 1, lower_steps: int = 1,
        callbacks: Sequence[keras.callbacks.Callback] = (), *, initial_epoch: int = 0,
        verbose: int = 1, on_nonfinite: str = "stop", **counts: int) -> keras.callbacks.History:
    """Run ``solver.step(batch, lower_steps)`` over ``dataset`` for epochs
    ``initial_epoch … epochs - 1`` (Keras' ``fit`` convention).

    Args:
      solver: any `BilevelSolver`.
      dataset: a `tf.data.Dataset` (distributed over the solver's strategy, if it was built
        under one) or any re-iterable of batches. One pass is one epoch.
      epochs: index of the last epoch + 1.
      lower_steps: T, lower-level steps per upper-level iteration.
      callbacks: `keras.callbacks.Callback` instances (this module's or Keras' own that
        need only logs and ``model.stop_training``).
      initial_epoch: first epoch (e.g. the value `Checkpoint.restore` returned).
      verbose: 1 adds a `ProgressBar` unless one is in ``callbacks``; 0 is silent.
      on_nonfinite: ``"stop"`` ends the run on `NonFiniteError` and returns the history
        with ``history.error`` set; ``"raise"`` re-raises after telling the callbacks.
      **counts: further loop counts of the solver (``linear_steps`` for ApproxGrad).

    Returns:
      a `keras.callbacks.History`: ``history.history[name]`` is the list of epoch values.
    """
    if on_nonfinite not in ("stop", "raise"):
        raise ValueError(f"on_nonfinite must be 'stop' or 'raise', got {on_nonfinite!r}")
    batches, steps = prepare(solver, dataset)
    history = keras.callbacks.History()
    history.error = None
    callbacks = list(callbacks)
    if verbose and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(ProgressBar())
    callbacks.append(history)
    for c in callbacks:
        c.set_model(solver)
        c.set_params({"epochs": epochs, "steps": steps, "verbose": verbose})
    solver.stop_training = False
    for c in callbacks:
        c.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        solver.epoch = epoch
        for c in callbacks:
            c.on_epoch_begin(epoch)
        try:
            logs = run_epoch(solver, batches, lower_steps, callbacks, counts)
        except NonFiniteError as error:
            history.error = error
            for c in callbacks:
                if hasattr(c, "on_nonfinite"):
                    c.on_nonfinite(error)
            if on_nonfinite == "raise":
                raise
            break
        solver.epoch = epoch + 1
        for c in callbacks:
            c.on_epoch_end(epoch, logs)
        if solver.stop_training:
            break
    for c in callbacks:
        c.on_train_end(logs)
    return history


def run_epoch(solver: Any, batches: Iterable, lower_steps: int,
              callbacks: Sequence[keras.callbacks.Callback], counts: dict) -> dict[str, float]:
    """One pass over ``batches``; returns the epoch logs."""
    seen = []
    for i, batch in enumerate(batches):
        for c in callbacks:
            c.on_train_batch_begin(i)
        logs = batch_logs(solver, solver.step(batch, lower_steps, **counts))
        seen.append(logs)
        for c in callbacks:
            c.on_train_batch_end(i, logs)
        if solver.stop_training:
            break
    return epoch_logs(seen, solver.state_outputs)


class ProgressBar(keras.callbacks.Callback):
    """A `keras.utils.Progbar` per epoch showing f, g and (Penalty) rho.

    Args:
      keys: the log entries to show.
    """

    def __init__(self, keys: Sequence[str] = ("f", "g", "rho")):
        super().__init__()
        self.keys = tuple(keys)
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        print(f"Epoch {epoch + 1}/{self.params['epochs']}")
        self.bar = keras.utils.Progbar(self.params.get("steps"), stateful_metrics=tuple(self.model.state_outputs))
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen = batch + 1
        self.bar.update(self.seen, [(k, logs[k]) for k in self.keys if k in logs])

    def on_epoch_end(self, epoch, logs=None):
        self.bar.update(self.seen, finalize=True)
