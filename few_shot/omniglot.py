"""Omniglot few-shot learning of a common representation (the paper's Table 4, Omniglot rows).

    python -m few_shot.omniglot --nway 20 --kshot 5 --method penalty --data-dir DIR --out runs/om_20w5s

The original's "lines 59 & 60" are ``--nway`` and ``--kshot``; as there, N = 5 sets 5,000
meta-iterations with meta-batch 30, otherwise 10,000 with meta-batch 15 (600 meta-test
tasks either way: 20 or 40 meta-batches). Every other setting is a flag with the
original's default (docs/original.md §3.6): lr_u = lr_v = 1e-2 (ApproxGrad also lr_p = 1e-2,
sigma 1e-3, 20 linear-system steps), rho_0 = lambda_0 = eps_0 = 1e-2, nu_0 = 1e-4,
c_rho 1.1, c_lamb = c_eps = 0.9, learning rates x0.99 on convergence, 20 lower steps,
meta-test: 100 Adam steps with lr 1e-3 (Penalty) or 1e-2 (ApproxGrad: its lr_v).
The data are the two arrays of ``few_shot.omniglot_build`` (``x_omniglot_1.npy``,
``y_omniglot_1.npy``), looked for in ``--data-dir``, $PENALTY_TF_DATA and ~/.keras/datasets.
Meta-train classes are the first ``--train-characters`` (1,200) characters x 4 rotations,
meta-test the rest.

Writes ``result.json`` (after every evaluation: accuracy mean / sd / 95 % CI over the
meta-test tasks, solver state, wall time), ``accuracy.png``, ``accuracies.npz`` (the
per-task accuracies of every evaluation) and ``checkpoint.npz`` (``--resume`` continues
an interrupted run exactly). See few_shot/common.py for the faithful quirks.
"""

from __future__ import annotations

import argparse

import numpy as np

from few_shot import common
from penalty_tf.paper import experiment

EXPERIMENT = "few_shot.omniglot"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m few_shot.omniglot",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_flags(parser, nway=20, kshot=5)
    parser.add_argument("--train-characters", type=int, default=1200,
                        help="characters (x4 rotations = classes) in the meta-train split")
    parser.add_argument("--filters", type=int, default=64, help="filters per conv block")
    return parser


def resolve_defaults(args: argparse.Namespace) -> None:
    """The original's settings that depend on N and on the method."""
    five_way = args.nway == 5
    if args.iterations is None:
        args.iterations = 5000 if five_way else 10000
    if args.meta_batch is None:
        args.meta_batch = 30 if five_way else 15
    for name in ("lr_u", "lr_v", "lr_p"):
        if getattr(args, name) is None:
            setattr(args, name, 1e-2)


def load_splits(args: argparse.Namespace) -> tuple[common.Split, common.Split]:
    from penalty_tf.datasets.omniglot import load_omniglot

    data = load_omniglot(args.data_dir)
    boundary = 4 * args.train_characters
    if not 0 < boundary < data.num_classes:
        raise experiment.ExperimentError(
            f"--train-characters {args.train_characters}: the data have "
            f"{data.num_classes // 4} characters; meta-train and meta-test need at least one each")
    classes = np.arange(data.num_classes)
    return (common.Split(data.x, data.y, classes[:boundary]),
            common.Split(data.x, data.y, classes[boundary:]))


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    resolve_defaults(args)
    common.check_flags(args)
    train, test = load_splits(args)
    from penalty_tf.models.few_shot import build_encoder

    return common.run(args, experiment_name=EXPERIMENT, train=train, test=test,
                      make_encoder=lambda: build_encoder("omniglot", train.image_shape, filters=args.filters),
                      default_test_lr=1e-3 if args.method == "penalty" else args.lr_v)


if __name__ == "__main__":
    experiment.run_main(main)
