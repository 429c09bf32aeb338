"""Callbacks for the bilevel training loop (`penalty_tf.training.run`, `BilevelSolver.run`).

* `ProgressBar`: a `keras.utils.Progbar` per epoch (added by ``verbose=1``);
* `TensorBoard`: scalars of every log entry, per batch and per epoch;
* `Checkpoint`: u, v and the whole solver state via `tf.train.CheckpointManager`, with
  `Checkpoint.restore` to resume and a rollback to the last checkpoint on NaN;
* `EvaluateEvery`: adds a user's evaluation (e.g. validation accuracy) to the epoch logs;
* `ScaleLearningRates`: multiplies learning rates after chosen epochs (e.g. halving).

Keras' own callbacks that need only logs and ``model.stop_training`` (EarlyStopping,
CSVLogger, LambdaCallback, History) work too.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import keras
import tensorflow as tf

from penalty_tf.solvers.monitor import NonFiniteError
# `run` and `ProgressBar` live with the loop; kept importable from here (0.1's home of both).
from penalty_tf.training import ProgressBar, run  # noqa: F401

#: What ``tf.summary.scalar`` attaches (TensorBoard's scalars plugin); written with the core
#: ``tf.summary.write`` so that the `tensorboard` package is needed only to view the logs.
SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()


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

    def __init__(self, solver: Any, directory: str, max_to_keep: int = 3,
                 every: int = 1, rollback_on_nonfinite: bool = True, **extra: Any):
        super().__init__()
        self.solver = solver
        self.every = int(every)
        self.rollback_on_nonfinite = rollback_on_nonfinite
        self.manager = tf.train.CheckpointManager(solver.checkpoint(**extra), str(directory),
                                                  max_to_keep=max_to_keep)

    def save(self) -> str:
        """Save now; returns the checkpoint's path."""
        return self.manager.save(checkpoint_number=self.solver.epoch)

    def restore(self) -> int:
        """Restore the latest checkpoint, if any; return the epoch to continue from (0 if
        there is none)."""
        if self.manager.latest_checkpoint is None:
            return 0
        self.manager.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        return self.solver.epoch

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.params["epochs"]:
            self.save()

    def on_nonfinite(self, error: NonFiniteError) -> None:
        if self.rollback_on_nonfinite and self.manager.latest_checkpoint is not None:
            self.restore()


class EvaluateEvery(keras.callbacks.Callback):
    """Add ``evaluate()``'s scalars to the epoch logs every ``every`` epochs (and after the
    last one), e.g. a validation accuracy::

        solver.run(ds, epochs=10, callbacks=[ptf.callbacks.EvaluateEvery(
            lambda: {"val_accuracy": accuracy(model, x_val, y_val)}, every=2)])

    The entries reach History, TensorBoard and every callback listed after this one.

    Args:
      evaluate: ``() -> {name: float}`` (it may read the solver's variables or the models).
      every: evaluate after every this many epochs.
      prefix: prepended to every name.
    """

    def __init__(self, evaluate: Callable[[], Mapping[str, float]], every: int = 1, prefix: str = ""):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.evaluate = evaluate
        self.every = int(every)
        self.prefix = prefix

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.params.get("epochs")
        if logs is not None and ((epoch + 1) % self.every == 0 or last):
            logs.update({self.prefix + k: float(v) for k, v in self.evaluate().items()})


class ScaleLearningRates(keras.callbacks.Callback):
    """Multiply learning rates by ``factor`` at the end of every epoch for which
    ``when(epoch)`` is true, e.g. the original ApproxGrad drivers' halving::

        ptf.callbacks.ScaleLearningRates(0.5, when=lambda epoch: epoch > 0 and epoch % 20 == 0)

    Args:
      factor: the multiplier.
      when: ``epoch -> bool``.
      levels: which levels' optimizers (``"upper"``, ``"lower"``, ApproxGrad's ``"linear"``).
    """

    def __init__(self, factor: float, when: Callable[[int], bool],
                 levels: Sequence[str] = ("upper", "lower")):
        super().__init__()
        self.factor = float(factor)
        self.when = when
        self.levels = tuple(levels)

    def on_epoch_end(self, epoch, logs=None):
        if self.when(epoch):
            self.model.scale_learning_rates(self.factor, self.levels)
