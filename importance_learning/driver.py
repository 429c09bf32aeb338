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
4. ``--epochs`` epochs: shuffle, minibatches of ``--batch-size`` training points, each with
   ``--batch-size`` validation points drawn without replacement; one Penalty / ApproxGrad
   upper-level iteration per minibatch through the length-batch_size importance slot
   (`importance_learning.bilevel`); CIFAR10 augments both minibatches; ApproxGrad halves
   lr_u and lr_v after every ``--halve-every``-th epoch; then renormalise the importances;
5. per epoch: accuracies (original formula and exact), the last minibatch's loss terms and
   penalty state, importance statistics and clean-vs-corrupted separation, wall time; a
   checkpoint (``checkpoint.npz``) of everything needed to continue (``--resume``);
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
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from importance_learning import core
from penalty_tf.paper import experiment, published as paper

BILEVEL_METHODS = ("penalty", "approxgrad")
BASELINES = ("oracle", "val-only", "train-val")
CHECKPOINT = "checkpoint.npz"


class Split(NamedTuple):
    """Images float32 (as the model takes them), integer labels 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclasses.dataclass
class DatasetSpec:
    """What differs between the datasets' scripts (the original's per-script constants).

    ``defaults[method]`` holds the original's hyperparameters for that method (flags
    default to them); ``load(args)`` returns the `Split` before noise.
    """

    experiment: str
    model: str
    load: Callable[[argparse.Namespace], Split]
    defaults: dict[str, dict[str, Any]]
    methods: tuple = BILEVEL_METHODS
    augment: Optional[Callable[[np.ndarray, np.random.Generator], np.ndarray]] = None
    augment_val: bool = True
    model_fn: Optional[Callable[[argparse.Namespace], Any]] = None
    bn_training: bool = False
    retrain: bool = False
    description: str = ""
    extra_flags: Optional[Callable[[argparse.ArgumentParser], None]] = None


# Hyperparameter flags: name -> (type, help). Defaults come from DatasetSpec.defaults.
HYPER = {
    "noise": (float, "label-noise fraction: the first int(noise N) training labels are corrupted"),
    "batch_size": (int, "training and validation minibatch size"),
    "lr_u": (float, "Adam learning rate of the importance logits (upper level)"),
    "lr_v": (float, "Adam learning rate of the classifier (lower level)"),
    "lr_p": (float, "ApproxGrad: Adam learning rate of the linear-system vector p"),
    "sig": (float, "ApproxGrad: sigma of the linear system"),
    "linear_steps": (int, "ApproxGrad: linear-system steps per upper iteration (niter2; default: = --lower-steps, as the original)"),
    "rho0": (float, "Penalty: initial rho"),
    "lamb0": (float, "Penalty: initial lambda"),
    "eps0": (float, "Penalty: initial tolerance eps"),
    "nu0": (float, "Penalty: initial value of every multiplier entry"),
    "c_rho": (float, "Penalty: rho factor on convergence"),
    "c_lamb": (float, "Penalty: lambda factor on convergence"),
    "c_eps": (float, "Penalty: eps factor on convergence"),
    "pretrain_epochs": (int, "epochs of pre-training on the validation set"),
    "pretrain_lr": (float, "Adam learning rate of pre-training (and of the baselines)"),
    "init_low": (float, "initial importance where the pretrained model disagrees with the label"),
    "init_high": (float, "initial importance where it agrees"),
    "halve_every": (int, "ApproxGrad: halve lr_u and lr_v after every k-th epoch (0: never)"),
    "first_epoch": (int, "index of the first epoch (the original's loops start at 0 or 1; "
                         "matters for the halving schedule)"),
    "train_rounding": (str, "floor|ceil: minibatches per epoch of plain training"),
    "eval_rounding": (str, "floor|ceil: batches in the original accuracy formula"),
    "retrain_epochs": (int, "mnist_small: epochs of retraining on the selected points + validation"),
    "retrain_lr": (float, "mnist_small: Adam learning rate of the retraining"),
    "select_threshold": (float, "mnist_small: importance above which a training point is selected"),
}

COMMON_DEFAULTS = dict(batch_size=200, c_rho=1.1, c_lamb=0.9, c_eps=0.9, sig=1e-3,
                       halve_every=0, first_epoch=0, lr_p=0.0, linear_steps=0,
                       rho0=1e-2, lamb0=1e-2, eps0=1e-2, nu0=0.0,
                       retrain_epochs=0, retrain_lr=1e-4, select_threshold=0.9)


def build_parser(spec: DatasetSpec) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {spec.experiment}", description=spec.description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_flags(parser, methods=list(spec.methods) + list(BASELINES),
                                default_method=spec.methods[0], epochs=1, lower_steps=1, resume=True)
    # --epochs and --lower-steps default to the method's original values (None = that default).
    for action in parser._actions:
        if action.dest in ("epochs", "lower_steps"):
            action.default = None
            action.help = (action.help or "").split(" (default")[0] + " (default: the original's, per method)"
    hyper = parser.add_argument_group("hyperparameters (default: the original's value for --method)")
    for name, (kind, text) in HYPER.items():
        if name in ("retrain_epochs", "retrain_lr", "select_threshold") and not spec.retrain:
            continue
        hyper.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    parser.add_argument("--train-size", type=int, default=None,
                        help="use only the first N training points (reduced budgets; noise is then "
                             "on the first int(noise N) of them)")
    parser.add_argument("--test-size", type=int, default=None,
                        help="evaluate on the first N test points only (tiny CI runs)")
    parser.add_argument("--xla", action="store_true", help="compile the solver step with XLA")
    if spec.extra_flags is not None:
        spec.extra_flags(parser)
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def resolve_settings(spec: DatasetSpec, args: argparse.Namespace) -> dict[str, Any]:
    """Fill every unset flag with the original's value for the method (baselines use the
    Penalty defaults, i.e. the paper's main settings)."""
    method = args.method
    base = spec.defaults["penalty" if method in BASELINES else method]
    defaults = {**COMMON_DEFAULTS, **base}
    for name in list(HYPER) + ["epochs", "lower_steps"]:
        if not hasattr(args, name):
            continue
        if getattr(args, name) is None:
            setattr(args, name, defaults.get(name))
    if method in BASELINES and args.lower_steps is None:
        args.lower_steps = 0
    if args.method == "approxgrad" and not args.linear_steps:
        args.linear_steps = args.lower_steps
    _validate(args)
    return vars(args)


