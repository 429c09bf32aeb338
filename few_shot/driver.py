"""A few-shot run from its settings to its outputs, in named steps (`run`).

Outputs in ``--out``: ``result.json`` (rewritten after every evaluation), ``accuracy.png``,
``accuracies.npz`` (the per-task accuracies of every evaluation) and ``checkpoint/`` (a
`penalty_tf.checkpoints.RunCheckpoint`: the solver, which holds the encoder's and the
classifiers' variables, the optimizers' moments and the schedule, the encoder, the four
random streams, and the record in its JSON state). ``--resume`` continues from it exactly.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from few_shot.meta_test import MetaTester
from few_shot.problem import FewShotProblem, make_solver
from few_shot.settings import RunSettings
from few_shot.tasks import Split, TaskSampler
from penalty_tf.paper import experiment, published as paper

CHECKPOINT = "checkpoint"
#: The run's random streams, each its own NumPy generator seeded ``[seed, index]``.
STREAMS = ("train_tasks", "train_init", "test_tasks", "test_init")


class Parts(NamedTuple):
    """What a run is made of."""

    encoder: Any
    problem: FewShotProblem
    solver: Any
    tester: MetaTester
    streams: dict
    train_sampler: TaskSampler
    test_sampler: TaskSampler


def build(s: RunSettings, train: Split, test: Split, make_encoder: Callable[[], Any]) -> Parts:
    """Encoder, problem, solver, meta-tester, random streams and the two task samplers."""
    encoder = make_encoder()
    problem = FewShotProblem(encoder, s.meta_batch, s.nway, train.image_shape)
    solver = make_solver(s.method, problem, s.solver, correction=s.correction, jit_compile=s.xla)
    tester = MetaTester(encoder, s.test_steps, s.test_lr, jit_compile=s.xla)
    streams = {name: np.random.default_rng([s.seed, i]) for i, name in enumerate(STREAMS)}
    return Parts(encoder, problem, solver, tester, streams,
                 TaskSampler(train, s.nway, s.kshot, streams["train_tasks"], s.query_per_class),
                 TaskSampler(test, s.nway, s.kshot, streams["test_tasks"], s.query_per_class))


def restore(checkpoint, s: RunSettings):
    """The `Record` to continue from: the checkpoint's with ``--resume`` (if there is one),
    else a fresh one. A checkpoint of other settings, a damaged one, or one that has done
    more than ``--iterations`` is an `ExperimentError`."""
    from few_shot.loop import Record
    state = experiment.restore_checkpoint(checkpoint) if s.resume else None
    if state is None:
        return Record()
    try:
        record = Record.from_state(state)
    except (KeyError, TypeError) as error:
        raise experiment.ExperimentError(
            f"cannot resume from {checkpoint.directory}: {checkpoint.sidecar} has no valid {error}; delete "
            f"{checkpoint.directory}{experiment.RESUME_HINT}") from None
    experiment.check_resume_budget(record.done, s.iterations, flag="--iterations", unit="meta-iterations",
                                   directory=checkpoint.directory)
    if not s.quiet:
        print(f"resumed from {checkpoint.directory} at meta-iteration {record.done}")
    return record


def plot_accuracy(history: list[dict], path: Path, title: str) -> None:
    """Meta-test accuracy (mean, 95 % CI bars) against meta-iterations."""
    fig = experiment.new_figure(figsize=(6, 4))
    ax = fig.subplots()
    its = [h["iteration"] for h in history]
    mean = np.array([h["acc_mean"] for h in history])
    ci = np.array([h["acc_ci95"] for h in history])
    ax.errorbar(its, mean, yerr=ci, marker="o", capsize=3)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("meta-test accuracy (%), 95 % CI")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    experiment.save_figure_atomic(fig, path, dpi=110)


def metrics(record) -> dict[str, Any]:
    """result.json's metrics: every evaluation (without the per-task accuracies), the last
    one as ``final``, the meta-iterations done and the seconds (the median step of this
    process after its first, which traces and compiles)."""
    evaluations = [{k: v for k, v in h.items() if k != "accuracies"} for h in record.history]
    steady = record.step_seconds[1:]
    return {"final": evaluations[-1] if evaluations else {}, "evaluations": evaluations,
            "iterations_done": record.done, "train_seconds": record.train_seconds,
            "seconds_per_iteration": float(np.median(steady)) if steady else None,
            "first_step_seconds": record.step_seconds[0] if record.step_seconds else None}


def write_outputs(out: Path, s: RunSettings, experiment_name: str, record) -> dict:
    """result.json, and with an evaluation done accuracy.png and accuracies.npz."""
    if record.history:
        plot_accuracy(record.history, out / "accuracy.png",
                      f"{experiment_name} {s.nway}-way {s.kshot}-shot, {s.method}")
        experiment.save_npz_atomic(out / "accuracies.npz",
                                   **{f"iteration_{h['iteration']}": np.array(h["accuracies"])
                                      for h in record.history})
    published = paper.published_dict(table="Table 4", experiment=experiment_name, method=s.method,
                                      nway=s.nway, kshot=s.kshot)
    wall = record.train_seconds + sum(h["eval_seconds"] for h in record.history)
    return experiment.write_result(out, experiment=experiment_name, method=s.method, config=s.flat(),
                                   metrics=metrics(record), published=published, wall_time_s=wall)


def meta_train(s: RunSettings, parts: Parts, record, checkpoint, write: Callable[[], Any]) -> None:
    """Meta-iterations ``record.done`` … ``iterations - 1`` through `BilevelSolver.run` with
    the callbacks of `few_shot.loop` (in its docstring's order)."""
    from few_shot import loop
    from penalty_tf.callbacks import EvaluateEvery

    bar = experiment.progress(s.iterations, quiet=s.quiet, unit_name="meta-it")
    if record.done:
        bar.update(record.done)
    meta_test = loop.MetaTest(parts.tester, parts.test_sampler, parts.streams["test_init"], s,
                              parts.problem.dim, parts.solver, record)
    callbacks = [loop.MetaIterationClock(record, bar, tuple(parts.solver.outputs)),
                 loop.ResetClassifiers(parts.problem, parts.streams["train_init"]),
                 EvaluateEvery(meta_test, every=s.eval_every),
                 loop.SaveRun(checkpoint, record, s.checkpoint_every, write)]
    if s.stop_after is not None:
        callbacks.append(loop.StopAfter(s.stop_after))
    counts = {"linear_steps": s.linear_steps} if s.method == "approxgrad" else {}
    parts.solver.run(loop.MetaBatches(parts.train_sampler, s.meta_batch), epochs=s.iterations,
                     lower_steps=s.lower_steps, callbacks=callbacks, initial_epoch=record.done,
                     verbose=0, on_nonfinite="raise", **counts)


def run(s: RunSettings, *, experiment_name: str, train: Split, test: Split,
        make_encoder: Callable[[], Any]) -> dict:
    """Seed, build, restore (``--resume``), meta-train, write the outputs. Returns result.json's
    content, or {} when ``--stop-after`` ended the process before the last meta-iteration."""
    from penalty_tf.checkpoints import RunCheckpoint

    out = Path(s.out)
    experiment.seed_everything(s.seed, deterministic=s.deterministic)
    parts = build(s, train, test, make_encoder)
    checkpoint = RunCheckpoint(out / CHECKPOINT, s, rngs=parts.streams, solver=parts.solver,
                               encoder=parts.encoder)
    record = restore(checkpoint, s)
    write = functools.partial(write_outputs, out, s, experiment_name, record)
    meta_train(s, parts, record, checkpoint, write)
    return write() if record.done >= s.iterations else {}
