"""Shared machinery of the few-shot experiments (docs/original.md §3.5).

The bilevel problem: u = the encoder's variables, v = the T classifiers of a meta-batch.

    g(u, v) = mean_t  CE(classifier_t(encoder(support_t)), support labels_t)
    f(u, v) = mean_t  CE(classifier_t(encoder(query_t)),   query labels_t)

**Batched classifiers.** The original built one classifier variable pair per task and
one Adam per task. Here the T classifiers are ONE weight tensor W (T, d, N) and ONE bias
b (T, N), and a meta-iteration is one compiled graph call (`BilevelSolver.step`). The
solvers' Adam on the batched variable equals T per-task Adams: Adam is element-wise, and
the original's per-task Adams had equal learning rates, always stepped together (equal
step counters, equal bias corrections) and were decayed together by the multi-group
Penalty (every learning rate x0.99). Penalty's nu, its tolerance test (sums of squares
over all groups) and ApproxGrad's p and per-group residual are likewise unchanged by the
grouping, because task t's losses depend only on (u, W_t, b_t). A test checks batched
against per-task groups for both solvers.

**Faithful quirks** (each reproduced by default, docs/original.md §3.5.2, §1.6, §5.3 #41):

* `reset_classifiers` re-draws W and b before every meta-iteration but does **not**
  reset the bilevel solver's state: the classifiers' Adam moments, Penalty's nu and
  ApproxGrad's p (and its Adam) persist across meta-iterations although each task slot
  holds a new task every time.
* ApproxGrad corrects the encoder with **task 0's** implicit term only
  (`task_zero_weights`, ``correction="first"``); ``--correction all`` sums over tasks.
* The meta-test classifier Adam is fresh for every meta-test meta-batch, with learning
  rate 1e-3 (Penalty scripts) or lr_v (ApproxGrad scripts: 1e-2 on Omniglot).
* Batch norm always uses the statistics of the batch at hand, per task and split,
  including when predicting the query sets (transductive).

**Meta-test** (§3.5.5): ``test_tasks`` (600) tasks from the meta-test classes, in
meta-batches of the training meta-batch size; the encoder is frozen, so each task's
support and query features are computed once, then 100 Adam steps train the fresh
classifiers on the support features, and the accuracy on the query set is recorded per
task. Reported: mean, sd (sample, ddof=1) and the 95 % confidence half-width
1.96 sd / sqrt(tasks) over the tasks. The original printed only the mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from penalty_tf.paper import experiment, published as paper

#: Query images per class in every task (the original's ntest_per_cls).
QUERY_PER_CLASS = 15


# ----------------------------------------------------------------------------- data

@dataclasses.dataclass
class Split:
    """Images of one meta-split: ``images`` (n, H, W, C) float32 or uint8 (scaled by 1/255
    when sampled), integer ``labels`` (n,), and the class ids that belong to the split."""

    images: np.ndarray
    labels: np.ndarray
    classes: np.ndarray

    def __post_init__(self):
        self.classes = np.asarray(self.classes)
        order = np.argsort(self.labels, kind="stable")
        sorted_labels = self.labels[order]
        starts = np.searchsorted(sorted_labels, self.classes, side="left")
        ends = np.searchsorted(sorted_labels, self.classes, side="right")
        # Index lists per class, in ascending index order (as the original's np.argwhere).
        self.members = {int(c): order[s:e] for c, s, e in zip(self.classes, starts, ends)}

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def gather(self, index: np.ndarray) -> np.ndarray:
        """float32 images at ``index`` (any shape); uint8 images are divided by 255."""
        x = self.images[index.reshape(-1)]
        x = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32)
        return x.reshape(*index.shape, *self.image_shape)


class MetaBatch(NamedTuple):
    """One meta-batch: support images (T, N*K, H, W, C), labels (T, N*K); query images
    (T, N*Q, H, W, C), labels (T, N*Q). Labels are class positions 0..N-1 in the task."""

    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray


class FeatureBatch(NamedTuple):
    """A meta-batch whose images were replaced by encoder features (T, n, d)."""

    support: Any
    support_labels: Any
    query: Any
    query_labels: Any


class TaskSampler:
    """The original's ``get_tasks`` (docs/original.md §3.5.4) on one split.

    For each task of a meta-batch: the classes not yet used in this meta-batch are
    shuffled and the first N taken (the used list is cleared when fewer than N + 1
    classes would remain, so tasks are disjoint whenever possible); for class position j
    the class's images are shuffled, the first K go to the support set and the next Q to
    the query set, with label j; then the support and query sets are shuffled.
    """

    def __init__(self, split: Split, nway: int, kshot: int, rng: np.random.Generator,
                 query: int = QUERY_PER_CLASS):
        self.split, self.nway, self.kshot, self.query, self.rng = split, nway, kshot, query, rng
        if len(split.classes) < nway:
            raise experiment.ExperimentError(
                f"a {nway}-way task needs {nway} classes; the split has {len(split.classes)}")
        small = [c for c, idx in split.members.items() if len(idx) < kshot + query]
        if small:
            raise experiment.ExperimentError(
                f"{len(small)} classes have fewer than K + {query} = {kshot + query} images "
                f"(e.g. class {small[0]} has {len(split.members[small[0]])})")

    def sample_indices(self, tasks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image indices (T, N*K), (T, N*Q) and the classes chosen (T, N)."""
        n, k, q = self.nway, self.kshot, self.query
        classes = self.split.classes
        support = np.empty((tasks, n * k), np.int64)
        query = np.empty((tasks, n * q), np.int64)
        chosen = np.empty((tasks, n), classes.dtype)
        used: list[int] = []
        for t in range(tasks):
            if len(used) + n >= len(classes):
                used = []
            candidates = classes[~np.isin(classes, used)]
            self.rng.shuffle(candidates)
            chosen[t] = candidates[:n]
            used += [int(c) for c in chosen[t]]
            for j, c in enumerate(chosen[t]):
                idx = self.split.members[int(c)].copy()
                self.rng.shuffle(idx)
                support[t, j * k:(j + 1) * k] = idx[:k]
                query[t, j * q:(j + 1) * q] = idx[k:k + q]
            self.rng.shuffle(support[t])
            self.rng.shuffle(query[t])
        return support, query, chosen

    def sample(self, tasks: int) -> MetaBatch:
        support, query, chosen = self.sample_indices(tasks)
        return MetaBatch(self.split.gather(support), self.positions(support, chosen),
                         self.split.gather(query), self.positions(query, chosen))

    def positions(self, index: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        """Label of each image = position of its class in its task (int32)."""
        labels = self.split.labels[index]
        return np.argmax(labels[:, :, None] == chosen[:, None, :], axis=-1).astype(np.int32)


# --------------------------------------------------------------------------- problem

class FewShotProblem:
    """Encoder (u), the batched classifiers W (T, d, N), b (T, N) (v), and f, g."""

    def __init__(self, encoder, tasks: int, nway: int, image_shape: Sequence[int]):
        import tensorflow as tf

        from penalty_tf.models.few_shot import feature_dim

        self.encoder, self.tasks, self.nway = encoder, tasks, nway
        self.dim = feature_dim(encoder, image_shape)
        self.weights = tf.Variable(tf.zeros((tasks, self.dim, nway)), name="classifier_W")
        self.bias = tf.Variable(tf.zeros((tasks, nway)), name="classifier_b")

    @property
    def upper_vars(self):
        return list(self.encoder.trainable_variables)

    @property
    def lower_vars(self):
        return [self.weights, self.bias]

    def _loss(self, inputs, labels, are_features: bool):
        import tensorflow as tf

        from penalty_tf.models.few_shot import cosine_logits, task_losses

        features = inputs if are_features else self.encoder(inputs)
        return tf.reduce_mean(task_losses(cosine_logits(features, self.weights, self.bias), labels))

    def lower_loss(self, batch):
        """g: mean over tasks of the support cross-entropy."""
        return self._loss(batch[0], batch[1], isinstance(batch, FeatureBatch))

    def upper_loss(self, batch):
        """f: mean over tasks of the query cross-entropy."""
        return self._loss(batch[2], batch[3], isinstance(batch, FeatureBatch))

    def features_batch(self, batch) -> "FeatureBatch":
        """The meta-batch with the images replaced by their encoder features, (T, n, d).

        The solvers' ``lower_step_batch`` hook: the lower steps (and ApproxGrad's linear
        steps) differentiate w.r.t. the classifiers only and the encoder (u) does not change
        during them, so the features are computed once per meta-iteration instead of at
        every one of the T steps (the original recomputed them). Same values: the batch-
        statistics batch norm sees the same per-task batches either way."""
        return FeatureBatch(self.encoder(batch[0]), batch[1], self.encoder(batch[2]), batch[3])

    def reset_classifiers(self, rng: np.random.Generator) -> None:
        """Fresh W ~ N(0, 0.01^2), b = 0.001 (the original's ``reset_v_func``); the bilevel
        solver's state is deliberately left as it is (faithful quirk)."""
        from penalty_tf.models.few_shot import initial_classifiers

        w, b = initial_classifiers(rng, self.tasks, self.dim, self.nway)
        self.weights.assign(w)
        self.bias.assign(b)


def task_zero_weights(lower_vars) -> list[np.ndarray]:
    """The original's multi-group ApproxGrad corrects upper group i with lower group i only;
    with one encoder group and one group per task that is task 0 alone:
    ``grad_u f - H_{u v_0} p_0``. With the T classifiers batched into one variable per
    kind, the core's group indexing cannot express this, so p is multiplied by a one-hot
    task-0 mask along the task axis (axis 0 of W and b): ApproxGrad's ``correction_weights``.
    """
    out = []
    for v in lower_vars:
        mask = np.zeros((v.shape[0],) + (1,) * (len(v.shape) - 1), np.float32)
        mask[0] = 1.0
        out.append(mask)
    return out


@dataclasses.dataclass
class Hyper:
    """The bilevel hyperparameters of a run (flags, with the original's defaults)."""

    lr_u: float
    lr_v: float
    lr_p: float = 1e-2
    sig: float = 1e-3
    rho0: float = 1e-2
    lamb0: float = 1e-2
    eps0: float = 1e-2
    nu0: float = 1e-4
    c_rho: float = 1.1
    c_lamb: float = 0.9
    c_eps: float = 0.9
    lr_decay: float = 0.99


def build_solver(method: str, problem: FewShotProblem, hyper: Hyper, *, correction: str = "first",
                 features_once: bool = True, jit_compile: bool = False):
    """Multi-group Penalty (learning rates x0.99 on convergence) or ApproxGrad (task-0
    correction by default) on the problem, with TF1 Adam everywhere. ``features_once``:
    the lower steps use features computed once per meta-iteration
    (`FewShotProblem.features_batch`); False recomputes them at every step as the original."""
    from penalty_tf.solvers import Penalty, PenaltySchedule

    features = problem.features_batch if features_once else None

    h = hyper
    args = (problem.upper_loss, problem.lower_loss, problem.upper_vars, problem.lower_vars)
    if method == "penalty":
        schedule = PenaltySchedule.multi_group(rho0=h.rho0, lamb0=h.lamb0, eps0=h.eps0, nu0=h.nu0,
                                               c_rho=h.c_rho, c_lamb=h.c_lamb, c_eps=h.c_eps,
                                               lr_decay=h.lr_decay)
        return Penalty(*args, upper_optimizer=h.lr_u, lower_optimizer=h.lr_v, schedule=schedule,
                       lower_step_batch=features, jit_compile=jit_compile)
    if method == "approxgrad":
        from penalty_tf.solvers import ApproxGrad

        if correction not in ("first", "all"):
            raise ValueError(f"correction must be 'first' or 'all', got {correction!r}")
        weights = task_zero_weights(problem.lower_vars) if correction == "first" else None
        return ApproxGrad(*args, upper_optimizer=h.lr_u, lower_optimizer=h.lr_v, linear_optimizer=h.lr_p,
                          sig=h.sig, correction="all", correction_weights=weights,
                          lower_step_batch=features, jit_compile=jit_compile)
    raise ValueError(f"unknown method {method!r}")


def solver_state_variables(solver, problem: FewShotProblem) -> list:
    """Every variable a resumed run must get back, in a fixed order."""
    out = list(problem.upper_vars) + list(problem.lower_vars)
    for level in solver.levels():
        out += level.variables if level is getattr(solver, "linear", None) else []
        for opt in level.optimizers:
            out += list(opt.variables)
    for name in ("rho", "lamb", "eps"):
        if hasattr(solver, name):
            out.append(getattr(solver, name))
    out += list(getattr(solver, "nu", []))
    return out


# ------------------------------------------------------------------------- meta-test

def tf1_adam_train(loss_fn, params, steps: int, lr: float, beta1=0.9, beta2=0.999, eps=1e-8):
    """``steps`` TF1-Adam steps on tensors ``params`` (functional, in one while loop):
    ``m <- b1 m + (1-b1) g; s <- b2 s + (1-b2) g^2;
    w <- w - lr sqrt(1-b2^t)/(1-b1^t) m/(sqrt(s)+eps)``. Returns the final params."""
    import tensorflow as tf

    def body(t, params, m, s):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = loss_fn(*params)
        grads = tape.gradient(loss, params)
        t1 = tf.cast(t + 1, tf.float32)
        lr_t = lr * tf.sqrt(1.0 - beta2 ** t1) / (1.0 - beta1 ** t1)
        m = [beta1 * a + (1.0 - beta1) * g for a, g in zip(m, grads)]
        s = [beta2 * a + (1.0 - beta2) * g * g for a, g in zip(s, grads)]
        params = [w - lr_t * a / (tf.sqrt(b) + eps) for w, a, b in zip(params, m, s)]
        return t + 1, params, m, s

    zeros = [tf.zeros_like(p) for p in params]
    _, params, _, _ = tf.while_loop(lambda t, *_: t < steps, body,
                                    (tf.constant(0), list(params), zeros, list(zeros)),
                                    maximum_iterations=steps)
    return params


class MetaTester:
    """The meta-test protocol on a frozen encoder, one compiled call per meta-batch."""

    def __init__(self, encoder, steps: int = 100, lr: float = 1e-3, jit_compile: bool = False):
        import tensorflow as tf

        self.encoder, self.steps, self.lr = encoder, int(steps), float(lr)
        self._fn = tf.function(self._accuracies, jit_compile=jit_compile, autograph=False)

    def _accuracies(self, support, support_labels, query, query_labels, w0, b0):
        import tensorflow as tf

        from penalty_tf.models.few_shot import cosine_logits, task_losses

        fs = tf.stop_gradient(self.encoder(support))   # frozen encoder: features once
        fq = tf.stop_gradient(self.encoder(query))

        def loss(w, b):
            return tf.reduce_mean(task_losses(cosine_logits(fs, w, b), support_labels))

        w, b = tf1_adam_train(loss, [w0, b0], self.steps, self.lr)
        pred = tf.argmax(cosine_logits(fq, w, b), axis=-1, output_type=tf.int32)
        return tf.reduce_mean(tf.cast(pred == tf.cast(query_labels, tf.int32), tf.float32), axis=-1)

    def accuracies(self, batch: MetaBatch, w0: np.ndarray, b0: np.ndarray) -> np.ndarray:
        """Query accuracy of each task of ``batch`` (fresh classifiers w0, b0)."""
        return self._fn(batch.support, batch.support_labels, batch.query, batch.query_labels,
                        w0, b0).numpy()

    def evaluate(self, sampler: TaskSampler, init_rng: np.random.Generator, tasks: int,
                 meta_batch: int, dim: int, quiet: bool = True) -> np.ndarray:
        """Accuracies of ``tasks`` meta-test tasks (ceil(tasks / meta_batch) meta-batches)."""
        from penalty_tf.models.few_shot import initial_classifiers

        out = []
        bar = experiment.progress(tasks, quiet=quiet, unit_name="task")
        while sum(len(a) for a in out) < tasks:
            batch = sampler.sample(meta_batch)
            w0, b0 = initial_classifiers(init_rng, meta_batch, dim, sampler.nway)
            out.append(self.accuracies(batch, w0, b0))
            bar.add(meta_batch)
        return np.concatenate(out)[:tasks]


def summarize_accuracies(accs: np.ndarray) -> dict[str, float]:
    """Mean, sample sd (ddof=1) and 95 % CI half-width 1.96 sd / sqrt(n), in percent."""
    accs = np.asarray(accs, np.float64) * 100.0
    n = len(accs)
    sd = float(accs.std(ddof=1)) if n > 1 else 0.0
    return {"acc_mean": float(accs.mean()), "acc_sd": sd, "acc_ci95": 1.96 * sd / math.sqrt(n),
            "tasks": n}


# ------------------------------------------------------------------------ the runner

def add_flags(parser: argparse.ArgumentParser, *, nway: int, kshot: int | None) -> None:
    """Flags shared by both scripts; defaults None are resolved per method/N/K."""
    parser.add_argument("--method", choices=["penalty", "approxgrad"], default="penalty")
    parser.add_argument("--nway", type=int, default=nway, help="N classes per task")
    parser.add_argument("--kshot", type=int, default=kshot, help="K support images per class")
    parser.add_argument("--iterations", type=int, default=None, help="meta-iterations")
    parser.add_argument("--meta-batch", type=int, default=None, help="tasks per meta-batch (T)")
    parser.add_argument("--eval-every", type=int, default=1000,
                        help="run the meta-test after every this many meta-iterations (and at the end)")
    parser.add_argument("--test-tasks", type=int, default=600, help="meta-test tasks per evaluation")
    parser.add_argument("--test-steps", type=int, default=100, help="classifier steps at meta-test")
    parser.add_argument("--test-lr", type=float, default=None,
                        help="meta-test classifier Adam learning rate (Penalty 1e-3; ApproxGrad lr_v)")
    parser.add_argument("--lower-steps", type=int, default=20, help="v-steps per meta-iteration (niter_v)")
    parser.add_argument("--linear-steps", type=int, default=20, help="ApproxGrad p-steps (niter_p)")
    parser.add_argument("--query-per-class", type=int, default=QUERY_PER_CLASS)
    for name, default in (("lr-u", None), ("lr-v", None), ("lr-p", None), ("sig", 1e-3),
                          ("rho0", 1e-2), ("lamb0", 1e-2), ("eps0", 1e-2), ("nu0", 1e-4),
                          ("c-rho", 1.1), ("c-lamb", 0.9), ("c-eps", 0.9), ("lr-decay", 0.99)):
        parser.add_argument(f"--{name}", type=float, default=default)
    parser.add_argument("--correction", choices=["first", "all"], default="first",
                        help="ApproxGrad encoder correction: task 0 only (original) or all tasks")
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=False,
                        help="compile the meta-iteration and the meta-test with XLA")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="save a checkpoint every this many meta-iterations (default: --eval-every)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--quiet", action="store_true")


