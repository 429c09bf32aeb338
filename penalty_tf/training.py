"""The Keras-style training loop of the bilevel solvers (`run`, also `BilevelSolver.run`).

`run` calls ``solver.step(batch, lower_steps)`` for every batch of a dataset, epoch after
epoch, and calls the usual `keras.callbacks.Callback` hooks (``on_train_begin``,
``on_epoch_begin``, ``on_train_batch_end(i, logs)``, ``on_epoch_end(epoch, logs)``,
``on_train_end``) with ``callback.model`` set to the solver. Batch logs are the step's
outputs as floats (f, g and, for `Penalty`, the penalty terms and rho, lamb, eps) plus the
learning rates; epoch logs are their means over the epoch, except the schedule state (the
solver's ``state_outputs`` and the learning rates: last value), plus ``val_<metric>`` for
the ``metrics`` evaluated on ``validation_data``. Setting ``solver.stop_training = True``
in a callback ends the run after the current batch (so
`keras.callbacks.EarlyStopping(monitor="f", mode="min")` works). The callbacks are in
`penalty_tf.callbacks` (`ProgressBar`, the default progress display, is defined here).

Data: a `tf.data.Dataset` of known length (or ``steps_per_epoch``) is read through ONE
iterator over the repeated dataset for the whole run, so that `penalty_tf.callbacks.Checkpoint`
saves the data position (the shuffle buffer and its random state) with the solver: a
resumed run sees the same batches as an uninterrupted one. Arrays are batched here
(``batch_size=``); any other re-iterable of batches is iterated once per epoch.

A NaN or Inf (`NonFiniteError`) stops the run: callbacks with an ``on_nonfinite(error)``
method are told, the error is printed, and the returned history carries it in
``history.error`` (``on_nonfinite="raise"`` re-raises it instead).
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

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
    """Means over an epoch's batch logs; the last value for the schedule state. An entry a
    callback added to some batches only is averaged over those."""
    keys = list(dict.fromkeys(k for h in history for k in h))
    return {k: [h[k] for h in history if k in h][-1] if is_state_key(k, state_outputs)
            else float(np.mean([h[k] for h in history if k in h])) for k in keys}


# ------------------------------------------------------------------------- data


def _is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, tf.Tensor)) and len(getattr(x, "shape", ())) > 0


def is_array_nest(data: Any) -> bool:
    """A tuple or dict of arrays: data to be sliced into batches, as Keras' ``fit(x, y)``
    takes it. A list is always a sequence of batches."""
    if not isinstance(data, (tuple, Mapping)):
        return False
    leaves = tf.nest.flatten(dict(data) if isinstance(data, Mapping) else list(data))
    return bool(leaves) and all(_is_array(x) for x in leaves)


def batch_arrays(data: Any, batch_size: int, shuffle: bool = True, seed: Optional[int] = None) -> tf.data.Dataset:
    """``data`` (a tuple or dict of arrays of one length N) as a `tf.data.Dataset` of
    minibatches of ``batch_size`` (the last one smaller), reshuffled every epoch when
    ``shuffle`` (with ``seed``: the same order in every run)."""
    lengths = {int(x.shape[0]) for x in tf.nest.flatten(data)}
    if len(lengths) != 1:
        raise ValueError(f"the arrays have different lengths {sorted(lengths)}; batch_size= slices arrays of one "
                         "length. For parts of other sizes (e.g. a training and a validation set) build the "
                         "batches yourself: tf.data.Dataset.zip((train_ds, val_ds)) or a list of batches")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset = tf.data.Dataset.from_tensor_slices(data)
    if shuffle:
        dataset = dataset.shuffle(lengths.pop(), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size)


class DataFeed:
    """The batches of every epoch of a run.

    A `tf.data.Dataset` of known length n (or any dataset with ``steps_per_epoch``) is read
    through one iterator over ``dataset.repeat()``, ``steps`` batches per epoch: the
    iterator (`iterator`) holds the data position, which `penalty_tf.callbacks.Checkpoint`
    saves. Other re-iterables are iterated afresh each epoch (``iterator`` is None).
    """

    def __init__(self, solver: Any, data: Any, *, epochs_to_run: int, steps_per_epoch: Optional[int] = None,
                 batch_size: Optional[int] = None, shuffle: bool = True, seed: Optional[int] = None,
                 initial_epoch: int = 0):
        if is_array_nest(data):
            if batch_size is None:
                raise TypeError("run() got a tuple/dict of arrays, not a dataset of batches: pass batch_size=N to "
                                "slice it into minibatches (as keras fit does), or [batch] to use it whole as the "
                                "one batch of every epoch, or a tf.data.Dataset")
            data = batch_arrays(data, batch_size, shuffle, seed)
        elif batch_size is not None:
            raise TypeError("batch_size= batches arrays; this data is already a dataset of batches "
                            f"({type(data).__name__}); batch it there")
        if steps_per_epoch is not None and int(steps_per_epoch) < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.steps: Optional[int] = None if steps_per_epoch is None else int(steps_per_epoch)
        self.iterator: Optional[Iterator] = None
        self._per_epoch: Optional[Iterable] = None
        if isinstance(data, tf.data.Dataset):
            self._from_dataset(solver, data, initial_epoch)
        else:
            self._from_iterable(solver, data, epochs_to_run)

    def _from_dataset(self, solver: Any, dataset: tf.data.Dataset, initial_epoch: int = 0) -> None:
        n = int(dataset.cardinality())
        if n == 0:
            raise ValueError("the dataset is empty (no batches); check its filter/take/batch(drop_remainder)")
        if n == tf.data.INFINITE_CARDINALITY and self.steps is None:
            raise ValueError("the dataset repeats forever: pass steps_per_epoch= (batches per epoch)")
        if n < 0 and self.steps is None:      # unknown length: one pass per epoch
            self._per_epoch = self._distribute(solver, dataset)
            return
        self.steps = self.steps or n
        repeated = dataset if n == tf.data.INFINITE_CARDINALITY else dataset.repeat()
        if solver.strategy is not None and initial_epoch:
            # A distributed iterator cannot be checkpointed: a resumed run (initial_epoch > 0)
            # continues the pipeline's sequence instead by skipping the batches of the epochs
            # done, the same position for a seeded pipeline.
            repeated = repeated.skip(initial_epoch * self.steps)
        self.iterator = iter(self._distribute(solver, repeated))

    @staticmethod
    def _distribute(solver: Any, dataset: tf.data.Dataset) -> Any:
        """The dataset distributed over the solver's strategy (if any), with `step` traced
        for its batches (the smaller last one included)."""
        if solver.strategy is not None:
            dataset = solver.strategy.experimental_distribute_dataset(dataset)
        solver.trace(dataset.element_spec)
        return dataset

    def _from_iterable(self, solver: Any, data: Any, epochs_to_run: int) -> None:
        try:
            iterator = iter(data)
        except TypeError:
            raise TypeError(f"run() needs a tf.data.Dataset, a re-iterable of batches or arrays with batch_size=; "
                            f"got {type(data).__name__}") from None
        if iterator is data and epochs_to_run > 1:
            raise TypeError(f"the data is a one-pass iterator ({type(data).__name__}), which would be empty after "
                            "the first epoch; pass a re-iterable (a list, or an object whose __iter__ starts "
                            "afresh) or a tf.data.Dataset")
        if hasattr(data, "element_spec"):      # e.g. a distributed dataset
            solver.trace(data.element_spec)
        self._per_epoch = data

    def epoch(self) -> Iterator:
        """The batches of the next epoch."""
        if self.iterator is not None:
            return (next(self.iterator) for _ in range(self.steps))
        return iter(self._per_epoch)


# ------------------------------------------------------------------------- callbacks

#: Keras callbacks that need what a solver does not have, and what to use instead.
UNSUPPORTED_CALLBACKS = {
    "ModelCheckpoint": "penalty_tf.callbacks.Checkpoint (u, v and the whole solver state; "
                       "Checkpoint.restore resumes)",
    "BackupAndRestore": "penalty_tf.callbacks.Checkpoint (with Checkpoint.restore and initial_epoch=)",
    "TensorBoard": "penalty_tf.callbacks.TensorBoard",
    "ReduceLROnPlateau": "penalty_tf.callbacks.OnLevel(ReduceLROnPlateau(...), level='upper' or 'lower'): a "
                         "solver has an optimizer per level",
    "LearningRateScheduler": "penalty_tf.callbacks.OnLevel(LearningRateScheduler(...), level='upper' or "
                             "'lower'): a solver has an optimizer per level",
    "ProgbarLogger": "verbose=1 (penalty_tf's ProgressBar)",
    "TerminateOnNaN": "nothing: the solver checks every loss and gradient (check_finite=True) and stops the "
                      "run on NaN or Inf",
    "SwapEMAWeights": "no equivalent: keep an average of the variables in a callback of your own",
}


def check_callbacks(callbacks: Sequence[Any]) -> None:
    """Refuse, before training starts, a Keras callback that cannot work on a solver."""
    for c in callbacks:
        if not isinstance(c, keras.callbacks.Callback):
            raise TypeError(f"callbacks must be keras.callbacks.Callback instances, got {type(c).__name__}")
        for name, instead in UNSUPPORTED_CALLBACKS.items():
            if isinstance(c, getattr(keras.callbacks, name)):
                raise TypeError(f"keras.callbacks.{name} does not work on a bilevel solver; use {instead}")


def _validation_callbacks(validation_data: Any, metrics: Any, model: Any, batch_size: int) -> list:
    if validation_data is None:
        if metrics:
            raise ValueError("metrics= are evaluated on validation_data=; give both")
        return []
    from penalty_tf.validation import Validation
    return [Validation(validation_data, metrics, model=model, batch_size=batch_size)]


# ------------------------------------------------------------------------- the loop


def run(solver: Any, dataset: Any, epochs: int = 1, lower_steps: int = 1,
        callbacks: Sequence[keras.callbacks.Callback] = (), *, initial_epoch: int = 0,
        verbose: int = 1, on_nonfinite: str = "stop", batch_size: Optional[int] = None,
        shuffle: bool = True, seed: Optional[int] = None, steps_per_epoch: Optional[int] = None,
        validation_data: Any = None, metrics: Any = (), validation_model: Any = None,
        validation_batch_size: int = 256, steps_per_execution: int = 1,
        **counts: int) -> keras.callbacks.History:
    """Run ``solver.step(batch, lower_steps)`` over ``dataset`` for epochs
    ``initial_epoch … epochs - 1`` (Keras' ``fit`` convention).

    Args:
      solver: any `BilevelSolver`.
      dataset: a `tf.data.Dataset` (distributed over the solver's strategy, if it was built
        under one), any re-iterable of batches (one pass is one epoch), or a tuple / dict
        of arrays of one length with ``batch_size`` (sliced into shuffled minibatches).
      epochs: index of the last epoch + 1.
      lower_steps: T, lower-level steps per upper-level iteration.
      callbacks: `keras.callbacks.Callback` instances (this package's, or Keras' own that
        need only logs and ``model.stop_training``: EarlyStopping, CSVLogger,
        LambdaCallback; those that cannot work are refused before training, naming the
        alternative).
      initial_epoch: first epoch (e.g. the value `Checkpoint.restore` returned).
      verbose: 1 adds a `ProgressBar` unless one is in ``callbacks``; 0 is silent.
      on_nonfinite: ``"stop"`` ends the run on `NonFiniteError`, prints it and returns the
        history with ``history.error`` set; ``"raise"`` re-raises after telling the callbacks.
      batch_size, shuffle, seed: for array input: minibatch size, reshuffle every epoch,
        the shuffle's seed.
      steps_per_epoch: batches per epoch of a `tf.data.Dataset` (default: its length; needed
        for one that repeats forever).
      validation_data, metrics, validation_model, validation_batch_size: evaluate
        ``metrics`` on ``validation_data`` after every epoch into ``val_<name>`` logs (see
        `penalty_tf.callbacks.Validation`, which these build).
      steps_per_execution: upper iterations per graph call (Keras' ``steps_per_execution``):
        N > 1 runs N iterations on N successive batches in one call
        (`BilevelSolver.steps_from`), removing the host round trip of each iteration; the
        iterates are the same as with 1. Needs a `tf.data.Dataset` (or arrays with
        ``batch_size``). As in Keras, the batch hooks of the callbacks
        (``on_train_batch_begin/end``) are called once per call, with the logs of its last
        iteration, so a callback that must act between iterations needs 1 (the default);
        epoch logs are still the means over every iteration. An epoch's last call runs the
        iterations that remain.
      **counts: further loop counts of the solver (``linear_steps`` for ApproxGrad).

    Returns:
      a `keras.callbacks.History`: ``history.history[name]`` is the list of epoch values.
    """
    if on_nonfinite not in ("stop", "raise"):
        raise ValueError(f"on_nonfinite must be 'stop' or 'raise', got {on_nonfinite!r}")
    epochs, initial_epoch = int(epochs), int(initial_epoch)
    if not 0 <= initial_epoch <= epochs:
        raise ValueError(f"need 0 <= initial_epoch <= epochs, got initial_epoch {initial_epoch}, epochs {epochs}")
    callbacks = _validation_callbacks(validation_data, metrics, validation_model, validation_batch_size) \
        + list(callbacks)
    check_callbacks(callbacks)
    feed = DataFeed(solver, dataset, epochs_to_run=epochs - initial_epoch, steps_per_epoch=steps_per_epoch,
                    batch_size=batch_size, shuffle=shuffle, seed=seed, initial_epoch=initial_epoch)
    per_call = _steps_per_execution(steps_per_execution, feed)
    history = keras.callbacks.History()
    history.error = None
    if verbose and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(ProgressBar())
    callbacks.append(history)
    for c in callbacks:
        c.set_model(solver)
        c.set_params({"epochs": epochs, "steps": feed.steps, "verbose": verbose})
        if hasattr(c, "set_data_iterator") and feed.iterator is not None:
            c.set_data_iterator(feed.iterator)
    solver.stop_training = False
    solver.epoch = initial_epoch
    for c in callbacks:
        c.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        solver.epoch = epoch
        for c in callbacks:
            c.on_epoch_begin(epoch)
        try:
            if per_call == 1:
                logs = run_epoch(solver, feed.epoch(), lower_steps, callbacks, counts)
            else:
                logs = run_epoch_in_calls(solver, feed, per_call, lower_steps, callbacks, counts)
        except NonFiniteError as error:
            history.error = error
            for c in callbacks:
                if hasattr(c, "on_nonfinite"):
                    c.on_nonfinite(error)
            if on_nonfinite == "raise":
                raise
            print(f"run stopped at epoch {epoch}: {error}", file=sys.stderr)
            break
        if not logs:
            raise ValueError(f"epoch {epoch} had no batches: the data is empty or was used up "
                             "(a one-pass iterator?)")
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


def _steps_per_execution(value: Any, feed: DataFeed) -> int:
    n = int(value)
    if n < 1 or n != value:
        raise ValueError(f"steps_per_execution must be an integer >= 1, got {value!r}")
    if n > 1 and feed.iterator is None:
        raise TypeError("steps_per_execution > 1 reads the batches inside the graph and needs a tf.data.Dataset "
                        "of known length (or steps_per_epoch=) or arrays with batch_size=; this data is a "
                        "Python iterable, which only steps_per_execution=1 can read")
    return n


def run_epoch_in_calls(solver: Any, feed: DataFeed, per_call: int, lower_steps: int,
                       callbacks: Sequence[keras.callbacks.Callback], counts: dict) -> dict[str, float]:
    """One epoch of ``feed.steps`` iterations, ``per_call`` per graph call
    (`BilevelSolver.steps_from` on the feed's iterator); returns the epoch logs."""
    seen: list[dict[str, float]] = []
    while len(seen) < feed.steps:
        first = len(seen)
        for c in callbacks:
            c.on_train_batch_begin(first)
        out = solver.steps_from(feed.iterator, min(per_call, feed.steps - first), lower_steps, **counts)
        rows = _rows(out)
        if not rows:
            break
        rates = batch_logs(solver, {})
        seen.extend(dict(row, **rates) for row in rows)
        for c in callbacks:
            c.on_train_batch_end(len(seen) - 1, seen[-1])
        if solver.stop_training:
            break
    return epoch_logs(seen, solver.state_outputs)


def _rows(out: Mapping[str, tf.Tensor]) -> list[dict[str, float]]:
    """The per-iteration outputs of `BilevelSolver.steps_from` as one dict per iteration."""
    columns = {k: v.numpy() for k, v in out.items() if k not in MONITOR_OUTPUTS + ("done",)}
    return [{k: float(v[i]) for k, v in columns.items()} for i in range(int(out["done"]))]


def refit(solver: Any, dataset: Any, epochs: int = 1, optimizer: Any = 1e-3, *, reinitialize: bool = True,
          batch_size: Optional[int] = None, shuffle: bool = True, seed: Optional[int] = None,
          steps_per_epoch: Optional[int] = None) -> dict[str, list[float]]:
    """Train the lower level alone with u fixed: ``v <- opt(v, grad_v g(u, v))`` for every
    batch of ``epochs`` epochs, after re-initialising v (`BilevelSolver.reset_lower`) when
    ``reinitialize``; e.g. retraining a model on the importance weights just learnt.

    ``optimizer``: a learning rate (TF1-style Adam) or a Keras optimizer; a fresh one (its
    moments start at zero). The lower level's box bounds are applied after every step.
    Data as for `run`. Returns ``{"g": [mean g of every epoch]}``.
    """
    from penalty_tf import autodiff
    from penalty_tf.solvers.variables import make_optimizers

    if solver.strategy is not None:
        raise NotImplementedError("refit under a tf.distribute strategy: train the model with keras fit instead")
    if reinitialize:
        solver.reset_lower()
    variables = solver.lower.variables
    (opt,) = make_optimizers([optimizer], 1, "refit optimizer")
    opt.build(variables)

    def step(batch):
        loss, grads = autodiff.gradient(lambda: solver.lower_loss(batch), variables)
        opt.apply(grads, variables)
        solver.lower.project()
        return loss

    compiled = tf.function(step, autograph=False)
    feed = DataFeed(solver, dataset, epochs_to_run=epochs, steps_per_epoch=steps_per_epoch,
                    batch_size=batch_size, shuffle=shuffle, seed=seed)
    means = []
    for _ in range(int(epochs)):
        values = [float(compiled(batch)) for batch in feed.epoch()]
        if not values:
            raise ValueError("refit: an epoch had no batches")
        means.append(float(np.mean(values)))
        if not np.isfinite(means[-1]):
            raise NonFiniteError(f"refit: g became {means[-1]} in epoch {len(means) - 1}; lower the learning rate")
    return {"g": means}


class ProgressBar(keras.callbacks.Callback):
    """A `keras.utils.Progbar` per epoch showing the running epoch means of f, g and the
    last value of the schedule state (Penalty's rho); its final line shows exactly the
    epoch logs that History records.

    Args:
      keys: the log entries to show.
    """

    def __init__(self, keys: Sequence[str] = ("f", "g", "rho")):
        super().__init__()
        self.keys = tuple(keys)
        self.bar = None
        self.steps: Optional[int] = None

    def on_train_begin(self, logs=None):
        self.steps = self.params.get("steps")

    def on_epoch_begin(self, epoch, logs=None):
        print(f"Epoch {epoch + 1}/{self.params['epochs']}")
        self.bar = keras.utils.Progbar(self.steps, stateful_metrics=self.keys)
        self.seen = []
        self.position = 0

    def _shown(self, logs: dict[str, float]) -> list[tuple[str, float]]:
        return [(k, logs[k]) for k in self.keys if k in logs]

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append(dict(logs))
        self.position = batch + 1       # with steps_per_execution > 1, hooks come once per call
        if self.steps is None or self.position < self.steps:   # the last line is the epoch's
            self.bar.update(self.position, self._shown(epoch_logs(self.seen, self.model.state_outputs)))

    def on_epoch_end(self, epoch, logs=None):
        if self.steps is None:
            self.steps = self.position      # known from the second epoch on
        self.bar.target = self.position
        self.bar.update(self.position, self._shown(logs), finalize=True)
