"""Shared machinery of the MNIST data-augmentation poisoning attacks (docs/original.md §3.8).

The attacker adds ``npoison`` points (u, the poison images, clipped to [0, 1]) with fixed
labels to the 1,000 clean training points of a regularised multinomial logistic
regression (v = W, 784 x 10, no bias, Glorot-uniform)::

    g(u, W) = 0.5 * 0.01 * l2_loss(W) + mean CE(softmax([u; X_train] W), [Y_poison; Y_train])
    f(u, W) = sign * mean CE(softmax(X_val W), Y_val)

with ``sign = -1`` for the untargeted attack (maximise the validation loss) and ``+1`` for
the targeted one (minimise the loss w.r.t. the attacker's labels). Everything is full
batch. The protocol of both drivers is `run_attack`: clean training of W (10,001 Adam
steps), the bilevel phase starting from that W, then W is re-initialised and retrained
on the clean points plus the poisons; the metric is measured on the test split. The run
checkpoints after clean training, every ``--checkpoint-every`` bilevel updates and after
the bilevel phase (`poisoning.runs`); ``--resume`` continues from the last checkpoint.

Speed notes (measured, see poisoning/README.md): the logits of the poisons and of the
clean points are computed by two matmuls and concatenated (concatenating the *inputs*
copies 1,060 x 784 floats per pass and, when u is differentiated, back-propagates to all
1,060 input rows instead of the npoison poison rows). The clean training set is a
constant of the graph inputs (one `batch` dict passed to every compiled call).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from penalty_tf import losses, optimizers, solvers, training
from penalty_tf.datasets import Split
from penalty_tf.paper import experiment, published as paper
from penalty_tf.problem import BilevelProblem
from poisoning import runs, settings as run_settings
from poisoning.settings import Settings

NCLASS = 10
DIM = 784
#: The original's ``0.5 * 0.01 * tf.nn.l2_loss(W)`` = 0.0025 * sum(W^2).
WEIGHT_DECAY = 0.5 * 0.01
#: Adam learning rate of the original's ``train_simple`` (clean training and retraining).
TRAIN_SIMPLE_LR = 1e-3
#: Bilevel updates per graph call (between two progress-bar updates).
CHUNK = 100


def halving_points(settings: Settings) -> list[int]:
    """Numbers of bilevel updates after which lr_u and lr_v are halved (ApproxGrad).

    The original's loop ``for epoch in range(first, ...)`` halves after the update of any
    epoch with ``epoch % 1000 == 0 and epoch != 0``; with ``first = 0`` that is after
    updates 1001, 2001, ...; with ``first = 1`` after updates 1000, 2000, ...
    """
    if settings.halve_every <= 0:
        return []
    points = []
    for i in range(settings.epochs):
        epoch = settings.first_epoch + i
        if epoch % settings.halve_every == 0 and epoch != 0 and i + 1 < settings.epochs:
            points.append(i + 1)   # (a halving after the last update has no effect)
    return points


# ----------------------------------------------------------------------------- data

def to_float_images(x: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 784) in [0, 1] (the original's /255)."""
    return (x.reshape(len(x), DIM).astype(np.float32) / np.float32(255.0))


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NCLASS, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


@dataclasses.dataclass
class Splits(Split):
    """The arrays of one attack (the training, validation and test sets of `Split`, and the
    poisons); labels are integer class indices."""

    x_poison: np.ndarray        # initial poisons
    y_poison: np.ndarray        # their (attacker's) labels
    source_labels: np.ndarray   # the true labels of the images the poisons start from

    def shapes(self) -> dict[str, list[int]]:
        return {k: list(getattr(self, k).shape) for k in ("x_train", "x_val", "x_test", "x_poison")}


# -------------------------------------------------------------------------- the model

