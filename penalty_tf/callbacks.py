"""Callbacks for the bilevel training loop (`penalty_tf.training.run`, `BilevelSolver.run`).

* `ProgressBar`: a `keras.utils.Progbar` per epoch (added by ``verbose=1``);
* `TensorBoard`: scalars of every log entry, per batch and per epoch;
* `Checkpoint`: u, v and the whole solver state via `tf.train.CheckpointManager`, with
  `Checkpoint.restore` to resume and a rollback to the last checkpoint on NaN;
* `Validation`: Keras metrics on validation data in the epoch logs (``run(validation_data=,
  metrics=)`` builds it);
* `EvaluateEvery`: adds a user's evaluation (e.g. validation accuracy) to the epoch logs;
* `ScaleLearningRates`: multiplies learning rates after chosen epochs (e.g. halving);
* `OnLevel`: a Keras learning-rate callback (ReduceLROnPlateau, LearningRateScheduler)
  applied to one level's optimizers.

Keras' own callbacks that need only logs, ``model.stop_training`` and ``get_weights`` /
``set_weights`` (EarlyStopping, also with ``restore_best_weights``, CSVLogger,
LambdaCallback, History) work too; those that cannot (ModelCheckpoint, Keras' TensorBoard,
BackupAndRestore, a bare ReduceLROnPlateau ...) are refused before training, naming the
alternative (`penalty_tf.training.UNSUPPORTED_CALLBACKS`).
"""

from __future__ import annotations

import os
import shutil
import sys
import types
from typing import Any, Callable, Mapping, Sequence

import keras
import tensorflow as tf

from penalty_tf.solvers.ranges import Range, check_value
from penalty_tf.solvers.monitor import NonFiniteError
# `run` and `ProgressBar` live with the loop; kept importable from here (0.1's home of both).
from penalty_tf.training import ProgressBar, run  # noqa: F401
# `Validation` lives with the loop that builds it from run(validation_data=, metrics=).
from penalty_tf.validation import Validation  # noqa: F401

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
        if isinstance(update_freq, bool) or int(update_freq) != update_freq or update_freq < 0:
            raise ValueError(f"TensorBoard: update_freq must be an integer >= 0 (0: epoch scalars only), "
                             f"got {update_freq!r}")
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
    and step counters, learning rates, penalty variables, iteration and epoch counters) and
    the data position with a `tf.train.CheckpointManager`: when training starts (if the
    directory holds no checkpoint yet) and at the end of every ``every`` epochs.

    Resume a run::

        ckpt = ptf.callbacks.Checkpoint(solver, "ckpt_dir")
        start = ckpt.restore()          # 0 when the directory holds no checkpoint
        solver.run(ds, epochs=10, callbacks=[ckpt], initial_epoch=start)

    The data position is the iterator `penalty_tf.training.run` reads a `tf.data.Dataset` of
    known length through (its shuffle buffer and random state included), restored when
    the run attaches it: with the same pipeline (e.g. ``shuffle(n, seed=0)``) the resumed
    run sees the batches the uninterrupted one saw, so it ends bitwise equal (given
    deterministic kernels). Data that is not a `tf.data.Dataset` of known length has no
    saved position: make its order a function of the epoch to resume exactly.

    On a NaN or Inf (`NonFiniteError`) the variables are rolled back to the last checkpoint
    (``rollback_on_nonfinite``; there is always one: the one made when training started),
    so the run loses nothing but the epoch in progress; the rollback is printed.

    Under `tf.distribute.MultiWorkerMirroredStrategy` every worker calls `save` (as
    TensorFlow requires), but only the chief's checkpoint lands in ``directory``; the
    others write to a scratch folder inside it (``.worker<i>``), deleted right after. Every
    worker restores from ``directory`` (which must be a file system all workers see), so a
    job whose workers were killed resumes, restarted with the same ``TF_CONFIG``, from the
    chief's last checkpoint, as Keras' ``BackupAndRestore`` does. Under any strategy the
    data position is not in the checkpoint (TensorFlow cannot save a distributed iterator):
    `penalty_tf.training.run` with ``initial_epoch=k`` skips the first k epochs' batches of
    the dataset instead, which is the same position for a seeded pipeline
    (``shuffle(n, seed=...)``).

    Args:
      solver: the solver whose state is saved.
      directory: where the checkpoints go.
      max_to_keep: how many checkpoints the manager keeps (>= 1).
      every: save every this many epochs (>= 1; and after the last one).
      rollback_on_nonfinite: restore the last checkpoint when the run stops on NaN/Inf.
      **extra: further trackables to save, e.g. ``model=model`` for non-trainable variables.
    """

    def __init__(self, solver: Any, directory: str, max_to_keep: int = 3,
                 every: int = 1, rollback_on_nonfinite: bool = True, **extra: Any):
        super().__init__()
        for name, value in (("every", every), ("max_to_keep", max_to_keep)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"Checkpoint: {name} must be an integer >= 1, got {value!r}")
        self.solver = solver
        self.every = int(every)
        self.rollback_on_nonfinite = rollback_on_nonfinite
        self.directory = str(directory)
        checkpoint = solver.checkpoint(**extra)
        self.manager = tf.train.CheckpointManager(checkpoint, self.directory, max_to_keep=int(max_to_keep))
        chief, worker = chief_and_worker(solver.strategy)
        self.scratch = None if chief else os.path.join(self.directory, f".worker{worker}")
        self.scratch_manager = None if chief else tf.train.CheckpointManager(checkpoint, self.scratch, max_to_keep=1)

    def save(self) -> str:
        """Save now; returns the checkpoint's path (a worker other than the chief saves to
        its scratch folder, deletes it and returns the path the chief's checkpoint has)."""
        if self.scratch_manager is None:
            return self.manager.save(checkpoint_number=self.solver.epoch)
        self.scratch_manager.save(checkpoint_number=self.solver.epoch)
        shutil.rmtree(self.scratch, ignore_errors=True)
        return os.path.join(self.directory, f"ckpt-{self.solver.epoch}")

    def latest(self) -> str | None:
        """The newest checkpoint in ``directory`` (read afresh: the chief may have written it)."""
        return tf.train.latest_checkpoint(self.directory)

    def restore(self) -> int:
        """Restore the latest checkpoint, if any; return the epoch to continue from (0 if
        there is none). The data position is restored when a run attaches its iterator."""
        path = self.latest()
        if path is None:
            return 0
        try:
            self.manager.checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as error:   # damaged: IndexError
            raise CheckpointError(f"cannot restore {path}: {error}. It was made by another problem or "
                                  "solver, or is damaged; use another directory to start afresh") from None
        return self.solver.epoch

    def set_data_iterator(self, iterator: Any) -> None:
        """Called by `penalty_tf.training.run`: save (and, after `restore`, restore) the
        position of the iterator the run reads its dataset through."""
        if isinstance(iterator, tf.__internal__.tracking.Trackable):
            try:
                self.manager.checkpoint.data_position = iterator
            except (tf.errors.OpError, ValueError) as error:
                raise CheckpointError(f"the data position in {self.latest()} does not fit "
                                      f"this dataset ({error}); resume with the pipeline the run was "
                                      "started with") from None

    def on_train_begin(self, logs=None):
        if self.latest() is None:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.params["epochs"]:
            self.save()

    def on_nonfinite(self, error: NonFiniteError) -> None:
        if self.rollback_on_nonfinite and self.latest() is not None:
            path = self.latest()
            self.restore()
            print(f"Checkpoint: rolled u, v and the solver state back to {path} (epoch {self.solver.epoch})",
                  file=sys.stderr)


