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
import dataclasses

import numpy as np

from few_shot import settings as run_settings
from few_shot.tasks import Split
from penalty_tf.paper import experiment

EXPERIMENT = "few_shot.miniimagenet"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MiniImageNetSettings(run_settings.RunSettings):
    """`RunSettings` plus the pickles' class blocks and the residual encoder's sizes."""

    images_per_class: int = run_settings.setting(
        "images per class block in the pickles (600 in the real files)", minimum=1)
    filters: tuple[int, ...] = run_settings.setting("filters of the four residual blocks", nargs=4,
                                                        minimum=1)
    hidden: int = run_settings.setting("width of the 1x1 conv after the blocks", minimum=1)
    features: int = run_settings.setting("feature dimension d", minimum=1)


def build_parser() -> argparse.ArgumentParser:
    return run_settings.build_parser(MiniImageNetSettings, "python -m few_shot.miniimagenet",
                                     __doc__.split("\n\n")[0])


def resolve(argv: list[str] | None = None) -> MiniImageNetSettings:
    """The run's settings from its command line (the original's values for what it omits:
    K = 5 for Penalty and 1 for ApproxGrad; ApproxGrad 5-shot 10,001 meta-iterations,
    otherwise 20,001)."""
    return run_settings.resolve(MiniImageNetSettings, EXPERIMENT, build_parser().parse_args(argv))


def load_splits(s: MiniImageNetSettings) -> tuple[Split, Split]:
    """The train pickle's 64 classes for meta-training, the test pickle's 20 for meta-testing."""
    from penalty_tf.datasets.miniimagenet import load_miniimagenet_split

    splits = []
    for name in ("train", "test"):
        data = load_miniimagenet_split(name, s.data_dir, images_per_class=s.images_per_class)
        splits.append(Split(data.images, data.labels, np.unique(data.labels)))
    return splits[0], splits[1]


def main(argv: list[str] | None = None) -> dict:
    from few_shot import driver
    from penalty_tf.models.few_shot import build_encoder

    s = resolve(argv)
    train, test = load_splits(s)
    return driver.run(s, experiment_name=EXPERIMENT, train=train, test=test,
                      make_encoder=lambda: build_encoder("miniimagenet", train.image_shape,
                                                         filters=s.filters, hidden=s.hidden,
                                                         features=s.features))


if __name__ == "__main__":
    experiment.run_main(main)