def glorot_uniform(rng: np.random.Generator, shape=(DIM, NCLASS)) -> np.ndarray:
    """TF1 ``get_variable``'s default initializer for a 2-D variable: U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


class PoisoningProblem:
    """Variables, losses and the compiled plain training of one poisoning attack.

    ``upper_sign`` is -1 (untargeted) or +1 (targeted). ``batch`` holds every data
    tensor; it is passed to every compiled call (nothing large is baked into a graph).
    """

    def __init__(self, splits: Splits, upper_sign: float, rng: np.random.Generator):
        self.rng = rng
        self.upper_sign = float(upper_sign)
        self.W = tf.Variable(glorot_uniform(rng), name="W")
        self.u = tf.Variable(splits.x_poison.astype(np.float32), name="poisons")
        self.batch = {
            "x_train": tf.constant(splits.x_train, tf.float32),
            "y_train": tf.constant(one_hot(splits.y_train)),
            "x_val": tf.constant(splits.x_val, tf.float32),
            "y_val": tf.constant(one_hot(splits.y_val)),
            "y_poison": tf.constant(one_hot(splits.y_poison)),
        }

    # -- losses ----------------------------------------------------------------------
    def weight_decay(self) -> tf.Tensor:
        """0.0025 * sum(W^2)."""
        return WEIGHT_DECAY * tf.nn.l2_loss(self.W)

    def lower_loss(self, batch: dict) -> tf.Tensor:
        """g: weight decay + mean CE over [poisons; clean training points]."""
        logits = tf.concat([tf.matmul(self.u, self.W), tf.matmul(batch["x_train"], self.W)], 0)
        labels = tf.concat([batch["y_poison"], batch["y_train"]], 0)
        ce = losses.softmax_cross_entropy(labels, logits)
        return self.weight_decay() + tf.reduce_mean(ce)

    def upper_loss(self, batch: dict) -> tf.Tensor:
        """f: ``upper_sign`` x mean CE on the validation set."""
        ce = losses.softmax_cross_entropy(batch["y_val"], tf.matmul(batch["x_val"], self.W))
        return self.upper_sign * tf.reduce_mean(ce)

    def training_loss(self, batch: tuple) -> tf.Tensor:
        """The original's ``train_simple`` loss on ``batch = (x, y)``: weight decay + mean
        fused CE(softmax(x W), y)."""
        x, y = batch
        ce = tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=tf.matmul(x, self.W))
        return self.weight_decay() + tf.reduce_mean(ce)

    def bilevel_problem(self) -> BilevelProblem:
        """min_u f(u, W*(u)), W*(u) = argmin_W g(u, W), the poisons clipped to [0, 1]
        after every u-step (TF1's variable constraint)."""
        return BilevelProblem(self.upper_loss, self.lower_loss, [self.u], [self.W],
                              upper_bounds=(0.0, 1.0))

    # -- plain training (the original's train_simple) ---------------------------------
    def reinitialize_classifier(self) -> None:
        """Fresh Glorot-uniform W (the original's ``global_variables_initializer``)."""
        self.W.assign(glorot_uniform(self.rng))

    def train_simple(self, x: np.ndarray, y: np.ndarray, steps: int, *, quiet: bool,
                     chunk: int = 500) -> float:
        """``steps`` full-batch steps ``W <- Adam(W, grad_W training_loss)`` with a fresh
        TF1-style Adam(1e-3), as compiled loops of ``chunk`` steps. Returns seconds."""
        loop = optimizers.make_train_loop(self.training_loss, [self.W], optimizers.tf1_adam(TRAIN_SIMPLE_LR))
        batch = (tf.constant(x, tf.float32), tf.constant(one_hot(y)))
        bar = experiment.progress(steps, quiet=quiet, unit_name="step")
        start = time.perf_counter()
        for done in range(0, steps, chunk):
            n = min(chunk, steps - done)
            loop(batch, tf.constant(n))
            bar.update(done + n)
        return time.perf_counter() - start

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted classes (argmax of the logits = argmax of the softmax)."""
        return np.argmax(np.asarray(x, np.float32) @ self.W.numpy(), axis=1)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(x) == np.asarray(y)))


def make_solver(method: str, problem: PoisoningProblem, settings: Settings, *,
                jit_compile: bool) -> Optional[solvers.BilevelSolver]:
    """``solvers.make(method)`` on the attack's `BilevelProblem` with ``settings.solver``
    (Penalty: the single-group schedule with nu_0 = 0); None for label flipping."""
    if settings.solver is None:
        return None
    return solvers.make(method, problem.bilevel_problem(), settings.solver, jit_compile=jit_compile)


# ---------------------------------------------------------------------- the protocol

Metric = Callable[[PoisoningProblem], dict[str, float]]


def train_clean(problem: PoisoningProblem, splits: Splits, settings: Settings, metric: Metric,
                quiet: bool) -> dict[str, Any]:
    """Step 1: train W on the clean points; the run's JSON state with the clean metrics."""
    seconds = problem.train_simple(splits.x_train, splits.y_train, settings.retrain_steps, quiet=quiet)
    clean = metric(problem)
    train_accuracy = problem.accuracy(splits.x_train, splits.y_train)
    if not quiet:
        print(f"clean model: train accuracy {train_accuracy:.4f}; " +
              ", ".join(f"{k} {v:.4f}" for k, v in clean.items()))
    return {"clean": clean, "clean_train_accuracy": train_accuracy, "updates": 0, "final": {},
            "timings": {"clean_training_s": seconds}}


def _progress_with_current_values(total: int, quiet: bool, names: list[str]):
    """A progress bar that shows the current f and rho (Progbar averages values otherwise)."""
    if quiet:
        return experiment.progress(total, quiet=True)
    import keras

    return keras.utils.Progbar(total, unit_name="update", stateful_metrics=names)


def _next_stop(done: int, first: bool, limit: int, halvings: list[int], every: int) -> int:
    """Where the next graph call ends: one update for the first call of a process (its
    compilation is timed apart), else the next of ``limit``, a halving point, a multiple of
    `CHUNK` and a checkpoint."""
    if first:
        return done + 1
    return min([limit, done + CHUNK - done % CHUNK, done + every - done % every]
               + [p for p in halvings if p > done])


def run_bilevel(solver: solvers.BilevelSolver, problem: PoisoningProblem, settings: Settings,
                state: dict[str, Any], checkpoint: Any, options: runs.RunOptions, *,
                linear_steps: dict[str, int]) -> bool:
    """Step 2: bilevel updates ``state["updates"]`` .. ``settings.epochs`` on the full batch.

    ApproxGrad's learning rates are halved before the update after each of
    `halving_points`; the checkpoint is saved every ``options.checkpoint_every`` updates
    and at the end. ``state`` is updated in place (updates, final outputs, timings).
    Returns False when ``--stop-after`` ended the process first.
    """
    halvings = halving_points(settings)
    done, timings = state["updates"], state["timings"]
    limit = options.update_limit(done, settings.epochs)
    bar = _progress_with_current_values(settings.epochs, options.quiet, ["f", "rho"])
    first, loop_s, loop_updates = True, 0.0, 0
    while done < limit:
        if done in halvings:
            solver.scale_learning_rates(0.5)
        stop = _next_stop(done, first, limit, halvings, options.checkpoint_every)
        start = time.perf_counter()
        out = solver.steps(problem.batch, stop - done, settings.lower_steps, **linear_steps)
        elapsed = time.perf_counter() - start
        if first:
            timings["first_update_s"] = elapsed
        else:
            loop_s, loop_updates = loop_s + elapsed, loop_updates + stop - done
        timings["bilevel_s"] = timings.get("bilevel_s", 0.0) + elapsed
        timings["ms_per_update"] = 1000.0 * loop_s / max(loop_updates, 1)
        first, done = False, stop
        state.update(updates=done, final=training.step_values(out))
        bar.update(done, values=[(k, state["final"][k]) for k in ("f", "rho") if k in state["final"]])
        if done % options.checkpoint_every == 0 or done == settings.epochs:
            checkpoint.save(**state)
    return done == settings.epochs


def retrain_poisoned(problem: PoisoningProblem, splits: Splits, settings: Settings,
                     state: dict[str, Any], metric: Metric, quiet: bool) -> dict[str, Any]:
    """Step 3: re-initialise W, train it on the clean points plus the poisons (u); the
    metrics of the clean and the poisoned classifier."""
    x_poison, y_poison = problem.u.numpy(), splits.y_poison
    x_new = np.concatenate([splits.x_train, x_poison])
    y_new = np.concatenate([splits.y_train, y_poison])
    problem.reinitialize_classifier()
    timings = dict(state["timings"])
    timings["retraining_s"] = problem.train_simple(x_new, y_new, settings.retrain_steps, quiet=quiet)
    bilevel = {"final": state["final"]} if state["final"] else {}
    return {"clean": state["clean"], "poisoned": metric(problem), "timings": timings,
            "x_poison": x_poison, "y_poison": np.asarray(y_poison), "bilevel": bilevel,
            "clean_train_accuracy": state["clean_train_accuracy"],
            "poisoned_train_accuracy": problem.accuracy(x_new, y_new)}


def run_attack(splits: Splits, *, method: str, settings: Settings, upper_sign: float,
               metric: Metric, seed: int, options: runs.RunOptions,
               jit_compile: bool) -> Optional[dict[str, Any]]:
    """Clean training, the bilevel phase (none for label flipping: the initial poisons of
    ``splits``, validation points with flipped labels, are added as they are), retraining.

    ``metric(problem)`` evaluates the current classifier (e.g. test accuracy). Resumes from
    the checkpoint under ``--resume``; returns None when ``--stop-after`` ended the run (for
    label flipping: after the clean training, whatever its value).
    """
    problem = PoisoningProblem(splits, upper_sign, np.random.default_rng([seed, 1]))
    solver = make_solver(method, problem, settings, jit_compile=jit_compile)
    trackables = {"poisons": problem.u, "classifier": problem.W}
    if solver is not None:
        trackables["solver"] = solver
    checkpoint, state = runs.open_checkpoint(options, {"classifier": problem.rng}, **trackables)
    if state is None:
        state = train_clean(problem, splits, settings, metric, options.quiet)
        checkpoint.save(**state)
    if solver is None and options.stop_after is not None:
        return None   # label flipping has no bilevel phase: a kill test stops after clean training
    linear_steps = {"linear_steps": settings.linear_steps} if method == "approxgrad" else {}
    if solver is not None and not run_bilevel(solver, problem, settings, state, checkpoint, options,
                                              linear_steps=linear_steps):
        return None
    return retrain_poisoned(problem, splits, settings, state, metric, options.quiet)


# ----------------------------------------------------------------------- outputs

def save_grid(path: Path, original: np.ndarray, poisoned: np.ndarray, labels_from: np.ndarray,
              labels_to: np.ndarray, *, max_images: int = 20, title: str = "") -> None:
    """Figs. 5/6 style: originals (top row of each pair) above their poisons, with labels."""
    n = min(len(poisoned), max_images)
    cols = min(n, 10)
    pairs = -(-n // cols)
    fig = experiment.new_figure(figsize=(1.1 * cols, 2.3 * pairs + 0.4))
    axes = fig.subplots(2 * pairs, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, cols)
        top, bottom = axes[2 * r][c], axes[2 * r + 1][c]
        top.imshow(original[i].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        top.set_title(f"{int(labels_from[i])}", fontsize=8)
        bottom.imshow(poisoned[i].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        bottom.set_title(f"-> {int(labels_to[i])}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    experiment.save_figure_atomic(fig, path, dpi=100, bbox_inches="tight")


# ------------------------------------------------------------------------ the scripts

def add_attack_flags(parser: argparse.ArgumentParser, *, methods: list[str]) -> None:
    """The MNIST attacks' flags: the common ones (with ``--resume``), one per setting
    (`poisoning.settings`), ``--xla`` and the checkpoint flags."""
    experiment.add_common_flags(parser, methods=methods, default_method="penalty", epochs=5000,
                                lower_steps=20, resume=True, resume_help=runs.RESUME_HELP)
    run_settings.add_flags(parser, Settings, tuple(methods))
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=False,
                        help="compile the bilevel update with XLA (same maths; slower here: XLA's "
                             "CPU matmuls lose to Eigen's on these skinny products, see README)")
    runs.add_run_flags(parser, checkpoint_every=500)


def start_run(args: argparse.Namespace, name: str,
              check: Optional[Callable[[Settings], None]] = None) -> tuple[Settings, runs.RunOptions, Path]:
    """The settings of the run (written back into ``args``; ``check(settings)`` refuses what the
    attack cannot run), its options and output directory (checked once the flags are, before
    any work); seeds NumPy's global generator, which the splits use in the original's order."""
    settings = run_settings.resolve(args, Settings, name)   # checks every setting's range
    if check is not None:
        check(settings)
    out = experiment.resolve_out_dir(args, name, check=False)
    options = runs.RunOptions.from_args(args, out)
    experiment.check_out_dir(out)
    experiment.seed_everything(args.seed, deterministic=args.deterministic)
    return settings, options, out


def run_metrics(result: dict, splits) -> dict:
    """The result.json metrics both MNIST attacks report besides their Table 5 metric."""
    return {"unit": "percent",
            "clean_train_accuracy": 100.0 * result["clean_train_accuracy"],
            "poisoned_train_accuracy": 100.0 * result["poisoned_train_accuracy"],
            "splits": splits.shapes(), "timings": result["timings"],
            "final_solver_outputs": result["bilevel"].get("final", {})}


def write_outputs(out: Path, name: str, args: argparse.Namespace, splits: Splits,
                  result: dict[str, Any], metrics: dict[str, Any], wall: float,
                  grid_title: str) -> dict[str, Any]:
    """poisons.npz, poisons.png and result.json of one run; then the checkpoint goes."""
    experiment.save_npz_atomic(out / "poisons.npz", x_poison=result["x_poison"],
                               y_poison=result["y_poison"], x_initial=splits.x_poison,
                               y_source=splits.source_labels)
    save_grid(out / "poisons.png", splits.x_poison, result["x_poison"], splits.source_labels,
              result["y_poison"], title=grid_title)
    published = paper.published_dict(table="Table 5", experiment=name, method=args.method,
                                     npoison=args.npoison)
    written = experiment.write_result(out, experiment=name, method=args.method, config=vars(args),
                                      metrics=metrics, published=published, wall_time_s=wall)
    runs.remove_checkpoint(runs.RunOptions.from_args(args, out))
    return written


@dataclasses.dataclass(frozen=True)
class AttackReport:
    """How an MNIST attack is scored: the sign of its upper loss, the test metric (percent
    of the test set the classifier gets right) and the names result.json gives it before and
    after poisoning and to the change the attack aims for."""

    name: str            # the experiment, e.g. "poisoning.untargeted"
    upper_sign: float    # -1: maximise the validation loss (untargeted); +1: minimise (targeted)
    metric: str          # "test_accuracy" / "success_rate"
    clean: str
    poisoned: str
    gain: str            # clean - poisoned (untargeted) or poisoned - clean (targeted)
    headline: str        # what the printed line calls the metric


def attack_and_report(args: argparse.Namespace, settings: Settings, options: runs.RunOptions, out: Path,
                      splits: Splits, report: AttackReport, start: float) -> dict[str, Any]:
    """`run_attack` on ``splits``, then result.json (and the poisons) as ``report`` names them;
    {} when ``--stop-after`` ended the run (tests: a killed run)."""

    def metric(problem):
        return {report.metric: 100.0 * problem.accuracy(splits.x_test, splits.y_test)}

    result = run_attack(splits, method=args.method, settings=settings, upper_sign=report.upper_sign,
                        metric=metric, seed=args.seed, options=options, jit_compile=args.xla)
    if result is None:
        return {}
    clean, poisoned = result["clean"][report.metric], result["poisoned"][report.metric]
    gain = poisoned - clean if report.upper_sign > 0 else clean - poisoned
    metrics = {report.clean: clean, report.poisoned: poisoned, report.gain: gain, **run_metrics(result, splits)}
    kind = report.name.split(".")[-1]
    if not args.quiet:
        print(f"{kind} {args.method}, {settings.npoison} poisons: {report.headline} "
              f"{clean:.2f} % (clean) -> {poisoned:.2f} % (poisoned)")
    return write_outputs(out, report.name, args, splits, result, metrics, time.perf_counter() - start,
                         f"{kind} {args.method}: originals (true label) above poisons (poison label)")
