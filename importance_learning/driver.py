"""The shared importance-learning driver behind every dataset script of this folder.

    python -m importance_learning.mnist --noise 0.5 --method penalty --out runs/mnist50

Pipeline (docs/original.md §3.0), identical for all datasets, as in the original:

1. load the dataset's train / validation / test split (optionally only the first
   ``--train-size`` training points), inject label noise on the first ``int(noise N)``
   training points;
2. pre-train the classifier on the validation set (``--pretrain-epochs``, Adam
   ``--pretrain-lr``); its test accuracy is the run's "Val-only" number;
3. initialise importances: a = ``--init-high`` where the pretrained model agrees with the
   noisy label, ``--init-low`` elsewhere (the network is *not* reset);
4. ``--epochs`` epochs through the library loop (`penalty_tf.training.run`): shuffle,
   minibatches of ``--batch-size`` training points, each with ``--batch-size`` validation
   points drawn without replacement; one Penalty / ApproxGrad upper-level iteration per
   minibatch through the length-batch_size importance slot (`importance_learning.bilevel`);
   CIFAR10 augments both minibatches; ApproxGrad halves lr_u and lr_v after every
   ``--halve-every``-th epoch; then renormalise the importances;
5. per epoch: accuracies (original formula and exact), the last minibatch's loss terms and
   penalty state, importance statistics and clean-vs-corrupted separation, wall time; a
   checkpoint (`penalty_tf.checkpoints.RunCheckpoint` in ``--out/checkpoint``) of everything
   needed to continue (``--resume``);
6. ``mnist_small`` only: select points with a > ``--select-threshold``, re-initialise the
   classifier and retrain it on them plus the validation set; its test accuracy is the
   number compared with Franceschi et al.

Baselines (``--method oracle|val-only|train-val``), which the original never coded: plain
training of the same model from fresh weights with the same pipeline (own loop, dropout
inactive, Adam ``--pretrain-lr``, ``--epochs`` epochs): Oracle on the clean training points +
validation, Train+Val on all (noisy) training points + validation, Val-only on the
validation set (with ``--pretrain-epochs`` epochs, i.e. exactly the bilevel runs'
pre-training).

``metrics.test_accuracy`` (percent, original accuracy formula) is the number the paper
reports for the setting: the final epoch's test accuracy of the bilevel-trained network
(``mnist_small``: after the retraining). ``test_accuracy_exact`` is the plain accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

import keras
import numpy as np

from importance_learning import core
from importance_learning.settings import BASELINES, BILEVEL_METHODS, Settings, add_flags, from_args
from penalty_tf.datasets import Split
from penalty_tf.paper import experiment, published as paper

CHECKPOINT = "checkpoint"
RESUME_HELP = ("continue from the checkpoint in --out (every setting as before but the run control: "
               "--epochs may be raised to extend the run, not lowered below the epochs done; other "
               "learning rates need a fresh run)")
ACCURACY_KEYS = tuple(f"{name}_accuracy{exact}" for name in ("test", "train", "val") for exact in ("", "_exact"))


@dataclasses.dataclass
class DatasetSpec:
    """What differs between the datasets' scripts (the original's per-script constants).

    ``load(settings)`` returns the `Split` before noise; ``settings`` is the script's
    `Settings` class (a subclass adds the script's own flags); ``retrain(settings, clf,
    split, a, corrupt) -> metrics`` is run after the bilevel phase (mnist_small). The
    original's hyperparameters per method are in `penalty_tf.paper.defaults.importance`.
    """

    experiment: str
    model: str
    load: Callable[[Settings], Split]
    methods: tuple = BILEVEL_METHODS
    settings: type = Settings
    augment: Optional[Callable[[np.ndarray, np.random.Generator], np.ndarray]] = None
    augment_val: bool = True
    model_fn: Optional[Callable[[Settings], Any]] = None
    bn_training: bool = False
    retrain: Optional[Callable[..., dict[str, Any]]] = None
    description: str = ""


def build_parser(spec: DatasetSpec) -> argparse.ArgumentParser:
    """The script's flags: the common ones and one per field of ``spec.settings`` and of the
    solver configs; all default to the original's values for ``--method``."""
    parser = argparse.ArgumentParser(prog=f"python -m {spec.experiment}", description=spec.description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_flags(parser, methods=list(spec.methods) + list(BASELINES),
                                default_method=spec.methods[0], epochs=1, lower_steps=1, resume=True,
                                resume_help=RESUME_HELP)
    add_flags(parser, spec.settings)
    return parser


# --------------------------------------------------------------------------- data


def prepare_data(spec: DatasetSpec, s: Settings):
    """The split with noisy training labels; returns (split, clean_train_labels, corrupt)."""
    split = spec.load(s)
    if s.train_size is not None:
        if s.train_size > len(split.x_train):
            raise experiment.ExperimentError(
                f"--train-size {s.train_size} exceeds the {len(split.x_train)} training points")
        split = split.replace(x_train=split.x_train[:s.train_size], y_train=split.y_train[:s.train_size])
    if s.test_size is not None:
        split = split.replace(x_test=split.x_test[:s.test_size], y_test=split.y_test[:s.test_size])
    if len(split.x_train) < s.batch_size:
        raise experiment.ExperimentError(
            f"the training set has {len(split.x_train)} points, fewer than --batch-size {s.batch_size}")
    if len(split.x_val) < s.batch_size and s.bilevel:
        raise experiment.ExperimentError(
            f"the validation set has {len(split.x_val)} points, fewer than --batch-size {s.batch_size}")
    noise_rng = np.random.default_rng([s.seed, 1])
    noisy, corrupt = core.inject_noise(split.y_train, s.noise, noise_rng)
    return split.replace(y_train=noisy), split.y_train, corrupt


# --------------------------------------------------------------------- CIFAR augmentation


def augment_batch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random transform per image, as Keras' ``ImageDataGenerator(rotation_range=40,
    width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2, zoom_range=0.2,
    horizontal_flip=True, fill_mode='nearest')`` (its parameter draws and its affine
    matrix, applied with scipy's order-1 interpolation, as Keras did; shear in degrees as in
    Keras >= 2.2). Random numbers come from ``rng`` (checkpointed), not a global RNG."""
    from scipy import ndimage

    out = np.empty_like(x)
    h, w = x.shape[1], x.shape[2]
    for i in range(len(x)):
        theta = np.deg2rad(rng.uniform(-40, 40))
        tx = rng.uniform(-0.2, 0.2) * h
        ty = rng.uniform(-0.2, 0.2) * w
        shear = np.deg2rad(rng.uniform(-0.2, 0.2))
        zx, zy = rng.uniform(0.8, 1.2, 2)
        flip = rng.uniform() < 0.5
        rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
        shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
        shr = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
        zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
        m = rot @ shift @ shr @ zoom
        ox, oy = h / 2 - 0.5, w / 2 - 0.5
        m = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]]) @ m @ np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]])
        for c in range(x.shape[3]):
            out[i, :, :, c] = ndimage.affine_transform(x[i, :, :, c], m[:2, :2], m[:2, 2], order=1,
                                                       mode="nearest", cval=0.0)
        if flip:
            out[i] = out[i, :, ::-1]
    return out




# --------------------------------------------------------------------------- runs


def accuracies(clf, split: Split, s: Settings) -> dict[str, float]:
    """Test, train and validation accuracy (percent), the original's formula and exact."""
    out = {}
    for name, x, y in (("test", split.x_test, split.y_test), ("train", split.x_train, split.y_train),
                       ("val", split.x_val, split.y_val)):
        pred = clf.predict(x, s.batch_size)
        out[f"{name}_accuracy"] = 100.0 * core.original_accuracy(pred, y, s.batch_size, s.eval_rounding)
        out[f"{name}_accuracy_exact"] = 100.0 * core.exact_accuracy(pred, y)
    return out


