"""The typed settings of a few-shot run and the command line generated from them.

`RunSettings` holds the run's own settings; its ``solver`` field is the method's config
(`PenaltyConfig` or `ApproxGradConfig`), whose fields are flags too. A script extends
`RunSettings` with its data and encoder settings (`few_shot.omniglot.OmniglotSettings`).
Flags without a default of their own default to None and are filled, in this order, from
the original's values for the script and ``--method`` (`penalty_tf.paper.defaults.few_shot`
``DEFAULTS``), from its rows for the run's N and K (``BY_TASK``: iterations, meta-batch),
and by the two rules ``test_lr = lr_v`` (ApproxGrad scripts) and ``checkpoint_every =
eval_every``.

Fields declared ``resume=False`` are run control (budget, output, verbosity); a resumed run
may change them, every other setting is in the checkpoint's resume key.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Optional

from few_shot.problem import CORRECTIONS
from few_shot.tasks import QUERY_PER_CLASS
from penalty_tf import solvers
from penalty_tf.paper import defaults as paper_defaults
from penalty_tf.paper import experiment
from penalty_tf.paper.defaults import few_shot as few_shot_defaults

METHODS = ("penalty", "approxgrad")
#: Solver config fields the few-shot runs fix: one lower group whose correction the run's
#: ``--correction`` weights (`few_shot.problem.make_solver`), no extra linear step.
FIXED_SOLVER_FIELDS = {"approxgrad": {"correction": "all", "extra_linear_step": False}}
SOLVER_FLAG_HELP = {
    "lr_u": "TF1-Adam learning rate of the encoder (u)",
    "lr_v": "TF1-Adam learning rate of the classifiers (v)",
    "lr_p": "ApproxGrad: TF1-Adam learning rate of the linear-system vector p",
    "sig": "ApproxGrad: regulariser sigma of the linear system",
    "rho0": "Penalty: rho at the start", "lamb0": "Penalty: lambda at the start",
    "eps0": "Penalty: tolerance at the start", "nu0": "Penalty: every multiplier at the start",
    "c_rho": "Penalty: factor of rho when the tolerance test passes",
    "c_lamb": "Penalty: factor of lambda then", "c_eps": "Penalty: factor of the tolerance then",
    "lr_decay": "Penalty: factor of every learning rate then (multi-group: 0.99)",
}


def setting(help: str, kind: type = int, *, default: Any = dataclasses.MISSING, resume: bool = True,
            minimum: Optional[int] = None, **flag: Any) -> Any:
    """A settings field: its flag's help and type, whether a resume must agree on it,
    the smallest value allowed, and further `add_argument` keywords (``choices``,
    ``nargs``, ``action``)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "kind": kind, "resume": resume, "minimum": minimum, "flag": flag})


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Every setting of a few-shot run but the data's and the encoder's (docs/original.md §3.5)."""

    method: str = setting("bilevel method", str, default="penalty", choices=METHODS)
    nway: int = setting("N classes per task", minimum=1)
    kshot: int = setting("K support images per class", minimum=1)
    iterations: int = setting("meta-iterations", minimum=1, resume=False)
    meta_batch: int = setting("tasks per meta-batch (T)", minimum=1)
    eval_every: int = setting("run the meta-test after every this many meta-iterations (and at the end)",
                              minimum=1, resume=False)
    test_tasks: int = setting("meta-test tasks per evaluation", minimum=1)
    test_steps: int = setting("classifier steps at meta-test", minimum=1)
    test_lr: float = setting("meta-test classifier Adam learning rate (Penalty 1e-3; ApproxGrad lr_v)",
                             float)
    lower_steps: int = setting("v-steps per meta-iteration (niter_v)", minimum=1)
    linear_steps: int = setting("ApproxGrad p-steps (niter_p)", minimum=0)
    query_per_class: int = setting(f"query images per class (the original's {QUERY_PER_CLASS})", minimum=1)
    correction: str = setting("ApproxGrad encoder correction: task 0 only (original) or all tasks", str,
                              choices=CORRECTIONS)
    xla: bool = setting("compile the meta-iteration and the meta-test with XLA", bool, default=False,
                        resume=False, action=argparse.BooleanOptionalAction)
    checkpoint_every: int = setting("save a checkpoint every this many meta-iterations (default: "
                                    "--eval-every)", minimum=1, resume=False)
    seed: int = setting("random seed", default=0)
    data_dir: Optional[str] = setting("dataset directory", str, default=None, resume=False)
    out: Optional[str] = setting("output directory (default: runs/<experiment>)", str, default=None,
                                 resume=False)
    resume: bool = setting("continue from the checkpoint in --out", bool, default=False, resume=False,
                           action="store_true")
    quiet: bool = setting("no progress output", bool, default=False, resume=False, action="store_true")
    stop_after: Optional[int] = setting(argparse.SUPPRESS, default=None, resume=False)
    solver: Any = dataclasses.field(default=None)

    def flat(self) -> dict[str, Any]:
        """Every setting in one dict, the solver's (but its fixed fields) inline: result.json's
        ``config``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "solver"}
        fixed = FIXED_SOLVER_FIELDS.get(self.method, {})
        out.update({k: v for k, v in dataclasses.asdict(self.solver).items() if k not in fixed})
        return out


