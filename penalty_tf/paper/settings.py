"""Typed run settings and the command line generated from them, for every experiment script.

A script's settings are a frozen dataclass: one field per setting, made with `setting` (its
flag's help, type, smallest value, whether a resumed run must agree on it), plus a
``solver`` field that holds the method's solver config (`penalty_tf.solvers.PenaltyConfig`,
`ApproxGradConfig`, ...), whose fields are flags too.

`add_flags` makes ``--field-name`` for every field of the settings class and of the configs
of the script's solver methods; every generated flag defaults to None, meaning "not given".
`resolve` then fills each value, in this order:

1. the flag, if given;
2. the first of the run's ``tables`` that has the name (the original's values for the
   experiment and method, `penalty_tf.paper.defaults`);
3. the field's own default;
4. the script's ``derive`` rule (e.g. few-shot's ``test_lr = lr_v``),

and refuses what cannot run, with an `ExperimentError` naming the flag: a field without a
value, a value outside the field's range (``minimum``, ``maximum``, ``above``, ``below``;
`check_range`), a NaN or infinite number, a solver flag that belongs to another method
(``--lr-p`` with ``--method penalty``), and a value the solver's config refuses (its
``ValueError``, `config_errors`). The resolved values are written back into the parsed
arguments, so a result.json made from them records what ran.

Scripts with hand-written flags use `check_range` and `config_errors` for the same
messages.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import re
import typing
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from penalty_tf import solvers
from penalty_tf.paper.experiment import ExperimentError

#: Help of the solver config fields, for every experiment (a script may word some its own way).
SOLVER_HELP = {
    "lr_u": "learning rate of the upper-level variables u",
    "lr_v": "learning rate of the lower-level variables v",
    "lr_p": "ApproxGrad: learning rate of the linear-system vector p",
    "sig": "ApproxGrad: regulariser sigma of the linear system",
    "extra_linear_step": "ApproxGrad: one more p-step than asked (the synthetic variant's quirk)",
    "correction": "ApproxGrad: which lower groups' correction enters the u-gradient",
    "rho0": "Penalty: rho at the start",
    "lamb0": "Penalty: lambda at the start",
    "eps0": "Penalty: tolerance eps at the start",
    "nu0": "Penalty: every multiplier entry at the start",
    "c_rho": "Penalty: factor of rho when the tolerance test passes",
    "c_lamb": "Penalty: factor of lambda then",
    "c_eps": "Penalty: factor of the tolerance then",
    "lr_decay": "Penalty: factor of every learning rate then",
    "exact": "RMD: include the first step's Jacobian in the reverse pass",
}

#: Solver config fields with a fixed set of values: their flags get these ``choices``.
SOLVER_CHOICES = {"correction": ("indexed", "all")}

#: The largest seed: NumPy's legacy global seed (which Keras' ``set_random_seed`` sets) is 32 bits.
SEED_MAX = 2**32 - 1
#: The range of every ``--seed``.
SEED_RANGE = {"minimum": 0, "maximum": SEED_MAX}

Derive = Callable[[dict[str, Any]], None]


def setting(help: str, kind: Optional[type] = None, *, default: Any = dataclasses.MISSING,
            resume: bool = True, minimum: Optional[float] = None, maximum: Optional[float] = None,
            above: Optional[float] = None, below: Optional[float] = None, **flag: Any) -> Any:
    """A settings field.

    Args:
      help: the flag's help text (``argparse.SUPPRESS`` hides the flag).
      kind: the flag's type; default: from the field's annotation (``Optional[int]`` -> int).
      default: the field's default, used when neither the flag nor a table gives a value.
      resume: whether a resumed run must agree on it (False for run control: budget, output,
        verbosity); `penalty_tf.checkpoints.resume_key` reads it.
      minimum, maximum: the smallest and the largest value allowed.
      above, below: exclusive bounds (``above=0``: positive).
      flag: further `add_argument` keywords (``choices``, ``nargs``, ``action``).

    A tuple value (``nargs``) is checked entry by entry.
    """
    bounds = {"minimum": minimum, "maximum": maximum, "above": above, "below": below}
    return dataclasses.field(default=default, metadata={
        "help": help, "kind": kind, "resume": resume, "flag": flag,
        "range": {k: v for k, v in bounds.items() if v is not None}})


def describe_range(minimum: Optional[float] = None, maximum: Optional[float] = None,
                   above: Optional[float] = None, below: Optional[float] = None) -> str:
    """The allowed range in words: ``in [0, 1]``, ``>= 1``, ``> 0``, ``in (0, 1)``, ..."""
    if (minimum is not None or above is not None) and (maximum is not None or below is not None):
        low = f"[{minimum}" if minimum is not None else f"({above}"
        high = f"{maximum}]" if maximum is not None else f"{below})"
        return f"in {low}, {high}"
    for op, bound in ((">=", minimum), (">", above), ("<=", maximum), ("<", below)):
        if bound is not None:
            return f"{op} {bound}"
    return "a finite number"


def check_range(name: str, value: Any, *, minimum: Optional[float] = None, maximum: Optional[float] = None,
                above: Optional[float] = None, below: Optional[float] = None) -> None:
    """`ExperimentError` naming the flag of ``name`` and the allowed range when ``value`` (a
    number, or each entry of a tuple/list; None passes) is outside it or not finite."""
    values = value if isinstance(value, (tuple, list)) else [value]
    for v in values:
        if v is None or isinstance(v, (bool, str)):
            continue
        bad = (isinstance(v, float) and not math.isfinite(v)) \
            or (minimum is not None and v < minimum) or (maximum is not None and v > maximum) \
            or (above is not None and v <= above) or (below is not None and v >= below)
        if bad:
            allowed = describe_range(minimum, maximum, above, below)
            raise ExperimentError(f"{flag_name(name)} must be {allowed}, got {v}")


@contextlib.contextmanager
def config_errors(names: Iterable[str], what: str = "the solver settings") -> Iterator[None]:
    """Turn a ``ValueError`` of building a solver config (its ``__post_init__`` refusing a
    value) into an `ExperimentError` naming the flag: the first of ``names`` (the config's
    fields) that the message mentions, else ``what``."""
    try:
        yield
    except ValueError as error:
        message = str(error)
        found = [(m.start(), name) for name in names
                 if (m := re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message))]
        subject = flag_name(min(found)[1]) if found else what
        raise ExperimentError(f"{subject}: {message}") from None


def flag_name(name: str) -> str:
    """``lr_u`` -> ``--lr-u``."""
    return "--" + name.replace("_", "-")


def _flag_type(field: dataclasses.Field, hint: Any) -> Any:
    """The argparse type of a field: its ``kind``, else its annotation without None/``...``."""
    kind = field.metadata.get("kind")
    if kind is not None:
        return kind
    args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
    return args[0] if args else hint


def run_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a settings class but ``solver``."""
    return [f for f in dataclasses.fields(cls) if f.name != "solver"]


