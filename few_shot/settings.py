"""The typed settings of a few-shot run and the command line generated from them.

`RunSettings` holds the run's own settings; its ``solver`` field is the method's config
(`PenaltyConfig` or `ApproxGradConfig`), whose fields are flags too. A script extends
`RunSettings` with its data and encoder settings (`few_shot.omniglot.OmniglotSettings`).
A flag not given is filled (`penalty_tf.paper.settings.resolve`), in this order, from the
original's values for the script and ``--method`` (`penalty_tf.paper.defaults.few_shot`
``DEFAULTS``), from its rows for the run's N and K (``BY_TASK``: iterations, meta-batch),
from the field's default, and by the two rules ``test_lr = lr_v`` (ApproxGrad scripts) and
``checkpoint_every = eval_every``.

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
from penalty_tf.paper import settings as flags
from penalty_tf.paper.defaults import few_shot as few_shot_defaults

METHODS = ("penalty", "approxgrad")
#: Solver config fields the few-shot runs fix: one lower group whose correction the run's
#: ``--correction`` weights (`few_shot.problem.make_solver`), no extra linear step.
FIXED_SOLVER_FIELDS = {"approxgrad": {"correction": "all", "extra_linear_step": False}}
SOLVER_HELP = {
    "lr_u": "TF1-Adam learning rate of the encoder (u)",
    "lr_v": "TF1-Adam learning rate of the classifiers (v)",
    "lr_p": "ApproxGrad: TF1-Adam learning rate of the linear-system vector p",
    "lr_decay": "Penalty: factor of every learning rate then (multi-group: 0.99)",
}
setting = flags.setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Every setting of a few-shot run but the data's and the encoder's (docs/original.md §3.5)."""

    method: str = setting("bilevel method", str, default="penalty", choices=METHODS)
    nway: int = setting("N classes per task", minimum=2)
    kshot: int = setting("K support images per class", minimum=1)
    iterations: int = setting("meta-iterations", minimum=1, resume=False)
    meta_batch: int = setting("tasks per meta-batch (T)", minimum=1)
    eval_every: int = setting("run the meta-test after every this many meta-iterations (and at the end)",
                              minimum=1, resume=False)
    test_tasks: int = setting("meta-test tasks per evaluation", minimum=1)
    test_steps: int = setting("classifier steps at meta-test", minimum=1)
    test_lr: float = setting("meta-test classifier Adam learning rate (Penalty 1e-3; ApproxGrad lr_v)",
                             float, above=0)
    lower_steps: int = setting("v-steps per meta-iteration (niter_v)", minimum=1)
    linear_steps: int = setting("ApproxGrad p-steps (niter_p)", minimum=0)
    query_per_class: int = setting(f"query images per class (the original's {QUERY_PER_CLASS})", minimum=1)
    correction: str = setting("ApproxGrad encoder correction: task 0 only (original) or all tasks", str,
                              choices=CORRECTIONS)
    xla: bool = setting("compile the meta-iteration and the meta-test with XLA", bool, default=False,
                        resume=False, action=argparse.BooleanOptionalAction)
    checkpoint_every: int = setting("save a checkpoint every this many meta-iterations (default: "
                                    "--eval-every)", minimum=1, resume=False)
    seed: int = setting("random seed", default=0, **flags.SEED_RANGE)
    data_dir: Optional[str] = setting("dataset directory", str, default=None, resume=False)
    out: Optional[str] = setting("output directory (default: runs/<experiment>)", str, default=None,
                                 resume=False)
    resume: bool = setting("continue from the checkpoint in --out (every setting as before but the run "
                           "control: --iterations may be raised to extend the run, not lowered below the "
                           "meta-iterations done; other learning rates need a fresh run)", bool, default=False,
                           resume=False, action="store_true")
    quiet: bool = setting("no progress output", bool, default=False, resume=False, action="store_true")
    deterministic: bool = setting(experiment.DETERMINISTIC_HELP, bool, default=False, resume=False,
                                  action="store_true")
    stop_after: Optional[int] = setting(argparse.SUPPRESS, default=None, resume=False, minimum=0)
    solver: Any = dataclasses.field(default=None)

    def flat(self) -> dict[str, Any]:
        """Every setting in one dict, the solver's (but its fixed fields) inline: result.json's
        ``config``."""
        return flags.flat(self, omit=FIXED_SOLVER_FIELDS.get(self.method, {}))


def build_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    """A flag for every field of ``cls`` and every solver config field of `METHODS`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    flags.add_flags(parser, cls, METHODS, fixed=FIXED_SOLVER_FIELDS, solver_help=SOLVER_HELP,
                    title="settings (default: the original's value for --method, N and K)")
    return parser


def _derive(values: dict[str, Any]) -> None:
    """The two rules ``test_lr = lr_v`` and ``checkpoint_every = eval_every`` (module docstring)."""
    for name, source in (("test_lr", "lr_v"), ("checkpoint_every", "eval_every")):
        if values[name] is None:
            values[name] = values[source]


def resolve(cls: type, experiment_name: str, args: argparse.Namespace) -> RunSettings:
    """The checked settings of a run of ``experiment_name`` from its parsed flags; ``out``
    resolved, then checked (`experiment.resolve_out_dir`) once the flags are: before any work."""
    out = experiment.resolve_out_dir(args, experiment_name, check=False)
    method = args.method or cls.__dataclass_fields__["method"].default
    table = paper_defaults.defaults(experiment_name, method)
    nway, kshot = (getattr(args, name) or table.get(name) for name in ("nway", "kshot"))
    tables = [table, few_shot_defaults.task_defaults(experiment_name, method, nway, kshot)]
    settings = flags.resolve(cls, args, tables, methods=METHODS, config_method=method,
                             fixed=FIXED_SOLVER_FIELDS, derive=_derive)
    experiment.check_out_dir(out)
    return settings


def solver_config(method: str, values: dict[str, Any]) -> Any:
    """The config of ``method`` from the solver fields of ``values`` and the fixed ones."""
    names = flags.solver_fields([method], FIXED_SOLVER_FIELDS)
    return solvers.make_config(method, **{k: v for k, v in values.items() if k in names},
                               **FIXED_SOLVER_FIELDS.get(method, {}))