def solver_flag_names() -> list[str]:
    """The solver config fields that are flags: those of both methods' configs, once."""
    names = []
    for method in METHODS:
        fixed = FIXED_SOLVER_FIELDS.get(method, {})
        names += [f.name for f in dataclasses.fields(solvers.config_class(method))
                  if f.name not in fixed and f.name not in names]
    return names


def _add_flag(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
    """``--field-name`` for a settings field (its own default, else None)."""
    meta = field.metadata
    kwargs = dict(meta["flag"], help=meta["help"])
    kwargs["default"] = None if field.default is dataclasses.MISSING else field.default
    if kwargs["default"] is not None:
        kwargs["help"] += " (default: %(default)s)"
    if "action" not in kwargs:
        kwargs["type"] = meta["kind"]
    parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, **kwargs)


def build_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    """A flag for every field of ``cls`` and every solver config field (`solver_flag_names`)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    run = parser.add_argument_group("run (default: the original's value for --method, N and K)")
    for field in dataclasses.fields(cls):
        if field.name != "solver":
            _add_flag(run, field)
    group = parser.add_argument_group("solver (default: the original's value for --method)")
    for name in solver_flag_names():
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=float, default=None,
                           help=SOLVER_FLAG_HELP[name])
    return parser


def _fill(values: dict[str, Any], table: dict[str, Any]) -> None:
    """Set every entry of ``values`` that is None and in ``table`` to the table's value."""
    for key, value in table.items():
        if key in values and values[key] is None:
            values[key] = value


def original_values(experiment_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags with every None filled from the original's settings (module docstring)
    and ``out`` resolved (`experiment.resolve_out_dir`)."""
    experiment.resolve_out_dir(args, experiment_name)
    values = dict(vars(args))
    _fill(values, paper_defaults.defaults(experiment_name, values["method"]))
    _fill(values, few_shot_defaults.task_defaults(experiment_name, values["method"], values["nway"],
                                                  values["kshot"]))
    _fill(values, {"test_lr": values["lr_v"], "checkpoint_every": values["eval_every"]})
    return values


def solver_config(method: str, values: dict[str, Any]) -> Any:
    """The config of ``method`` from the solver fields of ``values`` and the fixed ones."""
    fixed = FIXED_SOLVER_FIELDS.get(method, {})
    names = {f.name for f in dataclasses.fields(solvers.config_class(method))} - set(fixed)
    return solvers.make_config(method, **{k: v for k, v in values.items() if k in names}, **fixed)


def check(settings: RunSettings) -> None:
    """Raise `ExperimentError` for a setting below its field's minimum."""
    for field in dataclasses.fields(settings):
        minimum, value = field.metadata.get("minimum"), getattr(settings, field.name)
        if minimum is not None and value is not None and value < minimum:
            raise experiment.ExperimentError(
                f"--{field.name.replace('_', '-')} must be >= {minimum}, got {value}")


def resolve(cls: type, experiment_name: str, args: argparse.Namespace) -> RunSettings:
    """The checked settings of a run of ``experiment_name`` from its parsed flags."""
    values = original_values(experiment_name, args)
    settings = cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name != "solver"},
                   solver=solver_config(values["method"], values))
    check(settings)
    return settings