def solver_fields(methods: Iterable[str], fixed: Mapping[str, Mapping[str, Any]] = {}) -> dict[str, Any]:
    """Name -> (field, annotation) of the config fields of ``methods`` that are flags (not
    in ``fixed[method]``), each name once, in the configs' order."""
    out: dict[str, Any] = {}
    for method in methods:
        config = solvers.config_class(method)
        hints = typing.get_type_hints(config)
        for f in dataclasses.fields(config):
            if f.name not in fixed.get(method, {}):
                out.setdefault(f.name, (f, hints[f.name]))
    return out


def _add_flag(group: Any, name: str, kind: Any, help: str, default: Any, extra: Mapping[str, Any],
              bounds: Mapping[str, Any] = {}) -> None:
    """One generated flag with default None; the field's own default and range are shown in
    the help."""
    kwargs = dict(extra)
    if help is not argparse.SUPPRESS:
        if bounds:
            help = f"{help}; {describe_range(**bounds)}"
        if default is not dataclasses.MISSING and default is not None:
            help = f"{help} (default: {default})"
        help = help.replace("%", "%%")
    if kind is bool:
        kwargs.setdefault("action", argparse.BooleanOptionalAction)
    elif "action" not in kwargs:
        kwargs["type"] = kind
    group.add_argument(flag_name(name), dest=name, default=None, help=help, **kwargs)