def check_flags(args: argparse.Namespace) -> None:
    for name in ("nway", "kshot", "iterations", "meta_batch", "eval_every", "test_tasks",
                 "test_steps", "lower_steps", "query_per_class", "checkpoint_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise experiment.ExperimentError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.linear_steps < 0:
        raise experiment.ExperimentError("--linear-steps must be >= 0")


#: Flags that may change between an interrupted run and its --resume.
RESUMABLE_CHANGES = ("iterations", "resume", "quiet", "out", "data_dir", "eval_every",
                     "checkpoint_every", "xla")


def _checkpoint_key(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}


def save_checkpoint(path: Path, variables: list, meta: dict) -> None:
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    experiment.save_npz_atomic(path, meta=np.array(json.dumps(experiment.to_jsonable(meta))), **arrays)


def load_checkpoint(path: Path, variables: list) -> dict:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        if len(data.files) - 1 != len(variables):
            raise experiment.ExperimentError(f"{path} holds {len(data.files) - 1} arrays, this run "
                                             f"has {len(variables)} variables: not its checkpoint")
        values = [data[f"v{i}"] for i in range(len(variables))]
    for var, value in zip(variables, values):
        if tuple(var.shape) != value.shape:
            raise experiment.ExperimentError(f"{path}: shape {value.shape} for a variable of shape "
                                             f"{tuple(var.shape)}: not this run's checkpoint")
        var.assign(value)
    return meta


def plot_accuracy(history: list[dict], path: Path, title: str) -> None:
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


def run(args: argparse.Namespace, *, experiment_name: str, train: Split, test: Split,
        make_encoder, default_test_lr: float) -> dict:
    """Meta-train with evaluations every ``--eval-every`` iterations; writes result.json,
    accuracy.png, accuracies.npz and checkpoint.npz to ``--out``."""
    import tensorflow as tf

    check_flags(args)
    out = experiment.resolve_out_dir(args, experiment_name)
    experiment.seed_everything(args.seed)
    if args.test_lr is None:
        args.test_lr = default_test_lr
    if args.checkpoint_every is None:
        args.checkpoint_every = args.eval_every
    config = dict(vars(args))
    hyper = Hyper(lr_u=args.lr_u, lr_v=args.lr_v, lr_p=args.lr_p, sig=args.sig, rho0=args.rho0,
                  lamb0=args.lamb0, eps0=args.eps0, nu0=args.nu0, c_rho=args.c_rho,
                  c_lamb=args.c_lamb, c_eps=args.c_eps, lr_decay=args.lr_decay)

    encoder = make_encoder()
    problem = FewShotProblem(encoder, args.meta_batch, args.nway, train.image_shape)
    solver = build_solver(args.method, problem, hyper, correction=args.correction,
                          jit_compile=args.xla)
    tester = MetaTester(encoder, args.test_steps, args.test_lr, jit_compile=args.xla)
    streams = {name: np.random.default_rng([args.seed, i]) for i, name in
               enumerate(("train_tasks", "train_init", "test_tasks", "test_init"))}
    train_sampler = TaskSampler(train, args.nway, args.kshot, streams["train_tasks"], args.query_per_class)
    test_sampler = TaskSampler(test, args.nway, args.kshot, streams["test_tasks"], args.query_per_class)
    state_vars = solver_state_variables(solver, problem)

    done, history, train_seconds = 0, [], 0.0
    ckpt = out / "checkpoint.npz"
    if args.resume and ckpt.is_file():
        with np.load(ckpt) as data:
            saved = json.loads(str(data["meta"]))["config"]
        if saved != experiment.to_jsonable(_checkpoint_key(config)):
            raise experiment.ExperimentError(
                f"{ckpt} was written with other settings; use another --out or drop --resume.\n"
                f"checkpoint: {saved}\nthis run:   {_checkpoint_key(config)}")
        meta = load_checkpoint(ckpt, state_vars)
        done, history, train_seconds = meta["done"], meta["history"], meta["train_seconds"]
        for name, state in meta["rng"].items():
            streams[name].bit_generator.state = state
        solver.iteration = done
        if not args.quiet:
            print(f"resumed from {ckpt} at meta-iteration {done}")

    def checkpoint():
        save_checkpoint(ckpt, state_vars, {
            "config": _checkpoint_key(config), "done": done, "history": history,
            "train_seconds": train_seconds,
            "rng": {k: s.bit_generator.state for k, s in streams.items()}})

    def finish():
        evaluations = [{k: v for k, v in h.items() if k != "accuracies"} for h in history]
        steady = [t for t in step_seconds[1:]]   # the first step of a session traces and compiles
        metrics = {"final": evaluations[-1] if evaluations else {}, "evaluations": evaluations,
                   "iterations_done": done, "train_seconds": train_seconds,
                   "seconds_per_iteration": float(np.median(steady)) if steady else None,
                   "first_step_seconds": step_seconds[0] if step_seconds else None}
        if history:
            plot_accuracy(history, out / "accuracy.png",
                          f"{experiment_name} {args.nway}-way {args.kshot}-shot, {args.method}")
            experiment.save_npz_atomic(out / "accuracies.npz",
                                       **{f"iteration_{h['iteration']}": np.array(h["accuracies"])
                                          for h in history if "accuracies" in h})
        published = paper.published_dict(table="Table 4", experiment=experiment_name,
                                         method=args.method, nway=args.nway, kshot=args.kshot)
        return experiment.write_result(
            out, experiment=experiment_name, method=args.method, config=config,
            metrics=metrics,
            published=published, wall_time_s=train_seconds + sum(h["eval_seconds"] for h in history))

    bar = experiment.progress(args.iterations, quiet=args.quiet, unit_name="meta-it")
    if done:
        bar.update(done)
    last, step_seconds = {}, []
    while done < args.iterations:
        start = time.perf_counter()
        problem.reset_classifiers(streams["train_init"])
        batch = tuple(tf.constant(a) for a in train_sampler.sample(args.meta_batch))
        counts = {"linear_steps": args.linear_steps} if args.method == "approxgrad" else {}
        out_step = solver.step(batch, lower_steps=args.lower_steps, **counts)
        last = {k: float(v) for k, v in out_step.items() if k != "status"}
        step_seconds.append(time.perf_counter() - start)
        train_seconds += step_seconds[-1]
        done += 1
        bar.update(done, values=[("f", last["f"]), ("g", last["g"])])
        evaluate = done % args.eval_every == 0 or done == args.iterations
        if evaluate:
            t0 = time.perf_counter()
            accs = tester.evaluate(test_sampler, streams["test_init"], args.test_tasks,
                                   args.meta_batch, problem.dim)
            entry = {"iteration": done, **summarize_accuracies(accs),
                     "eval_seconds": time.perf_counter() - t0, "train_seconds": train_seconds,
                     "losses": last, "accuracies": accs.tolist()}
            if hasattr(solver, "state"):
                entry["solver_state"] = solver.state()
            history.append(entry)
            if not args.quiet:
                print(f"\nmeta-it {done}: meta-test accuracy {entry['acc_mean']:.2f} % "
                      f"± {entry['acc_ci95']:.2f} (95 % CI, {entry['tasks']} tasks); "
                      f"f={last['f']:.4f} g={last['g']:.4f}")
        if evaluate or done % args.checkpoint_every == 0:
            checkpoint()
            if evaluate:
                finish()
    return finish()


def measure(run_one, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``run_one`` (after a first, compiling call)."""
    run_one()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_one()
        times.append(time.perf_counter() - t0)
    return times
