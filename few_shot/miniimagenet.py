"""Mini-ImageNet few-shot learning of a common representation (Table 4, Mini-ImageNet rows).

    python -m few_shot.miniimagenet --nway 5 --kshot 5 --method penalty --data-dir DIR --out runs/mi_5w5s

The original's "lines 37 & 38" are ``--nway`` and ``--kshot`` (K defaults as the
original's files: 5 for Penalty, 1 for ApproxGrad). Settings (docs/original.md §3.7):
meta-batch 2 (600 meta-test tasks = 300 meta-batches); lr_u = lr_v = 1e-3 (ApproxGrad
lr_p = 1e-3, sigma 1e-3, 20 linear-system steps); Penalty rho_0 = lambda_0 = eps_0 = 1e-2,
nu_0 = 1e-4, 20 lower steps, 20,001 meta-iterations; ApproxGrad 10,001 meta-iterations
for K = 5 and 20,001 otherwise; meta-test 100 Adam steps with lr 1e-3. Evaluation after
every 1,000 meta-iterations. The classifier has N outputs (the original hard-coded 5,
which is the same for 5-way). The encoder is the 3.5M-parameter residual network;
``--filters/--hidden/--features`` shrink it (for tests only).

Data: ``mini-imagenet-cache-train.pkl`` (64 meta-train classes) and
``mini-imagenet-cache-test.pkl`` (20 meta-test classes) of few-shot-ssl-public, looked for
in ``--data-dir`` (or its ``dataset_miniimagenet/``), $PENALTY_TF_DATA and
~/.keras/datasets. The validation pickle is not needed (the original never used it).
Outputs as few_shot.omniglot.
"""

from __future__ import annotations

import argparse

import numpy as np

from few_shot import common
from penalty_tf.paper import experiment

EXPERIMENT = "few_shot.miniimagenet"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m few_shot.miniimagenet",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_flags(parser, nway=5, kshot=None)
    parser.add_argument("--images-per-class", type=int, default=600,
                        help="images per class block in the pickles (600 in the real files)")
    parser.add_argument("--filters", type=int, nargs=4, default=[64, 96, 128, 256])
    parser.add_argument("--hidden", type=int, default=2048, help="width of the 1x1 conv after the blocks")
    parser.add_argument("--features", type=int, default=384, help="feature dimension d")
    return parser


def resolve_defaults(args: argparse.Namespace) -> None:
    if args.kshot is None:
        args.kshot = 5 if args.method == "penalty" else 1
    if args.iterations is None:
        args.iterations = 10001 if (args.method == "approxgrad" and args.kshot == 5) else 20001
    if args.meta_batch is None:
        args.meta_batch = 2
    for name in ("lr_u", "lr_v", "lr_p"):
        if getattr(args, name) is None:
            setattr(args, name, 1e-3)


def load_splits(args: argparse.Namespace) -> tuple[common.Split, common.Split]:
    from penalty_tf.datasets.miniimagenet import load_miniimagenet_split

    splits = []
    for name in ("train", "test"):
        data = load_miniimagenet_split(name, args.data_dir, images_per_class=args.images_per_class)
        splits.append(common.Split(data.images, data.labels, np.unique(data.labels)))
    return splits[0], splits[1]


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    resolve_defaults(args)
    common.check_flags(args)
    train, test = load_splits(args)
    from penalty_tf.models.few_shot import build_encoder

    return common.run(args, experiment_name=EXPERIMENT, train=train, test=test,
                      make_encoder=lambda: build_encoder("miniimagenet", train.image_shape,
                                                         filters=args.filters, hidden=args.hidden,
                                                         features=args.features),
                      default_test_lr=1e-3 if args.method == "penalty" else args.lr_v)


if __name__ == "__main__":
    experiment.run_main(main)