def build_classifier(spec: DatasetSpec, s: Settings):
    """The dataset's classifier with seeded fresh weights."""
    from importance_learning.bilevel import Classifier
    from penalty_tf.models import classifiers

    keras.utils.set_random_seed(s.seed)
    model = spec.model_fn(s) if spec.model_fn is not None else classifiers.build(spec.model)
    return Classifier(model, jit_compile=s.xla, training=spec.bn_training)


def run(spec: DatasetSpec, argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Parse the flags, run the method (bilevel or baseline), write result.json; {} after
    ``--stop-after`` (tests: a killed run)."""
    args = build_parser(spec).parse_args(argv)
    out = experiment.resolve_out_dir(args, spec.experiment, check=False)
    s = from_args(spec.settings, spec.experiment, args)
    experiment.check_out_dir(out)                # after the flags, before any work
    experiment.seed_everything(s.seed, deterministic=s.deterministic)
    with experiment.Timer() as timer:
        split, clean_labels, corrupt = prepare_data(spec, s)
        clf = build_classifier(spec, s)
        rng = np.random.default_rng([s.seed, 2])
        if s.bilevel:
            metrics = BilevelRun(spec, s, out, clf, split, corrupt, rng).run(clean_labels)
        else:
            metrics = run_baseline(s, clf, split, corrupt, rng)
    if metrics is None:
        return {}
    return report(spec, s, out, metrics, timer.elapsed)


def report(spec: DatasetSpec, s: Settings, out: Path, metrics: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """Write result.json (with the paper's number for the setting) and print the headline."""
    published = paper.published_dict(experiment=spec.experiment, method=s.method, noise=s.noise)
    result = experiment.write_result(out, experiment=spec.experiment, method=s.method, config=s.flat(),
                                     metrics=metrics, published=published, wall_time_s=elapsed)
    if not s.quiet:
        print(f"test accuracy {metrics['test_accuracy']:.2f} % (exact {metrics['test_accuracy_exact']:.2f} %)"
              + (f"; paper: {published['mean']} ± {published['sd']}" if published else ""), flush=True)
    return result


def baseline_data(s: Settings, split: Split, corrupt: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(x, y, epochs) of a baseline: val-only = validation set for ``--pretrain-epochs``;
    oracle = clean training points + validation, train-val = all training points +
    validation, for ``--epochs``."""
    if s.method == "val-only":
        return split.x_val, split.y_val, s.pretrain_epochs
    start = corrupt if s.method == "oracle" else 0
    return (np.concatenate([split.x_train[start:], split.x_val]),
            np.concatenate([split.y_train[start:], split.y_val]), s.epochs)


def run_baseline(s: Settings, clf, split: Split, corrupt: int, rng) -> dict[str, Any]:
    """Plain training of a baseline (fresh weights, Adam ``--pretrain-lr``) and its accuracies."""
    x, y, epochs = baseline_data(s, split, corrupt)
    bar = experiment.progress(epochs, quiet=s.quiet, unit_name="epoch")
    start = time.perf_counter()
    clf.train_simple(x, y, epochs, s.pretrain_lr, rng, batch_size=s.batch_size,
                     rounding=s.train_rounding, progress=bar.update)
    metrics = accuracies(clf, split, s)
    metrics.update(training_points=len(x), training_epochs=epochs, corrupt=corrupt,
                   train_time_s=time.perf_counter() - start)
    return metrics


class Minibatches:
    """One epoch of upper-level batches for `solver.run` (re-iterable): a NumPy shuffle of
    the training set, then per minibatch b the training points ``order[b bs:(b+1) bs]``,
    ``bs`` validation points drawn without replacement, the augmentation (CIFAR10: the
    validation images too, the original's quirk), and the slot filled with the minibatch's
    logits ``z[idx]`` before the batch ``(x_train, y_train, x_val, y_val)`` is yielded.
    ``idx`` is the minibatch in progress (for the read-back after the step)."""

    def __init__(self, run: "BilevelRun"):
        self.run = run
        self.idx = None

    def __len__(self) -> int:
        return len(self.run.split.x_train) // self.run.s.batch_size

    def __iter__(self):
        import tensorflow as tf

        run, bs = self.run, self.run.s.batch_size
        split, rng, augment = run.split, run.rng, run.spec.augment
        order = rng.permutation(len(split.x_train))
        for b in range(len(self)):
            idx = order[b * bs:(b + 1) * bs]
            vidx = rng.choice(len(split.x_val), bs, replace=False)
            xt, xv = split.x_train[idx], split.x_val[vidx]
            if augment is not None:
                xt = augment(xt, rng)
                if run.spec.augment_val:
                    xv = augment(xv, rng)
            self.idx = idx
            run.slot.assign(run.z[idx].astype(np.float32))
            yield (tf.constant(xt), tf.constant(split.y_train[idx], tf.int32), tf.constant(xv),
                   tf.constant(split.y_val[vidx], tf.int32))


class EpochRecord(keras.callbacks.Callback):
    """The bilevel loop's bookkeeping: after each step the slot is read back into z
    (``z[idx] <- slot``); after each epoch z is renormalised, the epoch's record is
    appended to the history, the checkpoint saved, and the run stopped after
    ``--stop-after`` epochs."""

    def __init__(self, run: "BilevelRun", batches: Minibatches, last_epoch: int):
        super().__init__()
        self.run, self.batches, self.last_epoch = run, batches, last_epoch
        self.epochs_run = 0
        self.position = (None, None)

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.converged, self.last = time.perf_counter(), 0, {}
        self.position = (epoch, None)

    def on_train_batch_begin(self, batch, logs=None):
        self.position = (self.position[0], batch)

    def on_train_batch_end(self, batch, logs=None):
        self.run.z[self.batches.idx] = self.run.slot.numpy()
        self.converged += int(bool(logs.get("converged", 0.0)))
        self.last = {k: v for k, v in logs.items() if not k.startswith("lr_")}

    def on_epoch_end(self, epoch, logs=None):
        run = self.run
        run.z = core.renormalise(run.z)
        record = run.epoch_record(epoch, time.perf_counter() - self.start, self.last, self.converged,
                                  {k: logs[k] for k in ACCURACY_KEYS})
        run.history.append(record)
        run.announce(record)
        run.save(epoch + 1)
        self.epochs_run += 1
        if run.s.stop_after is not None and self.epochs_run >= run.s.stop_after and epoch < self.last_epoch:
            self.model.stop_training = True


class BilevelRun:
    """A Penalty / ApproxGrad importance-learning run in named steps: `start` (restore the
    checkpoint, or `pretrain` and initialise importances), `train` (the epochs through
    `solver.run`), `finish` (final metrics, arrays, plots, retraining)."""

    def __init__(self, spec: DatasetSpec, s: Settings, out: Path, clf, split: Split, corrupt: int,
                 rng: np.random.Generator):
        import tensorflow as tf

        from importance_learning.bilevel import importance_problem, lower_optimizer_option
        from penalty_tf import solvers
        from penalty_tf.checkpoints import RunCheckpoint

        self.spec, self.s, self.out, self.clf, self.split, self.corrupt, self.rng = spec, s, out, clf, split, corrupt, rng
        self.slot = tf.Variable(tf.zeros(s.batch_size), name="importance_slot")
        problem = importance_problem(clf.model, self.slot, training=spec.bn_training, weight_decay=s.weight_decay)
        self.solver = solvers.make(s.method, problem, s.solver, jit_compile=s.xla,
                                   **lower_optimizer_option(s.lower_optimizer, s.solver.lr_v))
        self.logits = tf.Variable(tf.zeros(len(split.x_train), tf.float64), trainable=False, name="importance_logits")
        self.checkpoint = RunCheckpoint(out / CHECKPOINT, s, rngs={"data": rng}, solver=self.solver,
                                        model=clf.model, slot=self.slot, logits=self.logits)
        self.z: np.ndarray = np.zeros(0)
        self.history: list[dict[str, Any]] = []
        self.pretrain_record: dict[str, Any] = {}

    def run(self, clean_labels: np.ndarray) -> Optional[dict[str, Any]]:
        """All steps; None when stopped by ``--stop-after``."""
        next_epoch = self.start()
        if not self.train(next_epoch):
            return None
        return self.finish(clean_labels)

    def start(self) -> int:
        """Restore the checkpoint (``--resume``) or pre-train, initialise z and save; returns
        the epoch to continue from.

        ``--resume`` without a checkpoint starts afresh; with a damaged one (unreadable
        sidecar or TF files, or TF files without the sidecar naming them), or with an
        ``--epochs`` below the epochs it has done, it is an `ExperimentError` that deletes
        nothing. Only a run without ``--resume`` replaces the checkpoint directory."""
        directory = self.checkpoint.directory
        state = experiment.restore_checkpoint(self.checkpoint) if self.s.resume else None
        if state is not None:
            experiment.check_resume_budget(state["epoch"] - self.s.first_epoch, self.s.epochs, flag="--epochs",
                                           unit="epochs", directory=directory)
            self.z, self.history, self.pretrain_record = self.logits.numpy().copy(), state["history"], state["pretrain"]
            if not self.s.quiet:
                print(f"resuming from {directory} at epoch {state['epoch']}", flush=True)
            return state["epoch"]
        shutil.rmtree(directory, ignore_errors=True)
        self.pretrain()
        self.save(self.s.first_epoch)
        return self.s.first_epoch

    def pretrain(self) -> None:
        """Pre-training on the validation set (the original's train_simple), its accuracies,
        and the initial importances from the pretrained model's agreement with the labels."""
        s, clf, split = self.s, self.clf, self.split
        bar = experiment.progress(s.pretrain_epochs, quiet=s.quiet, unit_name="pre-training epoch")
        clf.train_simple(split.x_val, split.y_val, s.pretrain_epochs, s.pretrain_lr, self.rng,
                         batch_size=s.batch_size, rounding=s.train_rounding, progress=bar.update)
        pre = accuracies(clf, split, s)
        predicted = clf.predict(split.x_train, s.batch_size)
        self.z = core.initial_logits(predicted, split.y_train, s.init_low, s.init_high)
        self.pretrain_record = {**pre, **core.separation(core.importance(self.z), self.corrupt)}

    def save(self, next_epoch: int) -> None:
        """Checkpoint: solver, model, slot and z (tracked variables), the generator, the
        history and the pre-training record."""
        self.logits.assign(self.z)
        self.checkpoint.save(epoch=next_epoch, history=self.history, pretrain=self.pretrain_record)

    def callbacks(self, batches: Minibatches, last_epoch: int) -> list:
        """The progress bar, ApproxGrad's halving (before the renormalisation), the per-epoch
        evaluation and the epoch record, in this order."""
        from penalty_tf import callbacks

        s = self.s
        out = [] if s.quiet else [callbacks.ProgressBar(("f",))]
        if s.method == "approxgrad" and s.halve_every:
            out.append(callbacks.ScaleLearningRates(
                0.5, when=lambda epoch: epoch > 0 and epoch % s.halve_every == 0))
        out.append(callbacks.EvaluateEvery(lambda: accuracies(self.clf, self.split, s)))
        self.record = EpochRecord(self, batches, last_epoch)
        return out + [self.record]

    def train(self, next_epoch: int) -> bool:
        """Epochs ``next_epoch .. first_epoch + epochs - 1`` through `solver.run`; False when
        stopped by ``--stop-after``. A NaN/Inf is an `ExperimentError` naming the epoch, the
        minibatch, the fix and the checkpoint that holds the last finished epoch."""
        from penalty_tf.solvers import NonFiniteError

        s = self.s
        last_epoch = s.first_epoch + s.epochs - 1
        if s.stop_after == 0 and next_epoch <= last_epoch:
            return False
        counts = {"linear_steps": s.linear_steps} if s.method == "approxgrad" else {}
        batches = Minibatches(self)
        try:
            self.solver.run(batches, epochs=last_epoch + 1, lower_steps=s.lower_steps,
                            callbacks=self.callbacks(batches, last_epoch), initial_epoch=next_epoch,
                            verbose=0 if s.quiet else 1, on_nonfinite="raise", **counts)
        except NonFiniteError as error:
            epoch, batch = self.record.position
            raise experiment.ExperimentError(
                f"{str(error).rstrip('.')} (epoch {epoch}, minibatch {batch}). {experiment.NONFINITE_ADVICE}. "
                f"{self.checkpoint.directory} holds the state after the last finished epoch (--resume "
                "continues it, with the same settings)") from None
        return not self.solver.stop_training

    def epoch_record(self, epoch: int, seconds: float, last: dict[str, float], converged: int,
                     accuracy: dict[str, float]) -> dict[str, Any]:
        """One epoch's record: the last minibatch's outputs, learning rates, (Penalty)
        convergence events and h_total = f + penalty + nu_term + lamb_g, accuracies and the
        importance statistics."""
        record = {"epoch": epoch, "epoch_time_s": seconds, "upper_iterations": len(self.split.x_train) // self.s.batch_size}
        record.update(last)
        rates = self.solver.learning_rates()
        if self.s.method == "penalty":
            record["convergence_events"] = converged
            record["h_total"] = record["f"] + record["penalty"] + record["nu_term"] + record["lamb_g"]
        record.update(lr_u=rates["upper"][0], lr_v=rates["lower"][0])
        record.update(accuracy)
        record.update(core.separation(core.importance(self.z), self.corrupt))
        return record

    def announce(self, record: dict[str, Any]) -> None:
        """Print the epoch's headline numbers (unless ``--quiet``)."""
        if not self.s.quiet:
            print(f"epoch {record['epoch']}: test {record['test_accuracy']:.2f} % train {record['train_accuracy']:.2f} % "
                  f"val {record['val_accuracy']:.2f} %  a clean {record['mean_importance_clean']:.3f} "
                  f"corrupted {record['mean_importance_corrupted']:.3f}  {record['epoch_time_s']:.1f} s", flush=True)

    def finish(self, clean_labels: np.ndarray) -> dict[str, Any]:
        """The run's metrics (final epoch, or the pre-training record when no epoch ran;
        mnist_small: the retrained classifier's accuracy), importances.npz and the plots."""
        s, history, pre, corrupt = self.s, self.history, self.pretrain_record, self.corrupt
        a = core.importance(self.z)
        metrics: dict[str, Any] = {"corrupt": corrupt, "training_points": len(self.z), "pretrain": pre,
                                   "epochs": history}
        final = history[-1] if history else dict(pre)
        metrics.update({f"bilevel_{key}": final[key] for key in ACCURACY_KEYS})
        metrics.update(core.separation(a, corrupt))
        metrics["val_only_test_accuracy"] = pre["test_accuracy"]
        metrics.update(epoch_times(history))
        if self.spec.retrain is not None:
            metrics.update(self.spec.retrain(s, self.clf, self.split, a, corrupt))
            metrics["test_accuracy"] = metrics["retrain_test_accuracy"]
            metrics["test_accuracy_exact"] = metrics["retrain_test_accuracy_exact"]
        else:
            metrics["test_accuracy"] = final["test_accuracy"]
            metrics["test_accuracy_exact"] = final["test_accuracy_exact"]
        experiment.save_npz_atomic(self.out / "importances.npz", importance=a, logits=self.z,
                                   noisy_labels=self.split.y_train, clean_labels=clean_labels,
                                   corrupt=np.array(corrupt))
        plot(self.out, history, a, corrupt, pre, self.spec.experiment, s.method)
        return metrics


def epoch_times(history: list[dict[str, Any]]) -> dict[str, float]:
    """Mean seconds per epoch and per upper iteration (NaN without epochs)."""
    times = [h["epoch_time_s"] for h in history]
    if not times:
        return {"mean_epoch_time_s": math.nan, "seconds_per_upper_iteration": math.nan}
    return {"mean_epoch_time_s": float(np.mean(times)),
            "seconds_per_upper_iteration": float(np.sum(times) / sum(h["upper_iterations"] for h in history))}


def plot(out: Path, history: list[dict], a: np.ndarray, corrupt: int, pretrain: dict, name: str,
         method: str) -> None:
    """accuracy.png (test/train/val per epoch, exact formula) and importances.png
    (histogram of final importances, clean vs corrupted; mean importance per epoch)."""
    fig = experiment.new_figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    epochs = [h["epoch"] for h in history]
    for key in ("test", "train", "val"):
        ax.plot(epochs, [h[f"{key}_accuracy_exact"] for h in history], marker="o", label=key)
    ax.axhline(pretrain["test_accuracy_exact"], color="grey", ls="--", label="test after pre-training (val-only)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{name} ({method})")
    ax.legend()
    experiment.save_figure_atomic(fig, out / "accuracy.png", dpi=100, bbox_inches="tight")

    fig = experiment.new_figure(figsize=(10, 4))
    ax = fig.add_subplot(1, 2, 1)
    bins = np.linspace(0, 1, 41)
    ax.hist(a[corrupt:], bins=bins, alpha=0.6, label=f"clean ({len(a) - corrupt})")
    ax.hist(a[:corrupt], bins=bins, alpha=0.6, label=f"corrupted ({corrupt})")
    ax.set_xlabel("importance a")
    ax.set_ylabel("training points")
    ax.set_yscale("log")
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(epochs, [h["mean_importance_clean"] for h in history], marker="o", label="clean")
    ax.plot(epochs, [h["mean_importance_corrupted"] for h in history], marker="o", label="corrupted")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean importance")
    ax.legend()
    experiment.save_figure_atomic(fig, out / "importances.png", dpi=100, bbox_inches="tight")
