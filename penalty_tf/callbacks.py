"""A Keras-style training loop for the bilevel solvers, and its callbacks.

`run` (also `BilevelSolver.run`) calls ``solver.step(batch, lower_steps)`` for every batch
of a dataset, epoch after epoch, and calls the usual `keras.callbacks.Callback` hooks
(``on_train_begin``, ``on_epoch_begin``, ``on_train_batch_end(i, logs)``,
``on_epoch_end(epoch, logs)``, ``on_train_end``) with ``callback.model`` set to the solver.
Batch logs are the step's outputs as floats (f, g and, for `Penalty`, the penalty terms and
rho, lamb, eps) plus the learning rates; epoch logs are their means over the epoch, except
the schedule state (rho, lamb, eps, learning rates: last value). Setting
``solver.stop_training = True`` in a callback ends the run after the current batch (so
`keras.callbacks.EarlyStopping(monitor="f", mode="min")` works).

Callbacks defined here:

* `ProgressBar`: a `keras.utils.Progbar` per epoch (added by ``verbose=1``);
* `TensorBoard`: scalars of every log entry, per batch and per epoch;
* `Checkpoint`: u, v and the whole solver state via `tf.train.CheckpointManager`, with
  `Checkpoint.restore` to resume and a rollback to the last checkpoint on NaN.

A NaN or Inf (`NonFiniteError`) stops the run: callbacks with an ``on_nonfinite(error)``
method are told, and the returned history carries the error in ``history.error``
(``on_nonfinite="raise"`` re-raises it instead).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from penalty_tf.solvers.base import BilevelSolver, NonFiniteError

#: Log entries that are state rather than per-batch measurements: epoch logs keep the last.
STATE_KEYS = ("rho", "lamb", "eps")

#: What ``tf.summary.scalar`` attaches (TensorBoard's scalars plugin); written with the core
#: ``tf.summary.write`` so that the `tensorboard` package is needed only to view the logs.
SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()


def batch_logs(solver: BilevelSolver, out: dict[str, tf.Tensor]) -> dict[str, float]:
    """A step's outputs as floats (without ``status``), plus ``lr_upper``/``lr_lower``
    (``lr_upper_<i>`` per group when a level has several)."""
    logs = {k: float(v) for k, v in out.items() if k not in ("status", "failed_iteration")}
    for name, level in (("upper", solver.upper), ("lower", solver.lower)):
        rates = level.learning_rates()
        if len(rates) == 1:
            logs[f"lr_{name}"] = rates[0]
        else:
            logs.update({f"lr_{name}_{i}": r for i, r in enumerate(rates)})
    return logs


def is_state_key(key: str) -> bool:
    return key in STATE_KEYS or key.startswith("lr_")


def epoch_logs(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """Means over an epoch's batch logs; the last value for the schedule state."""
    if not history:
        return {}
    return {k: history[-1][k] if is_state_key(k) else float(np.mean([h[k] for h in history]))
            for k in history[-1]}


def prepare(solver: BilevelSolver, dataset: Any) -> tuple[Iterable, int | None]:
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


def run(solver: BilevelSolver, dataset: Any, epochs: int = 1, lower_steps: int = 1,
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


def run_epoch(solver: BilevelSolver, batches: Iterable, lower_steps: int,
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
    return epoch_logs(seen)


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
        self.bar = keras.utils.Progbar(self.params.get("steps"), stateful_metrics=STATE_KEYS)
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen = batch + 1
        self.bar.update(self.seen, [(k, logs[k]) for k in self.keys if k in logs])

    def on_epoch_end(self, epoch, logs=None):
        self.bar.update(self.seen, finalize=True)


class TensorBoard(keras.callbacks.Callback):
    """Write every log entry as a TensorBoard scalar.

    Batch logs go under their own names at step = the solver's upper-level iteration,
    every ``update_freq`` iterations; epoch logs under ``epoch_<name>`` at step = epoch.
    For `Penalty` these are f, g, the penalty terms (``penalty`` = rho/2 ||G||^2,
    ``nu_term`` = <nu, G>, ``lamb_g`` = lambda g), ``h_upper``, ``h_lower``, the tolerance
    test's ``hu``, ``hv``, and rho, lamb, eps, learning rates.

    Args:
      log_dir: directory of the event files (``tensorboard --logdir log_dir``).
      update_freq: write batch scalars every this many iterations (0: epoch scalars only).
    """

    def __init__(self, log_dir: str, update_freq: int = 1):
        super().__init__()
        self.log_dir = str(log_dir)
        self.update_freq = int(update_freq)
        self.writer = None

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(self.log_dir)

    def write(self, logs: dict[str, float], step: int, prefix: str = "") -> None:
        with self.writer.as_default():
            for k, v in logs.items():
                tf.summary.write(prefix + k, tf.constant(v, tf.float32), step=step,
                                 metadata=SCALAR_METADATA)

    def on_train_batch_end(self, batch, logs=None):
        iteration = self.model.iteration - 1
        if self.update_freq and iteration % self.update_freq == 0:
            self.write(logs, iteration)

    def on_epoch_end(self, epoch, logs=None):
        self.write(logs, epoch, "epoch_")
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()


class Checkpoint(keras.callbacks.Callback):
    """Save u, v and the solver's whole state (`BilevelSolver.checkpoint`: optimizer moments
    and step counters, learning rates, penalty variables, iteration and epoch counters) with a
    `tf.train.CheckpointManager` at the end of every ``every`` epochs.

    Resume a run::

        ckpt = ptf.callbacks.Checkpoint(solver, "ckpt_dir")
        start = ckpt.restore()          # 0 when the directory holds no checkpoint
        solver.run(ds, epochs=10, callbacks=[ckpt], initial_epoch=start)

    On a NaN or Inf (`NonFiniteError`) the variables are rolled back to the last checkpoint
    (``rollback_on_nonfinite``), so the run loses nothing but the epoch in progress.

    Args:
      solver: the solver whose state is saved.
      directory: where the checkpoints go.
      max_to_keep: how many checkpoints the manager keeps.
      every: save every this many epochs (and after the last one).
      rollback_on_nonfinite: restore the last checkpoint when the run stops on NaN/Inf.
      **extra: further trackables to save, e.g. ``model=model`` for non-trainable variables.
    """

    def __init__(self, solver: BilevelSolver, directory: str, max_to_keep: int = 3,
                 every: int = 1, rollback_on_nonfinite: bool = True, **extra: Any):
        super().__init__()
        self.solver = solver
        self.every = int(every)
        self.rollback_on_nonfinite = rollback_on_nonfinite
        self.manager = tf.train.CheckpointManager(solver.checkpoint(**extra), str(directory),
                                                  max_to_keep=max_to_keep)

    def save(self) -> str:
        """Save now; returns the checkpoint's path."""
        self.solver.sync_counters_to_checkpoint()
        return self.manager.save(checkpoint_number=self.solver.epoch)

    def restore(self) -> int:
        """Restore the latest checkpoint, if any; return the epoch to continue from (0 if
        there is none)."""
        if self.manager.latest_checkpoint is None:
            return 0
        self.manager.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        self.solver.sync_counters_from_checkpoint()
        return self.solver.epoch

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.params["epochs"]:
            self.save()

    def on_nonfinite(self, error: NonFiniteError) -> None:
        if self.rollback_on_nonfinite and self.manager.latest_checkpoint is not None:
            self.restore()