def chief_and_worker(strategy: Any) -> tuple[bool, int]:
    """(whether this process writes checkpoints, its worker index) under ``strategy``: the
    chief of a multi-worker strategy (``strategy.extended.should_checkpoint``), or True, 0
    without one."""
    if strategy is None:
        return True, 0
    resolver = getattr(strategy, "cluster_resolver", None)
    worker = int(getattr(resolver, "task_id", 0) or 0) if resolver is not None else 0
    return bool(getattr(strategy.extended, "should_checkpoint", True)), worker


class CheckpointError(ValueError):
    """A checkpoint that does not fit the solver, the model or the data it is restored into."""


class OnLevel(keras.callbacks.Callback):
    """A Keras callback that changes ``model.optimizer`` (`keras.callbacks.ReduceLROnPlateau`,
    `keras.callbacks.LearningRateScheduler`) applied to one level's optimizers::

        ptf.callbacks.OnLevel(keras.callbacks.ReduceLROnPlateau("val_accuracy", factor=0.5), "upper")

    The wrapped callback sees a model whose ``optimizer`` is that level's optimizer (with
    several variable groups: an object with ``.optimizers``, one per group, which Keras'
    callbacks handle each in turn) and whose ``stop_training`` is the solver's.

    Args:
      callback: the Keras callback.
      level: ``"upper"``, ``"lower"`` (or ApproxGrad's ``"linear"``).
    """

    def __init__(self, callback: keras.callbacks.Callback, level: str):
        super().__init__()
        self.callback, self.level = callback, level

    def set_model(self, model):
        super().set_model(model)
        levels = model.named_levels()
        if self.level not in levels or not levels[self.level].optimizers:
            names = [k for k, v in levels.items() if v.optimizers]
            raise ValueError(f"OnLevel: {type(model).__name__} has no optimizer level {self.level!r}; "
                             f"choose from {names}")
        self.callback.set_model(_LevelView(model, levels[self.level].optimizers))

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)

    def on_train_begin(self, logs=None):
        self.callback.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.callback.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.callback.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self.callback.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.callback.on_train_batch_end(batch, logs)


class _LevelView:
    """What a Keras callback sees as the model: one level's optimizer(s), the solver's flag."""

    def __init__(self, solver: Any, optimizers: Sequence[Any]):
        self._solver = solver
        self.optimizer = optimizers[0] if len(optimizers) == 1 else types.SimpleNamespace(optimizers=list(optimizers))

    @property
    def stop_training(self) -> bool:
        return self._solver.stop_training

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self._solver.stop_training = value


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
        if not callable(when):
            raise TypeError(f"ScaleLearningRates: when must be a function epoch -> bool, got {when!r}")
        self.factor = check_value("ScaleLearningRates: factor", factor, Range(0.0, low_open=True))
        self.when = when
        self.levels = tuple(levels)

    def set_model(self, model):
        super().set_model(model)
        unknown = sorted(set(self.levels) - set(model.named_levels()))
        if unknown:
            raise ValueError(f"ScaleLearningRates: {type(model).__name__} has no level {unknown}; "
                             f"choose from {list(model.named_levels())}")

    def on_epoch_end(self, epoch, logs=None):
        if self.when(epoch):
            self.model.scale_learning_rates(self.factor, self.levels)
