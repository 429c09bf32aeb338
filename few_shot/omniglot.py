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
per-task accuracies of every evaluation) and ``checkpoint/`` (``--resume`` continues
an interrupted run exactly). See few_shot/problem.py for the faithful quirks.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from few_shot import settings as run_settings
from few_shot.tasks import Split
from penalty_tf.paper import experiment

EXPERIMENT = "few_shot.omniglot"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OmniglotSettings(run_settings.RunSettings):
    """`RunSettings` plus the meta-train split's size and the encoder's width."""

    train_characters: int = run_settings.setting(
        "characters (x4 rotations = classes) in the meta-train split", minimum=1)
    filters: int = run_settings.setting("filters per conv block", minimum=1)


def build_parser() -> argparse.ArgumentParser:
    return run_settings.build_parser(OmniglotSettings, "python -m few_shot.omniglot",
                                     __doc__.split("\n\n")[0])


def resolve(argv: list[str] | None = None) -> OmniglotSettings:
    """The run's settings from its command line (the original's values for what it omits:
    N = 5 sets 5,000 meta-iterations with meta-batch 30, otherwise 10,000 with 15)."""
    return run_settings.resolve(OmniglotSettings, EXPERIMENT, build_parser().parse_args(argv))


def load_splits(s: OmniglotSettings) -> tuple[Split, Split]:
    """Meta-train = the first ``train_characters`` characters x 4 rotations, meta-test the rest."""
    from penalty_tf.datasets.omniglot import load_omniglot

    data = load_omniglot(s.data_dir)
    boundary = 4 * s.train_characters
    if not 0 < boundary < data.num_classes:
        raise experiment.ExperimentError(
            f"--train-characters {s.train_characters}: the data have "
            f"{data.num_classes // 4} characters; meta-train and meta-test need at least one each")
    classes = np.arange(data.num_classes)
    return Split(data.x, data.y, classes[:boundary]), Split(data.x, data.y, classes[boundary:])


def main(argv: list[str] | None = None) -> dict:
    from few_shot import driver
    from penalty_tf.models.few_shot import build_encoder

    s = resolve(argv)
    train, test = load_splits(s)
    return driver.run(s, experiment_name=EXPERIMENT, train=train, test=test,
                      make_encoder=lambda: build_encoder("omniglot", train.image_shape, filters=s.filters))


if __name__ == "__main__":
    experiment.run_main(main)
