"""Learn per-example importance weights of noisy training data for your own Keras model
and tf.data pipeline (the paper's importance-learning problem, written as a user would).

A fraction of the training labels is replaced by random wrong labels; a small validation
set is clean. With u_i one logit per training example and a_i = sigmoid(u_i)::

    min_u  f(u, w) = CE(clean validation batch; w)
    s.t.   w in argmin_w g(u, w) = sum_i a_i CE_i(w) / sum_i a_i     (training batch)

The training dataset carries each example's index, so the batch's weights are
``tf.gather(u, index)``; every element of the zipped dataset is one upper-level iteration.
Reported: test accuracy of the model trained with learned weights vs the same model
trained without weights on the noisy plus clean data, and on the clean data alone; and how well the weights separate clean from
noisy examples (the fraction of noisy examples among the lowest-weighted ones).

    python examples/reweighting_noisy_labels.py            # ~1-2 min on 2 CPU cores
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
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-val", type=int, default=500, help="clean validation examples")
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--noise", type=float, default=0.4, help="fraction of wrong training labels")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lower-steps", type=int, default=5)
    p.add_argument("--upper-lr", type=float, default=0.1, help="Adam step on the weight logits")
    p.add_argument("--lower-lr", type=float, default=1e-3, help="Adam step on the model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--log-dir", default=None, help="write TensorBoard scalars here")
    p.add_argument("--out", default=None, type=writable_file_argument,   # checked now, not after the work
                   help="write the results to this JSON file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    return args


def noisy_mnist(args):
    """Train (with ``noise`` of its labels replaced by a different random class), clean
    validation (the next rows) and test arrays; and the mask of the noisy examples."""
    (x, y), val, test = load_splits(args.data_dir, args.n_train, args.n_val, args.n_test)
    rng = np.random.default_rng(args.seed)
    y_train = y.copy()
    noisy = rng.random(len(y)) < args.noise
    y_train[noisy] = (y_train[noisy] + rng.integers(1, 10, noisy.sum())) % 10
    return (x, y_train), val, test, noisy


def my_model(seed: int) -> keras.Model:
    """Any Keras model returning logits works; here a small MLP."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(128, activation="relu"),
                             keras.layers.Dense(10)])


def bilevel_dataset(train, val, args) -> tf.data.Dataset:
    """Elements ``((index, x, y), (x_val, y_val))``: a shuffled training batch with the
    examples' indices, and a batch of the (repeated) clean validation set."""
    index = np.arange(len(train[0]), dtype=np.int32)
    train_ds = (tf.data.Dataset.from_tensor_slices((index, *train))
                .shuffle(len(index), seed=args.seed).batch(args.batch_size))
    val_ds = tf.data.Dataset.from_tensor_slices(val).shuffle(len(val[0]), seed=args.seed).repeat()
    return tf.data.Dataset.zip(train_ds, val_ds.batch(args.batch_size)).prefetch(2)


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=2000, verbose=0), axis=1) == y))


def reweight(args, train, val):
    """The bilevel run; returns the model and the learned weights a = sigmoid(u)."""
    model = my_model(args.seed)
    u = tf.Variable(tf.zeros(len(train[0])), name="importance_logits")

    def lower_loss(batch):                # g: importance-weighted training loss
        (index, x, y), _ = batch
        a = tf.sigmoid(tf.gather(u, index))
        ce = sparse_softmax_cross_entropy(y, model(x))
        return tf.reduce_sum(a * ce) / tf.reduce_sum(a)

    def upper_loss(batch):                # f: loss on a clean validation batch
        _, (x_val, y_val) = batch
        return tf.reduce_mean(sparse_softmax_cross_entropy(y_val, model(x_val)))

    solver = ptf.Penalty(upper_loss, lower_loss, upper_vars=[u], lower_vars=model.trainable_variables,
                         upper_optimizer=args.upper_lr, lower_optimizer=args.lower_lr,
                         schedule=ptf.PenaltySchedule(rho0=1.0, lamb0=1.0))
    callbacks = [ptf.callbacks.TensorBoard(args.log_dir)] if args.log_dir else []
    solver.run(bilevel_dataset(train, val, args), epochs=args.epochs, lower_steps=args.lower_steps,
               callbacks=callbacks, verbose=0 if args.quiet else 1)
    return model, tf.sigmoid(u).numpy()


def baseline(args, x, y):
    """The same model trained with Keras' fit on (x, y), as many steps as the lower level."""
    model = my_model(args.seed)
    model.compile(ptf.tf1_adam(args.lower_lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = args.epochs * args.lower_steps * (-(-args.n_train // args.batch_size))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=args.seed).repeat()
    model.fit(ds.batch(args.batch_size), epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return model


def main(argv=None) -> dict:
    args = parse_args(argv)
    train, val, test, noisy = noisy_mnist(args)

    start = time.perf_counter()
    model, weights = reweight(args, train, val)
    wall = time.perf_counter() - start
    lowest = np.argsort(weights)[:int(noisy.sum())]
    result = {"config": vars(args),
              "penalty": {"test_acc": accuracy(model, *test), "wall_time_s": wall,
                          "noisy_among_lowest_weights": float(noisy[lowest].mean()),
                          "mean_weight_clean": float(weights[~noisy].mean()),
                          "mean_weight_noisy": float(weights[noisy].mean())}}
    # Baselines on the same data without the bilevel structure (Penalty's f also trains the
    # model on the clean validation set, so these see it too).
    for name, (x, y) in {"noisy_plus_clean": (np.concatenate([train[0], val[0]]),
                                              np.concatenate([train[1], val[1]])),
                         "clean_only": val}.items():
        start = time.perf_counter()
        result[name] = {"test_acc": accuracy(baseline(args, x, y), *test),
                        "wall_time_s": time.perf_counter() - start}
    p, b, c = result["penalty"], result["noisy_plus_clean"], result["clean_only"]
    print(f"Penalty reweighting: test acc {p['test_acc']:.4f}, {100 * p['noisy_among_lowest_weights']:.1f} % "
          f"of the lowest-weighted examples are noisy, mean weight clean {p['mean_weight_clean']:.3f} "
          f"vs noisy {p['mean_weight_noisy']:.3f}, wall {p['wall_time_s']:.1f} s")
    print(f"No reweighting, noisy + clean data: test acc {b['test_acc']:.4f}; clean data only: "
          f"test acc {c['test_acc']:.4f}")
    if args.out:
        write_json_atomic(args.out, result)
    return result


if __name__ == "__main__":
    main()