def add_flags(parser: argparse.ArgumentParser, cls: type, methods: Sequence[str], *,
              fixed: Mapping[str, Mapping[str, Any]] = {}, solver_help: Mapping[str, str] = {},
              reset: Iterable[str] = (), title: str = "settings (default: the original's for --method)") -> None:
    """A flag per field of ``cls`` and per solver config field of ``methods`` (`solver_fields`),
    each with default None.

    A field whose flag the parser already has (the common flags of
    `penalty_tf.paper.experiment.add_common_flags`) keeps that flag; those named in ``reset``
    get default None, so that the original's value for the method fills them.
    ``solver_help`` rewords `SOLVER_HELP` entries for the script.
    """
    known = {action.dest: action for action in parser._actions}
    for name in reset:
        known[name].default = None
        known[name].help = (known[name].help or "").split(" (default")[0] + " (default: the original's, per method)"
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in run_fields(cls):
        if f.name not in known:
            _add_flag(group, f.name, _flag_type(f, hints[f.name]), f.metadata.get("help", f.name), f.default,
                      f.metadata.get("flag", {}), f.metadata.get("range", {}))
    for name, (f, hint) in solver_fields(methods, fixed).items():
        if name not in known:
            extra = {"choices": SOLVER_CHOICES[name]} if name in SOLVER_CHOICES else {}
            _add_flag(group, name, _flag_type(f, hint), solver_help.get(name, SOLVER_HELP.get(name, name)),
                      dataclasses.MISSING, extra)


def _first(values: dict[str, Any], tables: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]) -> None:
    """Fill every None entry of ``values`` from the first table that has it, else ``defaults``."""
    for name in values:
        if values[name] is not None:
            continue
        for table in tables:
            if name in table:
                values[name] = table[name]
                break
        else:
            if defaults.get(name, dataclasses.MISSING) is not dataclasses.MISSING:
                values[name] = defaults[name]


def refuse_foreign_solver_flags(args: argparse.Namespace, methods: Sequence[str], chosen: Optional[str],
                                own: Iterable[str]) -> None:
    """`ExperimentError` for a solver flag given that the chosen method's config (and the run's
    own fields ``own``) does not have."""
    mine = set(own) | (set(solver_fields([chosen])) if chosen is not None else set())
    for method in methods:
        for name in solver_fields([method]):
            if name not in mine and getattr(args, name, None) is not None:
                raise ExperimentError(f"{flag_name(name)} is a setting of {method}, not of --method {args.method}")


def resolve(cls: type, args: argparse.Namespace, tables: Sequence[Mapping[str, Any]], *,
            methods: Sequence[str], config_method: Optional[str],
            fixed: Mapping[str, Mapping[str, Any]] = {}, derive: Optional[Derive] = None) -> Any:
    """The run's checked settings from its parsed flags (module docstring: the order of the
    sources); the resolved values are written back into ``args``.

    Args:
      cls: the settings dataclass.
      tables: the original's values, first match wins.
      methods: the script's solver methods (their config fields are flags).
      config_method: whose config fills the ``solver`` field (None: no solver, e.g. a baseline).
      fixed: per method, config fields the script fixes (not flags).
      derive: fills remaining values from others (called with every value, None = unset).
    """
    refuse_foreign_solver_flags(args, methods, config_method, (f.name for f in run_fields(cls)))
    config_fields = {}
    if config_method is not None:
        config_fields = {f.name: f for f in dataclasses.fields(solvers.config_class(config_method))
                         if f.name not in fixed.get(config_method, {})}
    fields = {f.name: f for f in run_fields(cls)} | config_fields
    values = {name: getattr(args, name, None) for name in fields}
    _first(values, tables, {name: f.default for name, f in fields.items()})
    if derive is not None:
        derive(values)
    for name, f in fields.items():
        if values[name] is None and f.default is dataclasses.MISSING:
            raise ExperimentError(f"no value for {flag_name(name)}: give it, or add it to penalty_tf.paper.defaults")
        setattr(args, name, values[name])
    for name, f in fields.items():                    # the run's ranges; NaN and inf anywhere
        check_range(name, values[name], **f.metadata.get("range", {}))
    solver = None
    if config_method is not None:
        with config_errors(config_fields, f"the settings of --method {config_method}"):
            solver = solvers.make_config(config_method, **{n: values[n] for n in config_fields},
                                         **fixed.get(config_method, {}))
    return cls(solver=solver, **{f.name: values[f.name] for f in run_fields(cls)})


def flat(settings: Any, omit: Iterable[str] = ()) -> dict[str, Any]:
    """Every setting in one dict, the solver config's fields inline (but ``omit``): a
    result.json ``config``."""
    out = {f.name: getattr(settings, f.name) for f in run_fields(type(settings))}
    if settings.solver is not None:
        skip = set(omit)
        out.update({k: v for k, v in dataclasses.asdict(settings.solver).items() if k not in skip})
    return out
