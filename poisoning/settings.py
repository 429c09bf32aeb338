"""Run settings of the poisoning attacks: a solver config plus the attack's own fields.

Every field becomes a flag (``lr_u`` -> ``--lr-u``); a flag that is not given takes the
original's value for the experiment and ``--method`` (`penalty_tf.paper.defaults.poisoning`),
else the dataclass default. The resolved values are written back into the parsed
arguments, so that result.json's ``config`` records what ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Optional

from penalty_tf.paper import defaults, experiment

#: The solver methods of the attacks (``label-flip`` is a baseline without a solver).
SOLVER_METHODS = ("penalty", "approxgrad")
#: Fields whose flags `experiment.add_common_flags` already makes.
COMMON_FLAGS = ("epochs", "lower_steps")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclasses.dataclass(frozen=True)
class _Bilevel:
    """What every attack has: the solver's config and the bilevel phase's length."""

    solver: Any
    epochs: int = dataclasses.field(metadata=_help("bilevel updates (clean-label: per target)"))
    lower_steps: int = dataclasses.field(metadata=_help("lower steps per update, T"))


@dataclasses.dataclass(frozen=True)
class Settings(_Bilevel):
    """One MNIST attack: the solver's config (None for label flipping) and the run."""

    npoison: int = dataclasses.field(metadata=_help(
        "number of poisoned points, 10..60 = 1 %%..6 %% of the 1,000 clean points (the "
        "original's README 'line 15' / 'line 36'); default 60 (targeted ApproxGrad: 50)"))
    retrain_steps: int = dataclasses.field(metadata=_help(
        "Adam steps of clean training and of retraining (full_epochs)"))
    linear_steps: int = dataclasses.field(default=0, metadata=_help(
        "ApproxGrad: linear-system steps per update (niter2)"))
    halve_every: int = dataclasses.field(default=0, metadata=_help(
        "ApproxGrad: halve lr_u and lr_v every this many updates (0: never)"))
    first_epoch: int = dataclasses.field(default=0, metadata=_help(
        "ApproxGrad: where the driver's epoch counter starts (0 or 1), which shifts the halvings"))


@dataclasses.dataclass(frozen=True)
class CleanLabelSettings(_Bilevel):
    """The clean-label attack: Penalty's config and the per-target protocol."""

    train_steps: int = dataclasses.field(metadata=_help(
        "TF1-RMSProp steps of each (re)training of the classifier"))
    beta: float = dataclasses.field(metadata=_help("weight of ||u - base||^2"))
    targets: Optional[int] = dataclasses.field(default=None, metadata=_help(
        "how many test targets to attack (default: until none remains)"))


def _flag_type(hint: Any) -> Any:
    """The argparse type of a field's annotation (``Optional[int]`` -> int)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _flag_fields(classes: tuple[type, ...]) -> dict[str, tuple[Any, str]]:
    """Field name -> (type, help) over ``classes``, first occurrence kept, ``solver`` left out."""
    fields: dict[str, tuple[Any, str]] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.name != "solver" and field.name not in fields:
                text = field.metadata.get("help", f"{cls.__name__} field")
                fields[field.name] = (_flag_type(hints[field.name]), text)
    return fields


def add_flags(parser: argparse.ArgumentParser, settings_class: type, methods: tuple[str, ...]) -> None:
    """A flag per field of ``settings_class`` and of the configs of ``methods``' solvers, each
    defaulting to None (= the original's value for the method); the `COMMON_FLAGS`, which
    `experiment.add_common_flags` made, get default None."""
    from penalty_tf import solvers

    configs = tuple(solvers.config_class(m) for m in methods if m in SOLVER_METHODS)
    group = parser.add_argument_group("settings (default: the original's for --method)")
    parser.set_defaults(**{name: None for name in COMMON_FLAGS})
    for name, (kind, text) in _flag_fields((settings_class, *configs)).items():
        if name in COMMON_FLAGS:
            continue
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            group.add_argument(flag, type=kind, default=None, help=text)


def resolve(args: argparse.Namespace, settings_class: type, experiment_name: str) -> Any:
    """The run's settings: given flags, else the original's value for ``args.method``, else
    the field's default; written back into ``args``. A solver flag of another method is an
    `ExperimentError`."""
    from penalty_tf import solvers

    table = defaults.defaults(experiment_name, args.method)
    config_class = solvers.config_class(args.method) if args.method in SOLVER_METHODS else None

    def value(name: str, default: Any) -> Any:
        given = getattr(args, name)
        chosen = given if given is not None else table.get(name, default)
        setattr(args, name, chosen)
        return chosen

    solver = None
    if config_class is not None:
        solver = config_class(**{f.name: value(f.name, f.default) for f in dataclasses.fields(config_class)})
    _refuse_foreign_solver_flags(args, settings_class, config_class)
    run = {f.name: value(f.name, f.default) for f in dataclasses.fields(settings_class) if f.name != "solver"}
    return settings_class(solver=solver, **run)


def _refuse_foreign_solver_flags(args: argparse.Namespace, settings_class: type,
                                 config_class: Optional[type]) -> None:
    """An `ExperimentError` for a solver setting given on the command line that the chosen
    method's config does not have (e.g. ``--lr-p`` with ``--method penalty``)."""
    from penalty_tf import solvers

    own = {f.name for f in dataclasses.fields(settings_class)}
    if config_class is not None:
        own |= {f.name for f in dataclasses.fields(config_class)}
    for method in SOLVER_METHODS:
        for field in dataclasses.fields(solvers.config_class(method)):
            if field.name not in own and getattr(args, field.name, None) is not None:
                raise experiment.ExperimentError(
                    f"--{field.name.replace('_', '-')} is a setting of {method}, not of --method {args.method}")
