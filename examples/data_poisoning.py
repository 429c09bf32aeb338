"""Upper-level variables that are data, in a box: poison a classifier's training set.

The upper variables are input images, kept in the valid pixel box [0, 1] by a projection
after every update (``upper_bounds=(0.0, 1.0)``); the same pattern serves dataset
distillation or any problem that learns inputs. The attacker adds ``--npoison`` images
with wrong labels to a clean training set so that the model trained on the union does
badly on validation data (the paper's untargeted attack, Sec. 4.3)::

    max_X  CE(validation set; w)            i.e.  f(X, w) = -CE(validation set; w)
    s.t.   w in argmin_w g(X, w) = CE(clean training set + (X, y_X); w) + 0.0025 ||w||^2
           0 <= X <= 1

Penalty settings are the paper's (rho_0 = 10, lambda_0 = 100, eps_0 = 1, nu_0 = 0,
T = 20, Adam 0.1 on the pixels and 1e-3 on the weights) with fewer upper iterations
(``--iterations``, 5000 in the paper). Reported: test accuracy of a fresh model trained on
the clean set, on the clean set plus the label-flipped starting points (no optimisation),
and on the clean set plus the optimised poisons (lower = stronger attack).

    python examples/data_poisoning.py                        # ~2 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--npoison", type=int, default=60, help="poisoned images (60 = 6 %% of the clean set)")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--iterations", type=int, default=500, help="upper-level iterations (paper: 5000)")
    p.add_argument("--lower-steps", type=int, default=20)
    p.add_argument("--fit-steps", type=int, default=2000, help="Adam steps of every plain training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, type=writable_file_argument,   # checked now, not after the work
                   help="write the results to this JSON file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    return args


def classifier(seed: int) -> keras.Model:
    """Regularised logistic regression: logits = x W (no bias), as in the paper."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, use_bias=False)])


def lower_objective(model, x, y):
    """``g = mean CE(x, y) + 0.0025 ||W||^2``."""
    ce = tf.reduce_mean(sparse_softmax_cross_entropy(y, model(x)))
    return ce + 0.0025 * tf.reduce_sum(tf.square(model.layers[0].kernel))


def fit(model, x, y, steps: int) -> keras.Model:
    """``steps`` full-batch Adam (1e-3) steps on `lower_objective`, in one graph call."""
    loop = ptf.optimizers.make_train_loop(lambda batch: lower_objective(model, *batch),
                                          model.trainable_variables, ptf.tf1_adam(1e-3))
    loop((tf.constant(x), tf.constant(y)), steps)
    return model


def test_accuracy(x, y, test, args) -> float:
    """Accuracy on the test set of a fresh model trained on (x, y)."""
    model = fit(classifier(args.seed + 1), x, y, args.fit_steps)
    return float(np.mean(np.argmax(model.predict(test[0], verbose=0), axis=1) == test[1]))


def poison(args, train, val):
    """The bilevel attack; returns the optimised poisons and their labels."""
    rng = np.random.default_rng(args.seed)
    labels = (train[1][:args.npoison] + rng.integers(1, 10, args.npoison)) % 10   # wrong labels
    images = tf.Variable(train[0][:args.npoison], name="poisons")                # start: copies
    model = fit(classifier(args.seed), *train, args.fit_steps)   # start from the clean model
    x_train, y_train = tf.constant(train[0]), tf.constant(train[1])
    x_val, y_val = tf.constant(val[0]), tf.constant(val[1])

    def lower_loss(_):
        return lower_objective(model, tf.concat([images, x_train], 0), tf.concat([labels, y_train], 0))

    def upper_loss(_):
        return -tf.reduce_mean(sparse_softmax_cross_entropy(y_val, model(x_val)))

    problem = ptf.BilevelProblem(upper_loss, lower_loss, upper_vars=[images],
                                 lower_vars=model.trainable_variables, upper_bounds=(0.0, 1.0))
    solver = ptf.make("penalty", problem, ptf.PenaltyConfig(lr_u=0.1, lr_v=1e-3, rho0=10.0, lamb0=100.0,
                                                            eps0=1.0, nu0=0.0))
    bar = keras.utils.Progbar(args.iterations, verbose=0 if args.quiet else 1)
    chunk = 50
    for done in range(0, args.iterations, chunk):       # full batch: many iterations per call
        n = min(chunk, args.iterations - done)
        out = solver.steps(None, iterations=n, lower_steps=args.lower_steps)
        bar.update(done + n, [("f", float(out["f"])), ("rho", float(out["rho"]))])
    return images.numpy(), labels


def main(argv=None) -> dict:
    args = parse_args(argv)
    train, val, test = load_splits(args.data_dir, args.n_train, args.n_val, args.n_test)
    start = time.perf_counter()
    images, labels = poison(args, train, val)
    wall = time.perf_counter() - start
    flipped = train[0][:args.npoison]
    result = {"config": vars(args), "wall_time_s": wall,
              "in_box": bool(images.min() >= 0.0 and images.max() <= 1.0),
              "mean_pixel_change": float(np.abs(images - flipped).mean()),
              "test_acc": {
                  "clean": test_accuracy(*train, test, args),
                  "label_flip": test_accuracy(np.concatenate([flipped, train[0]]),
                                              np.concatenate([labels, train[1]]), test, args),
                  "penalty_poisons": test_accuracy(np.concatenate([images, train[0]]),
                                                   np.concatenate([labels, train[1]]), test, args)}}
    acc = result["test_acc"]
    print(f"Test accuracy: clean {acc['clean']:.4f}, + {args.npoison} label-flipped points "
          f"{acc['label_flip']:.4f}, + {args.npoison} Penalty poisons {acc['penalty_poisons']:.4f} "
          f"(attack {wall:.1f} s)")
    if args.out:
        write_json_atomic(args.out, result)
    return result


if __name__ == "__main__":
    main()
