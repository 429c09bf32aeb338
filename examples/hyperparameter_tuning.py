"""Learn L2 weight-decay coefficients of a Keras model on MNIST with the penalty method,
and compare with the best of a grid search over one global coefficient on the same budget.

The bilevel problem (u = the log decay coefficients s, v = the model's weights w)::

    min_s  f(s, w) = CE(validation set; w)
    s.t.   w in argmin_w g(s, w) = CE(training set; w) + 1/2 sum_j exp(s_j) ||w_j||^2

``--decay per-feature`` gives every input pixel j its own coefficient on its row of the
first kernel (784 coefficients, plus one per further layer); ``--decay per-layer`` one per
kernel. Biases are not decayed. The grid search trains the same model from the same
initial weights once per global coefficient, each for as many Adam steps as the Penalty
run takes on w, and keeps the candidate with the best validation accuracy. Both report
validation and test accuracy and wall time.

    python examples/hyperparameter_tuning.py                       # ~1 min on 2 CPU cores
    python examples/hyperparameter_tuning.py --decay per-layer --hidden 64
"""

from __future__ import annotations

import argparse
import math
import time

import keras
import numpy as np
import tensorflow as tf

import penalty_tf as ptf
from mnist_splits import load_splits
from penalty_tf.files import writable_file_argument, write_json_atomic
from penalty_tf.losses import sparse_softmax_cross_entropy


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=1000, help="training examples (first of MNIST train)")
    p.add_argument("--n-val", type=int, default=1000, help="validation examples (the next ones)")
    p.add_argument("--n-test", type=int, default=10000, help="test examples (MNIST test set)")
    p.add_argument("--hidden", type=int, default=0, help="hidden units (0: softmax regression)")
    p.add_argument("--decay", choices=["per-feature", "per-layer"], default="per-feature")
    p.add_argument("--iterations", type=int, default=300, help="upper-level iterations")
    p.add_argument("--lower-steps", type=int, default=10, help="T: lower steps per iteration")
    p.add_argument("--initial-decay", type=float, default=1e-4)
    p.add_argument("--upper-lr", type=float, default=0.1, help="Adam step on log-decays")
    p.add_argument("--lower-lr", type=float, default=1e-3, help="Adam step on the weights")
    p.add_argument("--rho0", type=float, default=10.0, help="initial penalty rho")
    p.add_argument("--lamb0", type=float, default=10.0, help="initial weight lambda of g in h_lower")
    p.add_argument("--eps0", type=float, default=1e-2, help="initial tolerance")
    p.add_argument("--c-lamb", type=float, default=1.0, help="lambda's factor when the test passes")
    p.add_argument("--grid", type=float, nargs="*", default=[0.0, 1e-4, 1e-3, 1e-2, 1e-1])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="directory holding mnist.npz")
    p.add_argument("--out", default=None, type=writable_file_argument,   # checked now, not after the work
                   help="write the results to this JSON file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    return args


def make_model(hidden: int, seed: int) -> keras.Model:
    """Softmax regression (hidden = 0) or a one-hidden-layer MLP, returning logits."""
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Dense(hidden, activation="relu")] if hidden else []
    return keras.Sequential([keras.Input((784,)), *layers, keras.layers.Dense(10)])


def kernels(model):
    return [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]


def n_coefficients(model, decay: str) -> int:
    n = len(kernels(model))
    return 784 + n - 1 if decay == "per-feature" else n


def decay_term(model, log_decay, decay: str) -> tf.Tensor:
    """``1/2 sum_j exp(s_j) ||w_j||^2`` over rows of the first kernel (per-feature) or
    whole kernels (per-layer)."""
    coeff = tf.exp(log_decay)
    ks = kernels(model)
    if decay == "per-feature":
        first = tf.reduce_sum(coeff[:784] * tf.reduce_sum(tf.square(ks[0]), axis=1))
        rest = [c * tf.reduce_sum(tf.square(k)) for c, k in zip(tf.unstack(coeff[784:]), ks[1:])]
    else:
        first, rest = 0.0, [c * tf.reduce_sum(tf.square(k)) for c, k in zip(tf.unstack(coeff), ks)]
    return 0.5 * tf.add_n([first, *rest])


def training_loss(model, log_decay, x, y, decay: str) -> tf.Tensor:
    """g: ``CE(x, y; w) + 1/2 sum_j exp(s_j) ||w_j||^2``."""
    ce = tf.reduce_mean(sparse_softmax_cross_entropy(y, model(x)))
    return ce + decay_term(model, log_decay, decay)


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=2000, verbose=0), axis=1) == y))


