"""The original's settings and budgets of the few_shot experiments (see `penalty_tf.paper.defaults`).

Sources: the original's Omniglot and Mini-ImageNet scripts (docs/original.md §3.5–3.7).
A row of `DEFAULTS` is the settings both methods share on a dataset (`_SHARED`) overridden
by the method's own; the settings that depend on the task's N and K (iterations, meta-batch
size) are rows of `BY_TASK`, looked up with `task_defaults`.
"""

from __future__ import annotations

from typing import Any

OMNIGLOT, MINIIMAGENET = "few_shot.omniglot", "few_shot.miniimagenet"

#: Every few-shot run of the original: the multi-group penalty schedule (learning rates
#: x0.99 when the tolerance test passes), T = 20 lower and 20 linear-system steps, 15 query
#: images per class, a meta-test of 600 tasks with 100 classifier steps every 1,000
#: meta-iterations, ApproxGrad's encoder correction by task 0 alone.
_EVERY_RUN: dict[str, Any] = dict(
    sig=1e-3, rho0=1e-2, lamb0=1e-2, eps0=1e-2, nu0=1e-4, c_rho=1.1, c_lamb=0.9, c_eps=0.9,
    lr_decay=0.99, lower_steps=20, linear_steps=20, query_per_class=15, eval_every=1000,
    test_tasks=600, test_steps=100, correction="first")

#: Per dataset. ``nway``/``kshot`` are the original's "lines 59 & 60" (Omniglot) and
#: "lines 37 & 38" (Mini-ImageNet); the encoder sizes are the paper's networks.
_SHARED: dict[str, dict[str, Any]] = {
    OMNIGLOT: dict(nway=20, kshot=5, lr_u=1e-2, lr_v=1e-2, lr_p=1e-2, train_characters=1200,
                   filters=64),
    MINIIMAGENET: dict(nway=5, meta_batch=2, lr_u=1e-3, lr_v=1e-3, lr_p=1e-3, images_per_class=600,
                       filters=(64, 96, 128, 256), hidden=2048, features=384),
}

#: Per dataset and method. ``test_lr`` None: the run's ``lr_v`` (the ApproxGrad scripts
#: trained the meta-test classifiers with their lower-level learning rate); K of the
#: Mini-ImageNet scripts: 5 for Penalty, 1 for ApproxGrad.
_OWN: dict[tuple[str, str], dict[str, Any]] = {
    (OMNIGLOT, "penalty"): dict(test_lr=1e-3),
    (OMNIGLOT, "approxgrad"): dict(test_lr=None),
    (MINIIMAGENET, "penalty"): dict(kshot=5, test_lr=1e-3),
    (MINIIMAGENET, "approxgrad"): dict(kshot=1, test_lr=None),
}

DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    (experiment, method): {**_EVERY_RUN, **_SHARED[experiment], **own}
    for (experiment, method), own in _OWN.items()}

#: (experiment, method or "*", N or "*", K or "*") -> settings; the first matching row wins.
BY_TASK: dict[tuple[str, str, Any, Any], dict[str, int]] = {
    (OMNIGLOT, "*", 5, "*"): dict(iterations=5000, meta_batch=30),
    (OMNIGLOT, "*", "*", "*"): dict(iterations=10000, meta_batch=15),
    (MINIIMAGENET, "approxgrad", "*", 5): dict(iterations=10001),
    (MINIIMAGENET, "*", "*", "*"): dict(iterations=20001),
}

FULL_BUDGET: dict[tuple[str, str], dict[str, int]] = {
    (OMNIGLOT, "*"): {"test_tasks": 600, "lower_steps": 20},
    (MINIIMAGENET, "*"): {"test_tasks": 600, "lower_steps": 20},
}

REDUCED: dict[str, tuple[str, ...]] = {
    OMNIGLOT: ("--iterations", "500", "--test-tasks", "100"),
    MINIIMAGENET: ("--iterations", "500", "--test-tasks", "100"),
}


def task_defaults(experiment: str, method: str, nway: int, kshot: int) -> dict[str, int]:
    """The settings of `BY_TASK`'s first row matching an N-way K-shot run of ``method``."""
    for (exp, m, n, k), settings in BY_TASK.items():
        if exp == experiment and m in ("*", method) and n in ("*", nway) and k in ("*", kshot):
            return dict(settings)
    return {}


def full_iterations(experiment: str, method: str, config: dict[str, Any]) -> int:
    """The original's number of meta-iterations for a run's ``config`` (its ``nway`` and
    ``kshot``): the full budget's ``iterations``."""
    return task_defaults(experiment, method, config.get("nway"), config.get("kshot"))["iterations"]
