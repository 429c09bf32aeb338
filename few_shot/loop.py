"""Meta-training through the library loop: `BilevelSolver.run`, one meta-iteration per epoch.

The dataset is `MetaBatches` (every pass samples one meta-batch); the callbacks do the rest
of the original's loop, at every meta-iteration in this order:

1. `MetaIterationClock` starts the clock, `ResetClassifiers` draws fresh classifiers (the
   solver's state is kept: faithful quirk, `few_shot.problem`);
2. the library loop runs the solver's step on the meta-batch;
3. `MetaIterationClock` records the step's losses and seconds in the `Record`;
4. `penalty_tf.callbacks.EvaluateEvery` runs `MetaTest` after every ``eval_every``
   meta-iterations and after the last one;
5. `SaveRun` checkpoints after every ``checkpoint_every`` meta-iterations and every
   evaluation, and rewrites the outputs after every evaluation;
6. `StopAfter` (the hidden ``--stop-after``) ends the process's share early, as a kill would.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from few_shot.meta_test import MetaTester, summarize_accuracies
from few_shot.problem import FewShotProblem
from few_shot.tasks import TaskSampler
from penalty_tf.checkpoints import RunCheckpoint
from penalty_tf.solvers import Penalty


@dataclasses.dataclass
class Record:
    """What a run has done: meta-iterations, the evaluations (``history``), the training
    seconds, and of this process only the last step's losses and every step's seconds."""

    done: int = 0
    history: list = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0
    last: dict = dataclasses.field(default_factory=dict)
    step_seconds: list = dataclasses.field(default_factory=list)

    def state(self) -> dict[str, Any]:
        """The part a checkpoint keeps (its JSON state)."""
        return {"done": self.done, "history": self.history, "train_seconds": self.train_seconds}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Record":
        return cls(done=state["done"], history=state["history"], train_seconds=state["train_seconds"])


class MetaBatches:
    """The loop's dataset: each pass yields one meta-batch of ``tasks`` tasks, as tensors."""

    def __init__(self, sampler: TaskSampler, tasks: int):
        self.sampler, self.tasks = sampler, tasks

    def __iter__(self):
        yield tuple(tf.constant(a) for a in self.sampler.sample(self.tasks))


class ResetClassifiers(keras.callbacks.Callback):
    """Fresh classifiers W ~ N(0, 0.01^2), b = 0.001 before every meta-iteration."""

    def __init__(self, problem: FewShotProblem, rng: np.random.Generator):
        super().__init__()
        self.problem, self.rng = problem, rng

    def on_epoch_begin(self, epoch, logs=None):
        self.problem.reset_classifiers(self.rng)


class MetaIterationClock(keras.callbacks.Callback):
    """Per meta-iteration: its wall seconds (from before the classifier reset to the end of
    the step) and the step's outputs go into the `Record`; the progress bar shows f and g."""

    def __init__(self, record: Record, bar: Any, outputs: tuple[str, ...]):
        super().__init__()
        self.record, self.bar, self.outputs = record, bar, outputs
        self.start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        record = self.record
        record.step_seconds.append(time.perf_counter() - self.start)
        record.train_seconds += record.step_seconds[-1]
        record.done += 1
        record.last = {k: logs[k] for k in self.outputs if k in logs}
        self.bar.update(record.done, values=[("f", record.last["f"]), ("g", record.last["g"])])


class MetaTest:
    """`EvaluateEvery`'s evaluation: the meta-test of the current encoder, appended to the
    record's history as an evaluation entry; returns its summary (`summarize_accuracies`)."""

    def __init__(self, tester: MetaTester, sampler: TaskSampler, init_rng: np.random.Generator,
                 settings: Any, dim: int, solver: Any, record: Record):
        self.tester, self.sampler, self.init_rng = tester, sampler, init_rng
        self.settings, self.dim, self.solver, self.record = settings, dim, solver, record

    def __call__(self) -> dict[str, float]:
        s, record = self.settings, self.record
        start = time.perf_counter()
        accs = self.tester.evaluate(self.sampler, self.init_rng, s.test_tasks, s.meta_batch, self.dim)
        summary = summarize_accuracies(accs)
        entry = {"iteration": record.done, **summary, "eval_seconds": time.perf_counter() - start,
                 "train_seconds": record.train_seconds, "losses": record.last,
                 "accuracies": accs.tolist()}
        if isinstance(self.solver, Penalty):   # rho, lambda, eps and the learning rates
            entry["solver_state"] = self.solver.state()
        record.history.append(entry)
        if not s.quiet:
            print(f"\nmeta-it {record.done}: meta-test accuracy {entry['acc_mean']:.2f} % "
                  f"± {entry['acc_ci95']:.2f} (95 % CI, {entry['tasks']} tasks); "
                  f"f={record.last['f']:.4f} g={record.last['g']:.4f}")
        return summary


class SaveRun(keras.callbacks.Callback):
    """Checkpoint after every ``every`` meta-iterations and after every evaluation (an epoch
    whose logs hold ``acc_mean``), then, after an evaluation, ``write_outputs()``."""

    def __init__(self, checkpoint: RunCheckpoint, record: Record, every: int,
                 write_outputs: Callable[[], Any]):
        super().__init__()
        self.checkpoint, self.record, self.every = checkpoint, record, every
        self.write_outputs = write_outputs

    def on_epoch_end(self, epoch, logs=None):
        evaluated = "acc_mean" in logs
        if evaluated or (epoch + 1) % self.every == 0:
            self.checkpoint.save(**self.record.state())
        if evaluated:
            self.write_outputs()


class StopAfter(keras.callbacks.Callback):
    """Stop after ``count`` meta-iterations of this process, unless that is the last one
    (tests: a run killed at that point)."""

    def __init__(self, count: int):
        super().__init__()
        self.count, self.seen = count, 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen >= self.count and epoch + 1 < self.params["epochs"]:
            self.model.stop_training = True
