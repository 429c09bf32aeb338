"""The original's settings and budgets of the synthetic SMD experiments (see `penalty_tf.paper.defaults`).

Source: the original's driver ``test_synthetic.py`` and its solver classes (docs/original.md
§2.4, §2.5). Every method shares the driver's run settings (`RUN`) and step sizes; the
rows add each solver's own settings, named as the fields of its config class
(`penalty_tf.solvers.config_class`), which is how ``python -m synthetic.run`` turns them
into flags. Penalty runs the synthetic variant of the schedule
(`PenaltySchedule.synthetic`: nu_0 = 0, and lambda, eps and the learning rates divided by
c_rho when the tolerance test passes), so its row names only what that variant takes;
ApproxGrad runs T + 1 linear-system steps (``extra_linear_step``) with sigma = 1e-6.
"""

from __future__ import annotations

from typing import Any

EXPERIMENT = "synthetic"

#: The driver's run: 40,001 upper iterations, 20 trials, T = 1, 5, 10, err/f/g recorded
#: every 10 iterations, p = q = r = 10, initial points Uniform[-5, 5] (std 1).
RUN: dict[str, Any] = dict(epochs=40001, trials=20, lower_steps=(1, 5, 10), record_every=10,
                           dim=10, std=1.0)

#: The step sizes of u and v, the same for every method.
_RATES: dict[str, Any] = dict(lr_u=1e-3, lr_v=1e-4)

DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    (EXPERIMENT, "gd"): {**RUN, **_RATES},
    (EXPERIMENT, "rmd"): {**RUN, **_RATES, "exact": False},
    (EXPERIMENT, "approxgrad"): {**RUN, **_RATES, "lr_p": 1e-4, "sig": 1e-6,
                                 "extra_linear_step": True, "correction": "indexed"},
    (EXPERIMENT, "penalty"): {**RUN, **_RATES, "rho0": 1.0, "lamb0": 10.0, "eps0": 1.0,
                              "c_rho": 1.1},
}

#: Beyond the paper: the solvers the original did not have run on the same problems with
#: the driver's run settings and step sizes, and their configs' own defaults for the rest
#: (these rows are ours, not the original's). AID solves its linear system with T CG steps.
EXTENSIONS: tuple[str, ...] = ("aid", "bome", "v-pbgd", "g-pbgd", "f2sa", "soba")
DEFAULTS.update({(EXPERIMENT, method): {**RUN, **_RATES} for method in EXTENSIONS})

#: The paper's Table 2 budget (10,000 iterations, 10 trials), the full-budget flags of
#: `penalty_tf.paper.reproduce` (``FULL_EXTRA["synthetic"]``); `penalty_tf.paper.report`'s
#: own table has no synthetic row.
FULL_BUDGET: dict[tuple[str, str], dict[str, int]] = {(EXPERIMENT, "*"): {"epochs": 10000, "trials": 10}}

#: The reduced budget of `penalty_tf.paper.reproduce` (``--budget reduced``).
REDUCED: dict[str, tuple[str, ...]] = {EXPERIMENT: ("--epochs", "1000", "--trials", "2")}
