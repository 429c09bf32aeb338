"""The solvers by name, with their config classes: one factory for every script and user.

    solver = ptf.solvers.make("penalty", problem, ptf.solvers.PenaltyConfig(lr_u=3.0, rho0=1.0))
    solver = ptf.solvers.make("approxgrad", problem, lr_u=1.0, lr_p=1e-5)   # fields as keywords

A new solver registers itself with `register` (its class must provide ``from_problem``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from penalty_tf.problem import BilevelProblem


class Entry(NamedTuple):
    solver: type
    config: type


_REGISTRY: dict[str, Entry] = {}


def register(name: str, solver: type, config: type) -> None:
    """Make ``solver`` (a `BilevelSolver` subclass with ``from_problem``) available as
    ``make(name, ...)``, configured by the dataclass ``config``."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"{name}: the config {config!r} is not a dataclass")
    _REGISTRY[name] = Entry(solver, config)


def names() -> list[str]:
    """The registered method names."""
    return sorted(_REGISTRY)


def entry(name: str) -> Entry:
    """The solver class and config class of ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; choose from {', '.join(names())}") from None


def config_class(name: str) -> type:
    """The config dataclass of solver ``name`` (e.g. `PenaltyConfig` for ``"penalty"``)."""
    return entry(name).config


def make_config(name: str, **fields: Any) -> Any:
    """``config_class(name)(**fields)``, with a clear error for a field it does not have."""
    cls = config_class(name)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}; fields: {sorted(known)}")
    return cls(**fields)


def make(name: str, problem: BilevelProblem, config: Any = None, *, jit_compile: bool = False,
         check_finite: bool = True, **options: Any) -> Any:
    """The solver ``name`` on ``problem``.

    ``config``: an instance of ``config_class(name)`` (None: its defaults). Keyword
    ``options`` that are fields of the config override them (``make("penalty", p, rho0=1.0)``);
    the others go to the solver's ``from_problem`` (``upper_optimizer=``, ``lower_optimizer=``,
    ``correction_weights=`` ...).
    """
    solver_cls, config_cls = entry(name)
    if config is None:
        config = config_cls()
    elif not isinstance(config, config_cls):
        raise TypeError(f"{name}: expected a {config_cls.__name__}, got {type(config).__name__}")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    overrides = {k: options.pop(k) for k in list(options) if k in fields}
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return solver_cls.from_problem(problem, config, jit_compile=jit_compile,
                                   check_finite=check_finite, **options)