def tune_with_penalty(args, train, val, initial_weights):
    """Learn the log-decays s with Penalty; returns the trained model, s, and the run's logs."""
    model = make_model(args.hidden, args.seed)
    model.set_weights(initial_weights)
    log_decay = tf.Variable(tf.fill([n_coefficients(model, args.decay)], math.log(args.initial_decay)),
                            name="log_decay")

    def lower_loss(batch):                       # g: training loss + weight decay
        x, y, _, _ = batch
        return training_loss(model, log_decay, x, y, args.decay)

    def upper_loss(batch):                       # f: validation loss
        _, _, xv, yv = batch
        return tf.reduce_mean(sparse_softmax_cross_entropy(yv, model(xv)))

    solver = ptf.Penalty(upper_loss, lower_loss, upper_vars=[log_decay],
                         lower_vars=model.trainable_variables,
                         upper_optimizer=args.upper_lr, lower_optimizer=args.lower_lr,
                         schedule=ptf.PenaltySchedule(rho0=args.rho0, lamb0=args.lamb0, eps0=args.eps0,
                                                      c_lamb=args.c_lamb))
    # Full batch: the same (train, val) batch at every upper iteration.
    data = tf.data.Dataset.from_tensors((*train, *val)).repeat(args.iterations)
    history = solver.run(data, epochs=1, lower_steps=args.lower_steps, verbose=0 if args.quiet else 1)
    return model, log_decay.numpy(), {k: v[-1] for k, v in history.history.items()}


def fit_lower(args, train_data, initial_weights, log_decay) -> keras.Model:
    """Plain training on the training set alone (the lower problem g with fixed decays),
    for as many Adam steps as the Penalty run takes on the weights."""
    model = make_model(args.hidden, args.seed)
    model.set_weights(initial_weights)
    log_decay = tf.constant(log_decay, tf.float32)
    loop = ptf.optimizers.make_train_loop(lambda batch: training_loss(model, log_decay, *batch, args.decay),
                                          model.trainable_variables, ptf.tf1_adam(args.lower_lr))
    loop(tuple(tf.constant(a) for a in train_data), tf.constant(args.iterations * args.lower_steps))
    return model


def global_log_decay(args, decay: float) -> np.ndarray:
    """The log-coefficients of one decay on every kernel (-inf for none)."""
    n = n_coefficients(make_model(args.hidden, args.seed), args.decay)
    with np.errstate(divide="ignore"):
        return np.full(n, np.log(decay), np.float32)


def main(argv=None) -> dict:
    args = parse_args(argv)
    train, val, test = load_splits(args.data_dir, args.n_train, args.n_val, args.n_test)
    initial_weights = make_model(args.hidden, args.seed).get_weights()

    start = time.perf_counter()
    model, log_decay, logs = tune_with_penalty(args, train, val, initial_weights)
    tuned = time.perf_counter() - start
    refit = fit_lower(args, train, initial_weights, log_decay)
    penalty = {"val_acc": accuracy(refit, *val), "test_acc": accuracy(refit, *test),
               "wall_time_s": time.perf_counter() - start, "tuning_time_s": tuned,
               "run_model_val_acc": accuracy(model, *val), "run_model_test_acc": accuracy(model, *test),
               "final_f": logs["f"], "final_rho": logs["rho"],
               "decay_quantiles": np.quantile(np.exp(log_decay), [0, 0.1, 0.5, 0.9, 1]).tolist()}

    start = time.perf_counter()
    candidates = []
    for decay in args.grid:
        m = fit_lower(args, train, initial_weights, global_log_decay(args, decay))
        candidates.append({"decay": decay, "val_acc": accuracy(m, *val), "test_acc": accuracy(m, *test)})
    best = max(candidates, key=lambda c: c["val_acc"], default=None)
    grid = {"best": best, "candidates": candidates, "wall_time_s": time.perf_counter() - start}

    result = {"config": vars(args), "penalty": penalty, "grid_search": grid}
    print(f"Penalty ({args.decay} decay), refit on the training set: val acc "
          f"{penalty['val_acc']:.4f}  test acc {penalty['test_acc']:.4f}  wall "
          f"{penalty['wall_time_s']:.1f} s (the run's own model: val acc "
          f"{penalty['run_model_val_acc']:.4f}, test acc {penalty['run_model_test_acc']:.4f})")
    if best:
        print(f"Grid search (best decay {best['decay']:g} of {len(args.grid)}): val acc "
              f"{best['val_acc']:.4f}  test acc {best['test_acc']:.4f}  wall {grid['wall_time_s']:.1f} s")
    if args.out:
        write_json_atomic(args.out, result)
    return result


if __name__ == "__main__":
    main()
