"""The original's settings and budgets of the importance experiments (see `penalty_tf.paper.defaults`).

Sources: the original's ``applications/data_denoising/`` drivers (docs/original.md §3.1–3.4,
§3.14) and, for ``cifar10_wrn`` (which the original does not have), the choices stated in
that script's docstring. Every row holds the settings common to all importance runs
(`_COMMON`) overridden by the dataset's and method's own values. The baselines (oracle,
val-only, train-val) train with the Penalty row's settings (the paper's main settings).
"""

from __future__ import annotations

from typing import Any

#: Settings shared by every importance run of the original (one minibatch size, the
#: single-group penalty schedule's factors, no learning-rate halving, ...).
_COMMON: dict[str, Any] = dict(
    batch_size=200, c_rho=1.1, c_lamb=0.9, c_eps=0.9, sig=1e-3, halve_every=0, first_epoch=0,
    lr_p=0.0, linear_steps=0, rho0=1e-2, lamb0=1e-2, eps0=1e-2, nu0=0.0, lower_optimizer="adam",
    weight_decay=0.0)

_OWN: dict[tuple[str, str], dict[str, Any]] = {
    ("importance_learning.mnist", "penalty"): dict(
        noise=0.25, lr_u=3.0, lr_v=1e-4, epochs=101, lower_steps=20, nu0=1e-6, pretrain_epochs=100,
        pretrain_lr=1e-4, init_low=0.4, init_high=0.6, train_rounding="floor", eval_rounding="floor"),
    ("importance_learning.mnist", "approxgrad"): dict(
        noise=0.25, lr_u=1.0, lr_v=1e-6, lr_p=1e-5, sig=1e-3, epochs=100, first_epoch=1, lower_steps=20,
        halve_every=20, pretrain_epochs=100, pretrain_lr=1e-3, init_low=0.4, init_high=0.6,
        train_rounding="ceil", eval_rounding="ceil"),
    ("importance_learning.mnist_small", "penalty"): dict(
        noise=0.5, lr_u=3.0, lr_v=1e-4, epochs=100, lower_steps=20, nu0=1e-4, pretrain_epochs=100,
        pretrain_lr=1e-4, init_low=0.4, init_high=0.6, train_rounding="floor", eval_rounding="ceil",
        retrain_epochs=500, retrain_lr=1e-4, select_threshold=0.9),
    ("importance_learning.cifar10", "penalty"): dict(
        noise=0.25, lr_u=3.0, lr_v=1e-4, epochs=200, lower_steps=20, nu0=1e-4, pretrain_epochs=101,
        pretrain_lr=1e-4, init_low=0.2, init_high=0.8, train_rounding="floor", eval_rounding="floor",
        val_size=10000),
    ("importance_learning.cifar10", "approxgrad"): dict(
        noise=0.25, lr_u=1.0, lr_v=1e-5, lr_p=1e-4, sig=1e-3, epochs=201, lower_steps=1, halve_every=20,
        pretrain_epochs=101, pretrain_lr=1e-3, init_low=0.2, init_high=0.8, train_rounding="ceil",
        eval_rounding="ceil", val_size=10000),
    ("importance_learning.svhn", "penalty"): dict(
        noise=0.5, lr_u=3.0, lr_v=1e-5, epochs=101, lower_steps=20, nu0=0.0, pretrain_epochs=200,
        pretrain_lr=1e-5, init_low=0.2, init_high=0.8, train_rounding="ceil", eval_rounding="ceil"),
    ("importance_learning.svhn", "approxgrad"): dict(
        noise=0.5, lr_u=1.0, lr_v=1e-6, lr_p=1e-5, sig=1e-3, epochs=101, lower_steps=20, halve_every=20,
        pretrain_epochs=200, pretrain_lr=1e-3, init_low=0.2, init_high=0.8, train_rounding="ceil",
        eval_rounding="ceil"),
    ("importance_learning.cifar10_wrn", "penalty"): dict(
        noise=0.36, batch_size=100, lr_u=3.0, lr_v=0.1, epochs=40, lower_steps=1, nu0=1e-4,
        pretrain_epochs=0, pretrain_lr=1e-3, init_low=0.5, init_high=0.5, train_rounding="floor",
        eval_rounding="floor", lower_optimizer="sgd", weight_decay=5e-4, depth=28, width=10,
        val_per_class=100),
}

BASELINES = ("oracle", "val-only", "train-val")

DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {key: {**_COMMON, **own} for key, own in _OWN.items()}
DEFAULTS.update({(experiment, baseline): dict(DEFAULTS[(experiment, "penalty")])
                 for experiment, method in _OWN if method == "penalty" for baseline in BASELINES})

FULL_BUDGET: dict[tuple[str, str], dict[str, int]] = {
    ("importance_learning.mnist_small", "*"): {"epochs": 100, "lower_steps": 20,
                                               "pretrain_epochs": 100, "retrain_epochs": 500},
    ("importance_learning.mnist", "penalty"): {"epochs": 101, "lower_steps": 20, "pretrain_epochs": 100},
    ("importance_learning.mnist", "approxgrad"): {"epochs": 100, "lower_steps": 20, "pretrain_epochs": 100},
    ("importance_learning.cifar10", "penalty"): {"epochs": 200, "lower_steps": 20, "pretrain_epochs": 101},
    ("importance_learning.cifar10", "approxgrad"): {"epochs": 201, "lower_steps": 1, "pretrain_epochs": 101},
    ("importance_learning.svhn", "*"): {"epochs": 101, "lower_steps": 20, "pretrain_epochs": 200},
    ("importance_learning.cifar10_wrn", "*"): {"epochs": 40, "lower_steps": 1},
}

REDUCED: dict[str, tuple[str, ...]] = {
    "importance_learning.mnist": ("--train-size", "4000", "--epochs", "10"),
    "importance_learning.cifar10": ("--train-size", "4000", "--epochs", "10"),
    "importance_learning.svhn": ("--train-size", "4000", "--epochs", "10"),
    "importance_learning.mnist_small": ("--epochs", "10"),
    "importance_learning.cifar10_wrn": ("--train-size", "2000", "--epochs", "2"),
}