def _validate(args: argparse.Namespace) -> None:
    err = experiment.ExperimentError
    if not 0.0 <= args.noise <= 1.0:
        raise err(f"--noise must be in [0, 1], got {args.noise}")
    if args.batch_size < 1:
        raise err("--batch-size must be >= 1")
    for name in ("train_rounding", "eval_rounding"):
        if getattr(args, name) not in ("floor", "ceil"):
            raise err(f"--{name.replace('_', '-')} must be floor or ceil")
    if not 0.0 < args.init_low < 1.0 or not 0.0 < args.init_high < 1.0:
        raise err("--init-low and --init-high must be in (0, 1)")
    for name in ("pretrain_epochs", "halve_every"):
        if getattr(args, name) < 0:
            raise err(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("lr_u", "lr_v", "pretrain_lr"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise err(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if args.train_size is not None and args.train_size < args.batch_size:
        raise err(f"--train-size must be >= --batch-size ({args.batch_size})")
    if args.test_size is not None and args.test_size < 1:
        raise err("--test-size must be >= 1")


# --------------------------------------------------------------------------- data


def prepare_data(spec: DatasetSpec, args: argparse.Namespace):
    """The split with noisy training labels; returns (split, clean_train_labels, corrupt)."""
    split = spec.load(args)
    if args.train_size is not None:
        if args.train_size > len(split.x_train):
            raise experiment.ExperimentError(
                f"--train-size {args.train_size} exceeds the {len(split.x_train)} training points")
        split = split._replace(x_train=split.x_train[:args.train_size], y_train=split.y_train[:args.train_size])
    if args.test_size is not None:
        split = split._replace(x_test=split.x_test[:args.test_size], y_test=split.y_test[:args.test_size])
    if len(split.x_val) < args.batch_size and args.method in BILEVEL_METHODS:
        raise experiment.ExperimentError(
            f"the validation set has {len(split.x_val)} points, fewer than --batch-size {args.batch_size}")
    noise_rng = np.random.default_rng([args.seed, 1])
    noisy, corrupt = core.inject_noise(split.y_train, args.noise, noise_rng)
    return split._replace(y_train=noisy), split.y_train, corrupt


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


# ------------------------------------------------------------------------ checkpoints


def save_checkpoint(out: Path, *, epoch: int, z: np.ndarray, model, slot, solver, rng,
                    state: dict[str, Any]) -> None:
    """Everything needed to continue after ``epoch``: model weights, importance logits and
    slot, solver state (optimizer moments/step counters/learning rates, rho, lambda, eps, nu
    or ApproxGrad's p), the NumPy RNG state and the history. Atomic (temp file + rename)."""
    from importance_learning.bilevel import solver_variables

    arrays = {"z": z, "slot": slot.numpy()}
    for i, w in enumerate(model.get_weights()):
        arrays[f"model_{i}"] = w
    for i, v in enumerate(solver_variables(solver)):
        arrays[f"solver_{i}"] = np.asarray(v.numpy())
    meta = {"epoch": epoch, "rng": rng.bit_generator.state, "iteration": solver.iteration,
            "state": state}
    arrays["meta"] = np.array(json.dumps(experiment.to_jsonable(meta)))
    experiment.save_npz_atomic(out / CHECKPOINT, **arrays)


def load_checkpoint(path: Path, *, model, slot, solver, rng) -> tuple[int, np.ndarray, dict]:
    from importance_learning.bilevel import solver_variables

    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            weights = [data[f"model_{i}"] for i in range(len(model.get_weights()))]
            variables = solver_variables(solver)
            values = [data[f"solver_{i}"] for i in range(len(variables))]
            z, slot_value = data["z"], data["slot"]
    except (OSError, KeyError, ValueError, EOFError) as error:
        raise experiment.ExperimentError(
            f"cannot resume: {path} is unreadable or from another setting ({error}); "
            "remove it or choose another --out") from error
    try:
        model.set_weights(weights)
        for v, value in zip(variables, values):
            v.assign(value)
        slot.assign(slot_value)
    except ValueError as error:
        raise experiment.ExperimentError(
            f"cannot resume: {path} does not match this model/method ({error})") from error
    rng.bit_generator.state = meta["rng"]
    solver.iteration = int(meta["iteration"])
    return int(meta["epoch"]), z, meta["state"]


# --------------------------------------------------------------------------- runs


def _accuracies(clf, split: Split, args) -> dict[str, float]:
    out = {}
    for name, x, y in (("test", split.x_test, split.y_test), ("train", split.x_train, split.y_train),
                       ("val", split.x_val, split.y_val)):
        pred = clf.predict(x, args.batch_size)
        out[f"{name}_accuracy"] = 100.0 * core.original_accuracy(pred, y, args.batch_size, args.eval_rounding)
        out[f"{name}_accuracy_exact"] = 100.0 * core.exact_accuracy(pred, y)
    return out


def _config_key(args) -> dict[str, Any]:
    """The flags that must agree between a checkpoint and a resumed run."""
    skip = {"resume", "quiet", "out", "data_dir", "stop_after", "epochs", "xla"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def run(spec: DatasetSpec, argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = build_parser(spec).parse_args(argv)
    resolve_settings(spec, args)
    out = experiment.resolve_out_dir(args, spec.experiment)
    import keras
    import tensorflow as tf

    from importance_learning.bilevel import Classifier
    from penalty_tf.models import classifiers

    experiment.seed_everything(args.seed)
    with experiment.Timer() as timer:
        split, clean_labels, corrupt = prepare_data(spec, args)
        keras.utils.set_random_seed(args.seed)
        model = spec.model_fn(args) if spec.model_fn is not None else classifiers.build(spec.model)
        clf = Classifier(model, jit_compile=args.xla, training=spec.bn_training)
        rng = np.random.default_rng([args.seed, 2])
        if args.method in BASELINES:
            metrics = run_baseline(args, clf, split, clean_labels, corrupt, rng)
        else:
            metrics = run_bilevel(spec, args, out, clf, split, clean_labels, corrupt, rng)
    if metrics is None:  # --stop-after (tests: simulate a killed run)
        return {}
    published = paper.published_dict(experiment=spec.experiment, method=args.method, noise=args.noise)
    result = experiment.write_result(out, experiment=spec.experiment, method=args.method, config=vars(args),
                                     metrics=metrics, published=published, wall_time_s=timer.elapsed)
    if not args.quiet:
        print(f"test accuracy {metrics['test_accuracy']:.2f} % (exact {metrics['test_accuracy_exact']:.2f} %)"
              + (f"; paper: {published['mean']} ± {published['sd']}" if published else ""), flush=True)
    return result


def run_baseline(args, clf, split: Split, clean_labels, corrupt: int, rng) -> dict[str, Any]:
    if args.method == "val-only":
        x, y, epochs = split.x_val, split.y_val, args.pretrain_epochs
    elif args.method == "oracle":
        x = np.concatenate([split.x_train[corrupt:], split.x_val])
        y = np.concatenate([split.y_train[corrupt:], split.y_val])
        epochs = args.epochs
    else:  # train-val
        x = np.concatenate([split.x_train, split.x_val])
        y = np.concatenate([split.y_train, split.y_val])
        epochs = args.epochs
    bar = experiment.progress(epochs, quiet=args.quiet, unit_name="epoch")
    start = time.perf_counter()
    clf.train_simple(x, y, epochs, args.pretrain_lr, rng, batch_size=args.batch_size,
                     rounding=args.train_rounding, progress=bar.update)
    metrics = _accuracies(clf, split, args)
    metrics.update(training_points=len(x), training_epochs=epochs, corrupt=corrupt,
                   train_time_s=time.perf_counter() - start)
    return metrics


def run_bilevel(spec: DatasetSpec, args, out: Path, clf, split: Split, clean_labels, corrupt: int,
                rng) -> Optional[dict[str, Any]]:
    import tensorflow as tf

    from importance_learning.bilevel import build_solver
    from penalty_tf.solvers import NonFiniteError

    model = clf.model
    bs = args.batch_size
    slot = tf.Variable(tf.zeros(bs), name="importance_slot")
    solver = build_solver(args.method, model, slot, {**vars(args), "bn_training": spec.bn_training},
                          jit_compile=args.xla)
    ckpt = out / CHECKPOINT
    n = len(split.x_train)
    if args.resume and ckpt.is_file():
        next_epoch, z, state = load_checkpoint(ckpt, model=model, slot=slot, solver=solver, rng=rng)
        if state["config"] != experiment.to_jsonable(_config_key(args)):
            raise experiment.ExperimentError(
                f"cannot resume: {ckpt} was written with other settings; use the same flags or another --out")
        if not args.quiet:
            print(f"resuming from {ckpt} at epoch {next_epoch}", flush=True)
    else:
        # Pre-training on the validation set (the original's train_simple) and importance init.
        bar = experiment.progress(args.pretrain_epochs, quiet=args.quiet, unit_name="pre-training epoch")
        clf.train_simple(split.x_val, split.y_val, args.pretrain_epochs, args.pretrain_lr, rng,
                         batch_size=bs, rounding=args.train_rounding, progress=bar.update)
        pre = _accuracies(clf, split, args)
        predicted = clf.predict(split.x_train, bs)
        z = core.initial_logits(predicted, split.y_train, args.init_low, args.init_high)
        init_sep = core.separation(core.importance(z), corrupt)
        state = {"config": _config_key(args), "pretrain": {**pre, **init_sep}, "history": []}
        next_epoch = args.first_epoch
        save_checkpoint(out, epoch=next_epoch, z=z, model=model, slot=slot, solver=solver, rng=rng, state=state)
    history = state["history"]
    last_epoch = args.first_epoch + args.epochs - 1
    nb = n // bs
    extra = {"linear_steps": args.linear_steps} if args.method == "approxgrad" else {}
    epochs_run = 0
    for epoch in range(next_epoch, last_epoch + 1):
        if args.stop_after is not None and epochs_run >= args.stop_after:
            return None
        start = time.perf_counter()
        order = rng.permutation(n)
        bar = experiment.progress(nb, quiet=args.quiet, unit_name="minibatch")
        converged = 0
        out_step = {}
        for b in range(nb):
            idx = order[b * bs:(b + 1) * bs]
            vidx = rng.choice(len(split.x_val), bs, replace=False)
            xt, xv = split.x_train[idx], split.x_val[vidx]
            if spec.augment is not None:
                xt = spec.augment(xt, rng)
                if spec.augment_val:          # the original's quirk: validation augmented too
                    xv = spec.augment(xv, rng)
            slot.assign(z[idx].astype(np.float32))
            batch = (tf.constant(xt), tf.constant(split.y_train[idx], tf.int32), tf.constant(xv),
                     tf.constant(split.y_val[vidx], tf.int32))
            try:
                out_step = solver.step(batch, lower_steps=args.lower_steps, **extra)
            except NonFiniteError as error:
                raise experiment.ExperimentError(
                    f"{error} (epoch {epoch}, minibatch {b}). Nothing was lost: {ckpt} holds the state "
                    f"after the last finished epoch; rerun with --resume and smaller learning rates.") from None
            z[idx] = slot.numpy()
            if args.method == "penalty":
                converged += int(bool(out_step["converged"]))
            bar.update(b + 1, [("f", float(out_step["f"]))])
        if args.method == "approxgrad" and args.halve_every and epoch > 0 and epoch % args.halve_every == 0:
            lr_u, lr_v = solver.upper.learning_rates()[0], solver.lower.learning_rates()[0]
            solver.set_learning_rates(upper=lr_u / 2, lower=lr_v / 2)   # before renormalisation
        z = core.renormalise(z)
        epoch_time = time.perf_counter() - start
        record = {"epoch": epoch, "epoch_time_s": epoch_time, "upper_iterations": nb}
        record.update({k: float(v) for k, v in out_step.items() if k not in ("status",)})
        if args.method == "penalty":
            record["convergence_events"] = converged
            record.update(lr_u=solver.upper.learning_rates()[0], lr_v=solver.lower.learning_rates()[0])
            record["h_total"] = record["f"] + record["penalty"] + record["nu_term"] + record["lamb_g"]
        else:
            record.update(lr_u=solver.upper.learning_rates()[0], lr_v=solver.lower.learning_rates()[0])
        record.update(_accuracies(clf, split, args))
        record.update(core.separation(core.importance(z), corrupt))
        history.append(record)
        if not args.quiet:
            print(f"epoch {epoch}: test {record['test_accuracy']:.2f} % train {record['train_accuracy']:.2f} % "
                  f"val {record['val_accuracy']:.2f} %  a clean {record['mean_importance_clean']:.3f} "
                  f"corrupted {record['mean_importance_corrupted']:.3f}  {epoch_time:.1f} s", flush=True)
        save_checkpoint(out, epoch=epoch + 1, z=z, model=model, slot=slot, solver=solver, rng=rng, state=state)
        epochs_run += 1
    a = core.importance(z)
    metrics: dict[str, Any] = {"corrupt": corrupt, "training_points": n,
                               "pretrain": state["pretrain"], "epochs": history}
    final = history[-1] if history else dict(state["pretrain"])
    for key in ("test_accuracy", "test_accuracy_exact", "train_accuracy", "train_accuracy_exact",
                "val_accuracy", "val_accuracy_exact"):
        metrics[f"bilevel_{key}"] = final[key]
    metrics.update(core.separation(a, corrupt))
    metrics["val_only_test_accuracy"] = state["pretrain"]["test_accuracy"]
    times = [h["epoch_time_s"] for h in history]
    metrics["mean_epoch_time_s"] = float(np.mean(times)) if times else math.nan
    metrics["seconds_per_upper_iteration"] = (float(np.sum(times) / sum(h["upper_iterations"] for h in history))
                                              if times else math.nan)
    if spec.retrain:
        metrics.update(retrain(args, clf, split, a, corrupt))
        metrics["test_accuracy"] = metrics["retrain_test_accuracy"]
        metrics["test_accuracy_exact"] = metrics["retrain_test_accuracy_exact"]
    else:
        metrics["test_accuracy"] = final["test_accuracy"]
        metrics["test_accuracy_exact"] = final["test_accuracy_exact"]
    experiment.save_npz_atomic(out / "importances.npz", importance=a, logits=z, noisy_labels=split.y_train,
                               clean_labels=clean_labels, corrupt=np.array(corrupt))
    plot(out, history, a, corrupt, state["pretrain"], spec.experiment, args.method)
    return metrics


def retrain(args, clf, split: Split, a: np.ndarray, corrupt: int) -> dict[str, Any]:
    """mnist_small: fresh classifier weights, train on (a > threshold) ∪ validation."""
    import keras

    from penalty_tf.models import classifiers

    selected = np.flatnonzero(a > args.select_threshold)
    x = np.concatenate([split.x_train[selected], split.x_val])
    y = np.concatenate([split.y_train[selected], split.y_val])
    keras.utils.set_random_seed(args.seed + 1)          # the original re-ran every initialiser
    fresh = classifiers.build(clf.model.name)
    clf.model.set_weights(fresh.get_weights())
    rng = np.random.default_rng([args.seed, 3])
    bar = experiment.progress(args.retrain_epochs, quiet=args.quiet, unit_name="retraining epoch")
    clf.train_simple(x, y, args.retrain_epochs, args.retrain_lr, rng, batch_size=args.batch_size,
                     rounding=args.train_rounding, progress=bar.update)
    acc = _accuracies(clf, split, args)
    return {"selected_points": int(len(selected)),
            "selected_corrupted": int(np.sum(selected < corrupt)),
            "retrain_test_accuracy": acc["test_accuracy"],
            "retrain_test_accuracy_exact": acc["test_accuracy_exact"]}


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
