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
on the clean points plus the poisons; the metric is measured on the test split.

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
from typing import Any, Callable

import numpy as np

from penalty_tf import losses
from penalty_tf.paper import experiment, published as paper

NCLASS = 10
DIM = 784
#: The original's ``0.5 * 0.01 * tf.nn.l2_loss(W)`` = 0.0025 * sum(W^2).
WEIGHT_DECAY = 0.5 * 0.01
#: Adam learning rate of the original's ``train_simple`` (clean training and retraining).
TRAIN_SIMPLE_LR = 1e-3


# ------------------------------------------------------------------------- settings

@dataclasses.dataclass(frozen=True)
class Settings:
    """One attack's hyperparameters (the original's driver constants)."""

    lr_u: float
    lr_v: float
    epochs: int                 # bilevel updates
    lower_steps: int            # T (niter / niter1)
    rho0: float = 10.0
    lamb0: float = 1.0
    eps0: float = 1.0
    nu0: float = 0.0
    c_rho: float = 1.1
    c_lamb: float = 0.9
    c_eps: float = 0.9
    lr_p: float = 0.0           # ApproxGrad only
    sig: float = 1e-3           # ApproxGrad only
    linear_steps: int = 20      # ApproxGrad only (niter2)
    halve_every: int = 0        # ApproxGrad: lr_u, lr_v halved after updates k*halve_every
    first_epoch: int = 0        # ApproxGrad: the epoch counter's start (0 or 1), see halving
    retrain_steps: int = 10001  # full_epochs of train_simple
    npoison: int = 60


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
class Splits:
    """The arrays of one attack; labels are integer class indices."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_poison: np.ndarray        # initial poisons
    y_poison: np.ndarray        # their (attacker's) labels
    source_labels: np.ndarray   # the true labels of the images the poisons start from

    def shapes(self) -> dict[str, list[int]]:
        return {k: list(getattr(self, k).shape) for k in ("x_train", "x_val", "x_test", "x_poison")}


# -------------------------------------------------------------------------- the model

def glorot_uniform(rng: np.random.Generator, shape=(DIM, NCLASS)) -> np.ndarray:
    """TF1 ``get_variable``'s default initializer for a 2-D variable."""
    limit = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


