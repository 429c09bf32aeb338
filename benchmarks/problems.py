"""The problems of `benchmarks.compare`: each builds a `BilevelProblem` for a seed, feeds its
batches and measures its quality, and states the quality a solver should reach.

A problem is a `Spec` (name, quality metric, direction, target, budgets, per-method settings)
whose ``build(seed, data_dir)`` returns an `Instance`:

* ``problem``: the `BilevelProblem` every solver is made on;
* ``next_batch()``: the batch of the next upper iteration (None for deterministic problems);
* ``quality()``: the metric at the current variables (SMD: err, the distance to the
  solution; distillation: test accuracy of a classifier refitted on the distilled images);
* ``check_batch``: a fixed batch for `penalty_tf.diagnostics.check_hypergradient`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np


@dataclasses.dataclass
class Instance:
    problem: Any
    next_batch: Callable[[], Any]
    quality: Callable[[], float]
    check_batch: Any = None


@dataclasses.dataclass(frozen=True)
class Spec:
    """A benchmark problem. ``target``: the quality "time to reach" is measured for;
    ``higher_is_better``: the metric's direction; ``iterations`` / ``quick_iterations``:
    upper iterations of a full / ``--quick`` run; ``eval_every``: iterations between quality
    measurements (full run; ``--quick`` measures 4 times); ``rates``: the config fields
    every method that has them is given on this problem (its learning rates);
    ``overrides``: method -> further config fields."""

    name: str
    metric: str
    higher_is_better: bool
    target: float
    iterations: int
    quick_iterations: int
    eval_every: int
    lower_steps: int
    build: Callable[..., Instance]        # (seed, data_dir, **problem options) -> Instance
    rates: dict[str, Any]
    overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def settings(self, method: str, fields: set[str]) -> dict[str, Any]:
        """The config fields ``method`` (with config fields ``fields``) runs with here."""
        return {**{k: v for k, v in self.rates.items() if k in fields}, **self.overrides.get(method, {})}

    def reached(self, quality: float) -> bool:
        return quality >= self.target if self.higher_is_better else quality <= self.target


# ------------------------------------------------------------------------ SMD20-24
def _smd(name: str) -> Callable[..., Instance]:
    """``options``: `synthetic.problems.make_problem`'s (``p``, ``q``, ``r``)."""
    def build(seed: int, data_dir: Optional[str], **options: Any) -> Instance:
        import tensorflow as tf

        from synthetic.problems import make_problem

        problem = make_problem(name, rng=np.random.default_rng([seed, 0]), **options)
        problem.initialize(np.random.default_rng([seed, 1]))
        error = tf.function(problem.error, autograph=False)
        return Instance(problem.bilevel(), lambda: None, lambda: float(error()))

    return build


#: The synthetic runs' step sizes (the original's driver) for every method; the penalty
#: variants take their own schedules' defaults.
_SMD_RATES = {"lr_u": 1e-3, "lr_v": 1e-4}


def _smd_spec(name: str) -> Spec:
    return Spec(name.lower(), "err", False, 1e-2, iterations=10000, quick_iterations=200,
                eval_every=250, lower_steps=10, build=_smd(name), rates=_SMD_RATES)


# ---------------------------------------------------------------------- distillation
def _distillation(seed: int, data_dir: Optional[str], **options: Any) -> Instance:
    """``options``: `benchmarks.distillation.build`'s (``weight_decay``, ``init``)."""
    from benchmarks import distillation

    d = distillation.build(seed, data_dir=data_dir, **options)
    batches = iter(distillation.batches(d, 256, seed))
    check = next(iter(distillation.batches(d, 1000, seed + 1)))
    return Instance(d.problem, lambda: next(batches), lambda: distillation.refit_accuracy(d), check)


_DISTILLATION_RATES = {"lr_u": 1e-2, "lr_v": 1e-2}

SPECS: dict[str, Spec] = {
    **{s.name: s for s in (_smd_spec(n) for n in ("SMD20", "SMD21", "SMD22", "SMD23", "SMD24"))},
    "distillation": Spec("distillation", "refit test accuracy", True, 0.8, iterations=2000,
                         quick_iterations=20, eval_every=100, lower_steps=10, build=_distillation,
                         rates=_DISTILLATION_RATES, overrides={"approxgrad": {"lr_p": 1e-2}}),
}


# ------------------------------------------------------------------------- poisoning
def _poisoning(seed: int, data_dir: Optional[str], **options: Any) -> Instance:
    """``options``: `benchmarks.poisoning_problem.build`'s (``npoison``, ``retrain_steps``)."""
    from benchmarks import poisoning_problem as pz

    p = pz.build(seed, data_dir=data_dir, **options)
    return Instance(p.problem, lambda: p.batch, lambda: pz.poisoned_accuracy(p), p.batch)


#: The fields of `poisoning.settings.Settings` (the attack's run settings, not a solver's).
_POISONING_RUN_FIELDS = ("epochs", "lower_steps", "npoison", "retrain_steps", "linear_steps", "halve_every",
                         "first_epoch")
#: Every other solver's rates on the attack (the sweep in benchmarks/poisoning_problem.py).
_POISONING_RATES: dict[str, Any] = {"lr_u": 1e-2, "lr_v": 1e-3, "lr_inner": 0.5, "lr_w": 1e-2, "lr_z": 1e-3}
_POISONING_OVERRIDES: dict[str, dict[str, Any]] = {"rmd": {"lr_u": 100.0, "lr_v": 0.5}, "bome": {"lr_u": 1e-3},
                                                     "g-pbgd": {"gamma0": 100.0, "gamma_max": 100.0}}


def _poisoning_spec() -> Spec:
    """`poisoning.untargeted` at 1 % (10 poisons): the original's budget (5,000 full-batch
    updates of T = 20; ApproxGrad's 20 linear-system steps are its default, T), Penalty and
    ApproxGrad with the original's settings of the attack (`penalty_tf.paper.defaults`; not
    ApproxGrad's halving of lr_u and lr_v after updates 1001, 2001, ..., which compare has no
    hook for); target: the paper's Penalty number (Table 5, 83.29 %). Quality is measured every
    1,000 updates: one measurement retrains a classifier for 10,001 Adam steps (10-20 s)."""
    from penalty_tf.paper import defaults, published

    name = "poisoning.untargeted"
    original = {m: defaults.defaults(name, m) for m in ("penalty", "approxgrad")}
    solver_fields = {m: {k: v for k, v in d.items() if k not in _POISONING_RUN_FIELDS} for m, d in original.items()}
    target = published.published_dict(table="Table 5", experiment=name, method="penalty", npoison=10)["mean"]
    return Spec("poisoning", "poisoned test accuracy (%)", False, target,
                iterations=original["penalty"]["epochs"], quick_iterations=20, eval_every=1000,
                lower_steps=original["penalty"]["lower_steps"], build=_poisoning, rates=_POISONING_RATES,
                overrides={**_POISONING_OVERRIDES, **solver_fields})


SPECS["poisoning"] = _poisoning_spec()
