"""The valid range of every solver setting, checked where configs and solvers are built.

A setting outside its range is a `ValueError` naming the setting, its value and the range,
raised when the config (`PenaltyConfig`, `ApproxGradConfig`, ...) or the solver is made,
not iterations later as a NaN or a run that silently does nothing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional


class Range(NamedTuple):
    """``low <= x`` (``low < x`` when ``low_open``) and ``x <= high`` (None: unbounded)."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    why: str = ""

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return "finite"

    def contains(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or x <= self.high


_LEARNING_RATE = Range(0.0, why="a negative learning rate ascends the loss")
_FACTOR = Range(0.0, 1.0, low_open=True, why="the schedule only shrinks it")

#: Setting name -> its range, for every solver config field that is a number.
RANGES: dict[str, Range] = {
    "lr_u": _LEARNING_RATE, "lr_v": _LEARNING_RATE, "lr_p": _LEARNING_RATE,
    "sig": Range(0.0, why="the linear system's regulariser"),
    "rho0": Range(0.0, low_open=True, why="rho multiplies on every passed test: 0 stays 0"),
    "lamb0": Range(0.0, why="a negative lambda maximises g"),
    "eps0": Range(0.0, low_open=True, why="the tolerance test ||.||^4 < eps^2 never passes with eps 0"),
    "nu0": Range(),
    "c_rho": Range(1.0, why="rho must not shrink"),
    "c_lamb": _FACTOR, "c_eps": _FACTOR, "lr_decay": _FACTOR,
    "neumann_lr": Range(0.0, low_open=True, why="the Neumann iteration's step size eta"),
    # BOME and PBGD (solvers/bome.py, solvers/pbgd.py)
    "lr_inner": Range(0.0, low_open=True, why="the inner gradient steps on g would not move"),
    "eta": Range(0.0, low_open=True, why="BOME's barrier target phi = eta ||grad q||^2 must be positive"),
    "gamma0": Range(0.0, why="a negative penalty rewards lower-level suboptimality"),
    "gamma_max": Range(0.0, low_open=True, why="the penalty constant's cap"),
    "gamma_growth": Range(1.0, why="gamma must not shrink"),
    "gamma_increment": Range(0.0, why="gamma must not shrink"),
    # F2SA and SOBA (solvers/f2sa.py, solvers/soba.py)
    "lr_z": _LEARNING_RATE, "lr_w": _LEARNING_RATE,
    "lamb_delta": Range(0.0, why="F2SA's lambda must not shrink"),
    "lamb_delta_power": Range(0.0, why="a negative power would let lambda's increments grow"),
    "lamb_max": Range(0.0, low_open=True, why="F2SA's cap on lambda"),
}


def check_value(name: str, value: Any, allowed: Range) -> float:
    """``value`` as a float, or a `ValueError` naming ``name`` and its range."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not allowed.contains(x):
        reason = f" ({allowed.why})" if allowed.why else ""
        raise ValueError(f"{name} must be {allowed.describe()}, got {value!r}{reason}")
    return x


def check_config(config: Any) -> None:
    """Check every numeric field of a solver config dataclass against `RANGES`."""
    for field in dataclasses.fields(config):
        if field.name in RANGES and not isinstance(getattr(config, field.name), bool):
            check_value(field.name, getattr(config, field.name), RANGES[field.name])


def check_learning_rate(name: str, value: Any) -> float:
    """A learning rate given as a number: finite and >= 0."""
    return check_value(name, value, _LEARNING_RATE)
