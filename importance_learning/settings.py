"""The typed settings of one importance-learning run, and the command line generated from them.

`Settings` holds every setting of a run; its ``solver`` field is the solver's own config
(`PenaltyConfig` or `ApproxGradConfig`, whose fields become flags too). A script may extend
`Settings` with its own fields (``cifar10``: ``val_size``). Flags default to None and are
filled (`penalty_tf.paper.settings.resolve`) from the original's values for the chosen
``--method`` (`penalty_tf.paper.defaults.importance`), then from the field's own default.

Fields declared with ``resume=False`` are run control (where to write, how long, how loud):
they may differ when a run is resumed; every other field is in the checkpoint's resume key.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Optional

from penalty_tf.paper import defaults as paper_defaults
from penalty_tf.paper import experiment
from penalty_tf.paper import settings as flags

BILEVEL_METHODS = ("penalty", "approxgrad")
BASELINES = paper_defaults.importance.BASELINES
#: Solver config fields that importance learning fixes (one lower group, the applications'
#: ApproxGrad variant); they are not flags.
FIXED_SOLVER_FIELDS = {"approxgrad": {"extra_linear_step": False, "correction": "indexed"}}
SOLVER_HELP = {
    "lr_u": "Adam learning rate of the importance logits (upper level)",
    "lr_v": "learning rate of the classifier (lower level)",
    "lr_p": "ApproxGrad: Adam learning rate of the linear-system vector p",
}


def setting(help: str, kind: type = float, *, default: Any = dataclasses.MISSING, resume: bool = True,
            choices: Optional[tuple] = None, **bounds: Any) -> Any:
    """A `Settings` field (`penalty_tf.paper.settings.setting`): its flag's help text, argparse
    type and choices, its range (``minimum``, ``maximum``, ``above``, ``below``), and whether a
    resumed run must agree on it."""
    extra = {"choices": choices} if choices is not None else {}
    if kind is bool:
        extra["action"] = "store_true"
    return flags.setting(help, kind, default=default, resume=resume, **bounds, **extra)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of an importance-learning run (docs/original.md §3.0, §3.14)."""

    method: str = setting("bilevel method or baseline", str)
    seed: int = setting("random seed", int, **flags.SEED_RANGE)
    noise: float = setting("label-noise fraction: the first int(noise N) training labels are corrupted",
                           minimum=0, maximum=1)
    batch_size: int = setting("training and validation minibatch size", int, minimum=1)
    train_size: Optional[int] = setting("use only the first N training points (reduced budgets; noise is "
                                        "then on the first int(noise N) of them)", int, default=None, minimum=1)
    test_size: Optional[int] = setting("evaluate on the first N test points only (tiny CI runs)", int,
                                       default=None, minimum=1)
    epochs: int = setting("bilevel epochs", int, resume=False, minimum=1)
    first_epoch: int = setting("index of the first epoch (the original's loops start at 0 or 1; matters "
                               "for the halving schedule)", int, minimum=0)
    lower_steps: int = setting("lower-level steps per upper iteration, T", int, minimum=1)
    linear_steps: int = setting("ApproxGrad: linear-system steps per upper iteration (niter2; default: "
                                "= --lower-steps, as the original)", int, minimum=0)
    halve_every: int = setting("ApproxGrad: halve lr_u and lr_v after every k-th epoch (0: never)", int,
                               minimum=0)
    pretrain_epochs: int = setting("epochs of pre-training on the validation set", int, minimum=0)
    pretrain_lr: float = setting("Adam learning rate of pre-training (and of the baselines)", above=0)
    init_low: float = setting("initial importance where the pretrained model disagrees with the label",
                              above=0, below=1)
    init_high: float = setting("initial importance where it agrees", above=0, below=1)
    train_rounding: str = setting("minibatches per epoch of plain training", str, choices=("floor", "ceil"))
    eval_rounding: str = setting("batches in the original accuracy formula", str, choices=("floor", "ceil"))
    lower_optimizer: str = setting("lower-level optimizer: TF1 Adam, or SGD with momentum 0.9 (Ren et al.)",
                                   str, choices=("adam", "sgd"))
    weight_decay: float = setting("L2 weight decay 1/2 wd ||W||^2 on the kernels in g", minimum=0)
    solver: Any = dataclasses.field(default=None, metadata={"resume": True})
    xla: bool = setting("compile the solver step with XLA", bool, default=False, resume=False)
    data_dir: Optional[str] = setting("dataset directory", str, default=None, resume=False)
    out: Optional[str] = setting("output directory", str, default=None, resume=False)
    quiet: bool = setting("no progress output", bool, default=False, resume=False)
    deterministic: bool = setting(experiment.DETERMINISTIC_HELP, bool, default=False, resume=False)
    resume: bool = setting("continue from the checkpoint in --out", bool, default=False, resume=False)
    stop_after: Optional[int] = setting(argparse.SUPPRESS, int, default=None, resume=False, minimum=0)

    @property
    def bilevel(self) -> bool:
        """Whether the method is a bilevel one (not a baseline)."""
        return self.method in BILEVEL_METHODS

    def flat(self) -> dict[str, Any]:
        """Every setting in one flat dict (the solver config's fields inline), as result.json's
        ``config``."""
        return flags.flat(self)


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """A flag (default None) for every field of ``cls`` and of the solver configs that the
    parser does not have yet; ``--epochs`` and ``--lower-steps`` default to the original's."""
    flags.add_flags(parser, cls, BILEVEL_METHODS, fixed=FIXED_SOLVER_FIELDS, solver_help=SOLVER_HELP,
                    reset=("epochs", "lower_steps"))


def _derive(values: dict[str, Any]) -> None:
    """ApproxGrad's linear-system steps default to its lower steps, as in the original."""
    if values["method"] == "approxgrad" and not values["linear_steps"]:
        values["linear_steps"] = values["lower_steps"]


def from_args(cls: type, experiment_name: str, args: argparse.Namespace) -> Settings:
    """The run's `Settings` from parsed flags, unset ones filled with the original's values for
    the method (baselines: the Penalty values); validated."""
    settings = flags.resolve(cls, args, [paper_defaults.defaults(experiment_name, args.method)],
                             methods=BILEVEL_METHODS, fixed=FIXED_SOLVER_FIELDS, derive=_derive,
                             config_method=args.method if args.method in BILEVEL_METHODS else "penalty")
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    """Refuse settings the run cannot use, naming the flag (`ExperimentError`); the ranges of
    single settings are declared on the fields and checked by `penalty_tf.paper.settings.resolve`."""
    err = experiment.ExperimentError
    for name in ("lr_u", "lr_v"):
        flags.check_range(name, getattr(s.solver, name), above=0)
    if s.train_size is not None and s.train_size < s.batch_size:
        raise err(f"--train-size must be >= --batch-size ({s.batch_size}), got {s.train_size}")
