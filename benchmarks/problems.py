"""The problems of `benchmarks.compare`: each builds a `BilevelProblem` for a seed, feeds its
batches and measures its quality, and states the quality a solver should reach.

A problem is a `Spec` (name, quality metric, direction, target, budgets, per-method settings)
whose ``build(seed, data_dir)`` returns an `Instance`:

* ``problem``: the `BilevelProblem` every solver is made on;
* ``next_batch()``: the batch of the next upper iteration (None for deterministic problems);
* ``quality()``: the metric at the current variables (SMD: err, the distance to the
  solution; distillation: test accuracy of a classifier refitted on the distilled images);
* ``check_batch``: a fixed batch for `penalty_tf.diagnostics.check_hypergradient`;
* ``extras()`` (optional): a dict of the problem's own numbers, recorded after every
  ``quality()`` (hyper-cleaning: how many corrupted points the selection kept).
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
    extras: Optional[Callable[[], dict[str, Any]]] = None
    #: False where the exact hypergradient is not defined (``--check-every`` skips the problem).
    checkable: bool = True


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
    #: method -> config fields computed when a run starts (SMD: the synthetic runner's config,
    #: which needs TensorFlow to build); between ``rates`` and ``overrides`` in precedence.
    method_settings: Optional[Callable[[str], dict[str, Any]]] = None
    #: `Instance.extras` keys whose final values (median over seeds) the table shows.
    reported_extras: tuple[str, ...] = ()

    def settings(self, method: str, fields: set[str]) -> dict[str, Any]:
        """The config fields ``method`` (with config fields ``fields``) runs with here:
        ``rates``, then ``method_settings(method)``, then ``overrides[method]``."""
        computed = self.method_settings(method) if self.method_settings is not None else {}
        return {**{k: v for k, v in {**self.rates, **computed}.items() if k in fields},
                **self.overrides.get(method, {})}

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


#: The synthetic runs' step sizes (the original's driver) for every method.
_SMD_RATES = {"lr_u": 1e-3, "lr_v": 1e-4}


def _synthetic_config(method: str) -> dict[str, Any]:
    """Every field of ``method``'s config in ``python -m synthetic.run`` (`synthetic.run.
    solver_config`): the original's settings, e.g. Penalty's synthetic schedule (nu_0 = 0,
    lambda, eps and learning rates / c_rho) and ApproxGrad's T + 1 linear steps."""
    from synthetic import run

    return dataclasses.asdict(run.solver_config(method))


def _smd_spec(name: str) -> Spec:
    """SMD20-24 (p = q = r = 10) as in the synthetic runner: every method with its config there,
    10,000 upper iterations (Table 2's budget) at T = 10; target err <= 0.01."""
    return Spec(name.lower(), "err", False, 1e-2, iterations=10000, quick_iterations=200,
                eval_every=250, lower_steps=10, build=_smd(name), rates=_SMD_RATES,
                method_settings=_synthetic_config)


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


# --------------------------------------------------------------------- hyper-cleaning
def _hypercleaning(seed: int, data_dir: Optional[str], **options: Any) -> Instance:
    """``options``: `benchmarks.hypercleaning.build`'s (``train_size``, ``noise``, ...)."""
    from benchmarks import hypercleaning

    h = hypercleaning.build(seed, data_dir, **options)
    return Instance(h.problem, h.next_batch, h.quality, extras=h.extras, checkable=False)


def _hypercleaning_spec() -> Spec:
    """`importance_learning.mnist_small` (Franceschi et al.'s setting, 50 % noise): the
    original's budget, 100 epochs x 25 upper iterations at T = 20; quality = the retrained
    classifier's test accuracy (%), measured every 500 iterations (20 epochs; one
    measurement retrains for about 15-50 s). Target 91.2 %: above the best tuned solver of
    the benchopt bilevel benchmark under the same retraining (AmIGO, 91.09 %), and above the
    measurement at iteration 0, which retrains on the validation set alone (90.86 % for seed
    0: the paper's Penalty number, 90.77 %, is below it). Penalty with the original's
    settings (`penalty_tf.paper.defaults`); the others with the rates of the sweep in
    benchmarks/hypercleaning.py."""
    from penalty_tf.paper import defaults

    original = defaults.defaults("importance_learning.mnist_small", "penalty")
    penalty = {k: v for k, v in original.items() if k in _PENALTY_CONFIG_FIELDS}
    return Spec("hypercleaning", "retrained test accuracy (%)", True, 91.2, iterations=2500,
                quick_iterations=20, eval_every=500, lower_steps=20, build=_hypercleaning,
                rates=_HYPERCLEANING_RATES, overrides={**_HYPERCLEANING_OVERRIDES, "penalty": penalty},
                reported_extras=("selected_points", "selected_corrupted"))


#: Every other solver's learning rates on hyper-cleaning (the sweep in benchmarks/hypercleaning.py).
_HYPERCLEANING_RATES: dict[str, Any] = {"lr_u": 0.3, "lr_v": 1e-4}
_HYPERCLEANING_OVERRIDES: dict[str, dict[str, Any]] = {
    "approxgrad": {"lr_p": 1e-5}, "aid": {"lr_v": 1e-3}, "f2sa": {"lr_v": 1e-3, "lr_z": 1e-3},
    "rmd": {"lr_u": 100.0, "lr_v": 0.5}}
#: `PenaltyConfig`'s fields (named here so that importing this module does not load
#: TensorFlow; tests/test_hypercleaning_problem.py checks them against the dataclass).
_PENALTY_CONFIG_FIELDS = ("rho0", "lamb0", "eps0", "nu0", "c_rho", "c_lamb", "c_eps", "lr_decay", "lr_u", "lr_v")

SPECS["hypercleaning"] = _hypercleaning_spec()