class PoisoningProblem:
    """Variables, losses and the compiled plain-training loop of one poisoning attack.

    ``upper_sign`` is -1 (untargeted) or +1 (targeted). ``batch`` holds every data
    tensor; it is passed to every compiled call (nothing large is baked into a graph).
    """

    def __init__(self, splits: Splits, upper_sign: float, rng: np.random.Generator):
        import tensorflow as tf

        self.tf = tf
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
        self._train_fn = None

    # -- losses (closures for the solvers) ------------------------------------------------
    def weight_decay(self):
        return WEIGHT_DECAY * self.tf.nn.l2_loss(self.W)

    def lower_loss(self, batch: dict) -> Any:
        """g: weight decay + mean CE over [poisons; clean training points]."""
        tf = self.tf
        logits = tf.concat([tf.matmul(self.u, self.W), tf.matmul(batch["x_train"], self.W)], 0)
        labels = tf.concat([batch["y_poison"], batch["y_train"]], 0)
        ce = losses.softmax_cross_entropy(labels, logits)
        return self.weight_decay() + tf.reduce_mean(ce)

    def upper_loss(self, batch: dict) -> Any:
        """f: ``upper_sign`` x mean CE on the validation set."""
        tf = self.tf
        ce = losses.softmax_cross_entropy(batch["y_val"], tf.matmul(batch["x_val"], self.W))
        return self.upper_sign * tf.reduce_mean(ce)

    # -- plain training (the original's train_simple) --------------------------------------
    def reinitialize_classifier(self) -> None:
        """Fresh Glorot-uniform W (the original's ``global_variables_initializer``)."""
        self.W.assign(glorot_uniform(self.rng))

    def train_simple(self, x: np.ndarray, y: np.ndarray, steps: int, *, quiet: bool,
                     chunk: int = 500, label: str = "train") -> float:
        """``steps`` full-batch Adam(1e-3) steps on weight decay + mean CE(x, y) with a fresh
        TF1-style Adam (epsilon 1e-8), as one compiled loop per chunk. Returns seconds."""
        tf = self.tf
        from penalty_tf.solvers import tf1_adam

        optimizer = tf1_adam(TRAIN_SIMPLE_LR)
        optimizer.build([self.W])
        W = self.W

        def loop(xb, yb, n):
            def body(i):
                with tf.GradientTape() as tape:
                    ce = tf.nn.softmax_cross_entropy_with_logits(labels=yb, logits=tf.matmul(xb, W))
                    loss = self.weight_decay() + tf.reduce_mean(ce)
                optimizer.apply([tape.gradient(loss, W)], [W])
                return (i + 1,)

            tf.while_loop(lambda i: i < n, body, (tf.constant(0),))
            return tf.constant(0)

        fn = tf.function(loop, autograph=False, jit_compile=False)
        xb, yb = tf.constant(x, tf.float32), tf.constant(one_hot(y))
        bar = experiment.progress(steps, quiet=quiet, unit_name="step")
        start = time.perf_counter()
        done = 0
        while done < steps:
            n = min(chunk, steps - done)
            fn(xb, yb, tf.constant(n))
            done += n
            bar.update(done)
        return time.perf_counter() - start

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted classes (argmax of the logits = argmax of the softmax)."""
        return np.argmax(np.asarray(x, np.float32) @ self.W.numpy(), axis=1)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(x) == np.asarray(y)))


# --------------------------------------------------------------------------- solvers

def build_solver(method: str, problem: PoisoningProblem, settings: Settings, *, jit_compile: bool):
    """Penalty or ApproxGrad on the poisoning problem with the original's settings.

    Penalty: single-group schedule (lambda, eps x0.9, lrs x0.9 on convergence, nu_0 = 0).
    Both: the poisons are clipped to [0, 1] after every u-step (TF1 variable constraint).
    """
    from penalty_tf.solvers import ApproxGrad, Penalty, PenaltySchedule

    s = settings
    common = dict(upper_bounds=(0.0, 1.0), jit_compile=jit_compile)
    if method == "penalty":
        schedule = PenaltySchedule.single_group(rho0=s.rho0, lamb0=s.lamb0, eps0=s.eps0, nu0=s.nu0,
                                                c_rho=s.c_rho, c_lamb=s.c_lamb, c_eps=s.c_eps)
        return Penalty(problem.upper_loss, problem.lower_loss, [problem.u], [problem.W],
                       upper_optimizer=s.lr_u, lower_optimizer=s.lr_v, schedule=schedule, **common)
    if method == "approxgrad":
        return ApproxGrad(problem.upper_loss, problem.lower_loss, [problem.u], [problem.W],
                          upper_optimizer=s.lr_u, lower_optimizer=s.lr_v,
                          linear_optimizer=s.lr_p, sig=s.sig, **common)
    raise ValueError(f"no bilevel solver for method {method!r}")


def _progress_with_current_values(total: int, quiet: bool, names: list[str]):
    """A progress bar that shows the current f and rho (Progbar averages values otherwise)."""
    if quiet:
        return experiment.progress(total, quiet=True)
    import keras

    return keras.utils.Progbar(total, unit_name="update", stateful_metrics=names)


def run_bilevel(solver, problem: PoisoningProblem, method: str, settings: Settings, *,
                quiet: bool, chunk: int = 100) -> dict[str, Any]:
    """``settings.epochs`` bilevel updates on the full batch, ``chunk`` per graph call.

    ApproxGrad's lr halving happens between calls at the original's update counts
    (`halving_points`), by assignment (no retracing). Returns timings and last outputs.
    """
    counts = {"linear_steps": settings.linear_steps} if method == "approxgrad" else {}
    halvings = halving_points(settings) if method == "approxgrad" else []
    lr_u, lr_v = settings.lr_u, settings.lr_v
    # Compile outside the timed loop (the TF1 original had no compile step): trace on a
    # throw-away copy of the state would be costly; instead run the first update alone
    # and time it separately.
    start = time.perf_counter()
    out = solver.steps(problem.batch, 1, settings.lower_steps, **counts)
    first_s = time.perf_counter() - start
    done = 1
    bar = _progress_with_current_values(settings.epochs, quiet, ["f", "rho"])
    bar.update(done)
    start = time.perf_counter()
    while done < settings.epochs:
        stop = min([settings.epochs] + [p for p in halvings if p > done]
                   + [done + chunk - done % chunk])
        if done in halvings:
            lr_u, lr_v = lr_u * 0.5, lr_v * 0.5
            solver.set_learning_rates(upper=lr_u, lower=lr_v)
        out = solver.steps(problem.batch, stop - done, settings.lower_steps, **counts)
        done = stop
        values = [("f", float(out["f"]))]
        if "rho" in out:
            values.append(("rho", float(out["rho"])))
        bar.update(done, values=values)
    loop_s = time.perf_counter() - start
    last = {k: float(v) for k, v in out.items() if k not in ("status", "failed_iteration")}
    per_update = loop_s / max(settings.epochs - 1, 1)
    return {"first_update_s": first_s, "bilevel_s": first_s + loop_s,
            "ms_per_update": 1000.0 * per_update, "final": last}


# ---------------------------------------------------------------------- the protocol

def run_attack(splits: Splits, *, method: str, settings: Settings, upper_sign: float,
               metric: Callable[[PoisoningProblem], dict[str, float]], seed: int, quiet: bool,
               jit_compile: bool) -> dict[str, Any]:
    """Clean training, the bilevel phase (or label flipping), retraining; the metrics.

    ``metric(problem)`` evaluates the current classifier (e.g. test accuracy). For
    ``method == "label-flip"`` the initial poisons of ``splits`` (validation points with
    flipped labels) are added as they are: no bilevel phase.
    """
    rng = np.random.default_rng([seed, 1])
    problem = PoisoningProblem(splits, upper_sign, rng)
    timings = {}
    clean_s = problem.train_simple(splits.x_train, splits.y_train, settings.retrain_steps, quiet=quiet)
    clean = metric(problem)
    timings["clean_training_s"] = clean_s
    clean_train_acc = problem.accuracy(splits.x_train, splits.y_train)
    if not quiet:
        print(f"clean model: train accuracy {clean_train_acc:.4f}; " +
              ", ".join(f"{k} {v:.4f}" for k, v in clean.items()))

    info: dict[str, Any] = {}
    if method == "label-flip":
        x_poison, y_poison = splits.x_poison, splits.y_poison
    else:
        solver = build_solver(method, problem, settings, jit_compile=jit_compile)
        info = run_bilevel(solver, problem, method, settings, quiet=quiet)
        timings.update(bilevel_s=info.pop("bilevel_s"), first_update_s=info.pop("first_update_s"),
                       ms_per_update=info.pop("ms_per_update"))
        x_poison, y_poison = problem.u.numpy(), splits.y_poison
    x_new = np.concatenate([splits.x_train, x_poison])
    y_new = np.concatenate([splits.y_train, y_poison])
    problem.reinitialize_classifier()
    timings["retraining_s"] = problem.train_simple(x_new, y_new, settings.retrain_steps, quiet=quiet)
    poisoned = metric(problem)
    return {"clean": clean, "poisoned": poisoned, "timings": timings,
            "x_poison": np.asarray(x_poison, np.float32), "y_poison": np.asarray(y_poison),
            "bilevel": info, "clean_train_accuracy": clean_train_acc,
            "poisoned_train_accuracy": problem.accuracy(x_new, y_new)}


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


def add_attack_flags(parser: argparse.ArgumentParser, *, default_epochs: int) -> None:
    """Flags shared by the two MNIST attacks (beyond `experiment.add_common_flags`)."""
    parser.add_argument("--npoison", type=int, default=None,
                        help="number of poisoned points, 10..60 = 1 %%..6 %% of the 1,000 clean "
                             "points (the original's README 'line 15' / 'line 36'); default 60 "
                             "(targeted ApproxGrad: 50, as its driver)")
    parser.add_argument("--retrain-steps", type=int, default=10001,
                        help="Adam steps of clean training and of retraining (full_epochs)")
    parser.add_argument("--linear-steps", type=int, default=20,
                        help="ApproxGrad: linear-system steps per update (niter2)")
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=False,
                        help="compile the bilevel update with XLA (same maths; slower here: XLA's "
                             "CPU matmuls lose to Eigen's on these skinny products, see README)")


def check_args(args: argparse.Namespace) -> None:
    if args.npoison < 1:
        raise experiment.ExperimentError(f"--npoison must be >= 1, got {args.npoison}")
    if args.npoison > 1000:
        raise experiment.ExperimentError(f"--npoison must be <= 1000, got {args.npoison}")
    if args.retrain_steps < 1:
        raise experiment.ExperimentError(f"--retrain-steps must be >= 1, got {args.retrain_steps}")
    if args.linear_steps < 0:
        raise experiment.ExperimentError(f"--linear-steps must be >= 0, got {args.linear_steps}")


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
    """poisons.npz, poisons.png and result.json of one run."""
    experiment.save_npz_atomic(out / "poisons.npz", x_poison=result["x_poison"],
                               y_poison=result["y_poison"], x_initial=splits.x_poison,
                               y_source=splits.source_labels)
    save_grid(out / "poisons.png", splits.x_poison, result["x_poison"], splits.source_labels,
              result["y_poison"], title=grid_title)
    published = paper.published_dict(table="Table 5", experiment=name, method=args.method,
                                     npoison=args.npoison)
    return experiment.write_result(out, experiment=name, method=args.method, config=vars(args),
                                   metrics=metrics, published=published, wall_time_s=wall)
