"""The original's settings and budgets of the poisoning experiments (see `penalty_tf.paper.defaults`).

Sources: docs/original.md §3.8-3.11 and its tables of the Penalty and ApproxGrad settings.
Solver fields (``lr_u``, ``rho0``, ``lr_p``...) fill the method's config (`PenaltyConfig`,
`ApproxGradConfig`); fields a row does not name keep the config's default (c_rho 1.1,
c_lamb = c_eps = lr_decay = 0.9: the single-group schedule). The other entries are the
attacks' own settings (`poisoning.settings`): ``halve_every`` / ``first_epoch`` give the
ApproxGrad drivers' learning-rate halving (after updates 1001, 2001... when their epoch
counter starts at 0, after 1000, 2000... when it starts at 1).
"""

from __future__ import annotations

from typing import Any

#: The MNIST attacks' shared run settings: 20 lower steps, 10,001 Adam steps of clean
#: training and of retraining, 60 poisons (the README's "line 15" / "line 36").
_MNIST = {"lower_steps": 20, "retrain_steps": 10001, "npoison": 60}
_APPROXGRAD = {"sig": 1e-3, "linear_steps": 20, "halve_every": 1000, "epochs": 5000}

DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("poisoning.untargeted", "penalty"): {
        **_MNIST, "epochs": 5000, "lr_u": 0.1, "lr_v": 1e-3,
        "rho0": 10.0, "lamb0": 100.0, "eps0": 1.0, "nu0": 0.0},
    ("poisoning.untargeted", "approxgrad"): {
        **_MNIST, **_APPROXGRAD, "lr_u": 1e-2, "lr_v": 1e-3, "lr_p": 1e-2, "first_epoch": 0},
    ("poisoning.untargeted", "label-flip"): {**_MNIST, "epochs": 5000},
    ("poisoning.targeted", "penalty"): {
        **_MNIST, "epochs": 5001, "lr_u": 0.1, "lr_v": 1e-4,
        "rho0": 10.0, "lamb0": 1.0, "eps0": 1.0, "nu0": 0.0},
    # The targeted ApproxGrad driver's own default is 50 poisons.
    ("poisoning.targeted", "approxgrad"): {
        **_MNIST, **_APPROXGRAD, "npoison": 50, "lr_u": 1e-3, "lr_v": 1e-4, "lr_p": 1e-3,
        "first_epoch": 1},
    ("poisoning.targeted", "label-flip"): {**_MNIST, "epochs": 5001},
    # Clean-label: 201 Penalty updates of T = 10 per target, 2,001 TF1-RMSProp steps per
    # (re)training of the classifier, beta = 0.01.
    ("poisoning.clean_label", "penalty"): {
        "epochs": 201, "lower_steps": 10, "train_steps": 2001, "beta": 0.01,
        "lr_u": 1e-2, "lr_v": 1e-3, "rho0": 1.0, "lamb0": 1.0, "eps0": 1.0, "nu0": 0.0},
}

FULL_BUDGET: dict[tuple[str, str], dict[str, int]] = {
    ("poisoning.untargeted", "*"): {"epochs": 5000, "lower_steps": 20, "retrain_steps": 10001},
    ("poisoning.targeted", "penalty"): {"epochs": 5001, "lower_steps": 20, "retrain_steps": 10001},
    ("poisoning.targeted", "*"): {"epochs": 5000, "lower_steps": 20, "retrain_steps": 10001},
}

REDUCED: dict[str, tuple[str, ...]] = {
    "poisoning.untargeted": ("--epochs", "1000"),
    "poisoning.targeted": ("--epochs", "1000"),
    "poisoning.clean_label": ("--targets", "10"),
}
