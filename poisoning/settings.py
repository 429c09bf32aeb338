"""Run settings of the poisoning attacks: a solver config plus the attack's own fields.

Every field becomes a flag (``lr_u`` -> ``--lr-u``); a flag that is not given takes the
original's value for the experiment and ``--method`` (`penalty_tf.paper.defaults.poisoning`),
else the dataclass default. The resolved values are written back into the parsed
arguments, so that result.json's ``config`` records what ran.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Optional

from penalty_tf.paper import defaults
from penalty_tf.paper import settings as flags

#: The solver methods of the attacks (``label-flip`` is a baseline without a solver).
SOLVER_METHODS = ("penalty", "approxgrad")
#: Fields whose flags `experiment.add_common_flags` already makes.
COMMON_FLAGS = ("epochs", "lower_steps")


@dataclasses.dataclass(frozen=True)
class _Bilevel:
    """What every attack has: the solver's config and the bilevel phase's length."""

    solver: Any
    epochs: int = flags.setting("bilevel updates (clean-label: per target)", minimum=1)
    lower_steps: int = flags.setting("lower steps per update, T", minimum=1)


@dataclasses.dataclass(frozen=True)
class Settings(_Bilevel):
    """One MNIST attack: the solver's config (None for label flipping) and the run."""

    npoison: int = flags.setting(
        "number of poisoned points, 10..60 = 1 %..6 % of the 1,000 clean points (the "
        "original's README 'line 15' / 'line 36'); default 60 (targeted ApproxGrad: 50)", minimum=1, maximum=1000)
    retrain_steps: int = flags.setting("Adam steps of clean training and of retraining (full_epochs)", minimum=1)
    linear_steps: int = flags.setting("ApproxGrad: linear-system steps per update (niter2)", default=0, minimum=0)
    halve_every: int = flags.setting("ApproxGrad: halve lr_u and lr_v every this many updates (0: never)",
                                     default=0, minimum=0)
    first_epoch: int = flags.setting(
        "ApproxGrad: where the driver's epoch counter starts (0 or 1), which shifts the halvings", default=0,
        minimum=0)


@dataclasses.dataclass(frozen=True)
class CleanLabelSettings(_Bilevel):
    """The clean-label attack: Penalty's config and the per-target protocol."""

    train_steps: int = flags.setting("TF1-RMSProp steps of each (re)training of the classifier", minimum=1)
    beta: float = flags.setting("weight of ||u - base||^2", minimum=0)
    targets: Optional[int] = flags.setting("how many test targets to attack (default: until none remains)",
                                           default=None, minimum=1)


def add_flags(parser: argparse.ArgumentParser, settings_class: type, methods: tuple[str, ...]) -> None:
    """A flag per field of ``settings_class`` and of the configs of ``methods``' solvers, each
    defaulting to None (= the original's value for the method); the `COMMON_FLAGS`, which
    `experiment.add_common_flags` made, get default None."""
    flags.add_flags(parser, settings_class, [m for m in methods if m in SOLVER_METHODS], reset=COMMON_FLAGS)


def resolve(args: argparse.Namespace, settings_class: type, experiment_name: str) -> Any:
    """The run's settings: given flags, else the original's value for ``args.method``, else
    the field's default; written back into ``args``. A solver flag of another method, a value
    out of its range and a ``--seed`` or ``--checkpoint-every`` out of range are an
    `ExperimentError`."""
    flags.check_range("seed", args.seed, **flags.SEED_RANGE)
    flags.check_range("checkpoint_every", args.checkpoint_every, minimum=1)
    return flags.resolve(settings_class, args, [defaults.defaults(experiment_name, args.method)],
                         methods=SOLVER_METHODS,
                         config_method=args.method if args.method in SOLVER_METHODS else None)
