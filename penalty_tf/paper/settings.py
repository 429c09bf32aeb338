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
value, a value below the field's ``minimum``, a solver flag that belongs to another method
(``--lr-p`` with ``--method penalty``). The resolved values are written back into the
parsed arguments, so a result.json made from them records what ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

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

Derive = Callable[[dict[str, Any]], None]


def setting(help: str, kind: Optional[type] = None, *, default: Any = dataclasses.MISSING,
            resume: bool = True, minimum: Optional[float] = None, **flag: Any) -> Any:
    """A settings field.

    Args:
      help: the flag's help text (``argparse.SUPPRESS`` hides the flag).
      kind: the flag's type; default: from the field's annotation (``Optional[int]`` -> int).
      default: the field's default, used when neither the flag nor a table gives a value.
      resume: whether a resumed run must agree on it (False for run control: budget, output,
        verbosity); `penalty_tf.checkpoints.resume_key` reads it.
      minimum: the smallest value allowed.
      flag: further `add_argument` keywords (``choices``, ``nargs``, ``action``).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "kind": kind, "resume": resume, "minimum": minimum, "flag": flag})


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


def _add_flag(group: Any, name: str, kind: Any, help: str, default: Any, extra: Mapping[str, Any]) -> None:
    """One generated flag with default None; the field's own default is shown in the help."""
    kwargs = dict(extra)
    if default is not dataclasses.MISSING and default is not None and help is not argparse.SUPPRESS:
        help = f"{help} (default: {default})".replace("%", "%%")
    elif help is not argparse.SUPPRESS:
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
                      f.metadata.get("flag", {}))
    for name, (f, hint) in solver_fields(methods, fixed).items():
        if name not in known:
            _add_flag(group, name, _flag_type(f, hint), solver_help.get(name, SOLVER_HELP.get(name, name)),
                      dataclasses.MISSING, {})


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


def check_minimums(settings: Any) -> None:
    """`ExperimentError` for a setting below its field's ``minimum``."""
    for f in run_fields(type(settings)):
        minimum, value = f.metadata.get("minimum"), getattr(settings, f.name)
        if minimum is not None and value is not None and value < minimum:
            raise ExperimentError(f"{flag_name(f.name)} must be >= {minimum}, got {value}")


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
    solver = None
    if config_method is not None:
        solver = solvers.make_config(config_method, **{n: values[n] for n in config_fields},
                                     **fixed.get(config_method, {}))
    settings = cls(solver=solver, **{f.name: values[f.name] for f in run_fields(cls)})
    check_minimums(settings)
    return settings


def flat(settings: Any, omit: Iterable[str] = ()) -> dict[str, Any]:
    """Every setting in one dict, the solver config's fields inline (but ``omit``): a
    result.json ``config``."""
    out = {f.name: getattr(settings, f.name) for f in run_fields(type(settings))}
    if settings.solver is not None:
        skip = set(omit)
        out.update({k: v for k, v in dataclasses.asdict(settings.solver).items() if k not in skip})
    return out
