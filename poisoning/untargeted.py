"""Untargeted data-augmentation poisoning of MNIST logistic regression (Table 5, top).

    python -m poisoning.untargeted --npoison 60 --method penalty --seed 0 --out runs/untargeted60

The attacker adds ``--npoison`` points (10..60 = 1 %..6 % of the 1,000 clean training
points) to lower the test accuracy of the retrained classifier: the upper cost is the
*negative* validation cross-entropy (docs/original.md §3.8-3.9).

Data (as the original): Keras MNIST /255, flattened; the official training set is
shuffled and split into train = first 1,000, validation = next 1,000 and test = next
8,000 (the official test set is shuffled too, and then discarded). Poisons start as copies
of the first ``npoison`` training points, each with a label drawn uniformly among the 9
wrong classes (rejection sampling, as the original).

Methods (defaults = the original's settings of that method):

* ``penalty``: lr_u 0.1, lr_v 1e-3, 5,000 updates of T = 20, rho_0 10, lambda_0 100,
  eps_0 1, nu_0 0, c_rho 1.1, c_lamb = c_eps = 0.9;
* ``approxgrad``: lr_u 1e-2, lr_v 1e-3, lr_p 1e-2, sigma 1e-3, 20 + 20 steps, 5,000
  updates, lr_u and lr_v halved after updates 1001, 2001, 3001, 4001 (the original halves
  after the epoch numbered 1000, 2000, ... of a loop counted from 0);
* ``label-flip``: the paper's baseline, not in the original code: the first ``npoison``
  *validation* points with labels drawn among the 9 wrong classes, added without any
  optimisation.

Clean training and retraining: 10,001 full-batch Adam(1e-3) steps on weight decay + CE;
the classifier is re-initialised before retraining. The Table 5 number is the test
accuracy of the retrained classifier (``poisoned_test_accuracy``, %, lower = stronger).

Seeding: ``--seed`` seeds NumPy's global generator (used in the original's order for
the shuffles and poison labels, so ``--seed 0`` reproduces the splits of an original run
under ``np.random.seed(0)``) and W's initialisations. The original seeded nothing.

Writes result.json, poisons.npz (x_poison, y_poison, x_initial, y_source) and
poisons.png (originals above their poisons, like the paper's Fig. 5).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from penalty_tf.paper import experiment
from poisoning import common

NAME = "poisoning.untargeted"
TRAIN, VAL, TEST = 1000, 1000, 8000


def wrong_labels(labels: np.ndarray) -> np.ndarray:
    """A uniformly drawn wrong label for each entry (the original's rejection sampling,
    one ``np.random.randint(0, 10)`` call per try, from NumPy's global generator)."""
    out = np.array(labels)
    for i, label in enumerate(labels):
        j = label
        while j == label:
            j = np.random.randint(0, common.NCLASS)
        out[i] = j
    return out


def make_splits(mnist, npoison: int, method: str) -> common.Splits:
    """The original's splits and poison initialisation (global NumPy RNG, seeded before)."""
    x_all = common.to_float_images(mnist.x_train)
    y_all = np.asarray(mnist.y_train, np.int64)
    idx_train = np.arange(len(x_all))
    np.random.shuffle(idx_train)
    idx_test = np.arange(len(mnist.x_test))
    np.random.shuffle(idx_test)  # as the original (its result is discarded with the test set)
    x_all, y_all = x_all[idx_train], y_all[idx_train]
    x_train, y_train = x_all[:TRAIN], y_all[:TRAIN]
    x_val, y_val = x_all[TRAIN:TRAIN + VAL], y_all[TRAIN:TRAIN + VAL]
    x_test, y_test = x_all[TRAIN + VAL:TRAIN + VAL + TEST], y_all[TRAIN + VAL:TRAIN + VAL + TEST]
    source_x, source_y = (x_val, y_val) if method == "label-flip" else (x_train, y_train)
    x_poison = np.array(source_x[:npoison])
    source_labels = np.array(source_y[:npoison])
    return common.Splits(x_train, y_train, x_val, y_val, x_test, y_test, x_poison,
                         wrong_labels(source_labels), source_labels)


REPORT = common.AttackReport(NAME, upper_sign=-1.0, metric="test_accuracy", clean="clean_test_accuracy",
                             poisoned="poisoned_test_accuracy", gain="accuracy_drop", headline="test accuracy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m poisoning.untargeted",
                                     description=__doc__.split("\n\n")[0])
    common.add_attack_flags(parser, methods=["penalty", "approxgrad", "label-flip"])
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    settings, options, out = common.start_run(args, NAME)
    from penalty_tf.datasets import load_mnist

    start = time.perf_counter()
    splits = make_splits(load_mnist(args.data_dir), settings.npoison, args.method)
    return common.attack_and_report(args, settings, options, out, splits, REPORT, start)


if __name__ == "__main__":
    experiment.run_main(main)
