"""Shared run plumbing for every experiment script.

Every script under ``synthetic/``, ``importance_learning/``, ``few_shot/`` and
``poisoning/`` uses the helpers in this module so that all runs look alike:

* the same command-line flags (:func:`add_common_flags`, :func:`resolve_out_dir`);
* an output directory checked before any work: created, probed with a file, cleared of the
  temporary files of killed runs (:func:`check_out_dir`);
* the same seeding, and bitwise repeatable TensorFlow with ``--deterministic``
  (:func:`seed_everything`, :func:`make_deterministic`);
* progress bars that ``--quiet`` silences (:func:`progress`) and a wall-clock
  :class:`Timer`;
* atomic output files, so that a killed run never leaves a half-written file
  (:func:`write_json_atomic`, :func:`save_npz_atomic`, :func:`save_figure_atomic`);
* one ``result.json`` schema (:func:`write_result`), see ``docs/original.md`` §7.1;
* resumes that refuse damaged checkpoints and shorter budgets (:func:`restore_checkpoint`,
  :func:`check_resume_budget`);
* clean error reporting (:class:`ExperimentError`, :func:`run_main`): exit status 2 for
  bad input and diverged runs, 1 for an operating-system error (a full disk), no traceback.

A typical script::

    def main(argv=None):
        parser = argparse.ArgumentParser(description=__doc__)
        add_common_flags(parser, methods=["penalty", "approxgrad"],
                         default_method="penalty", epochs=100, lower_steps=20)
        args = parser.parse_args(argv)
        ...                                   # validate every flag first
        out_dir = resolve_out_dir(args, "importance_learning.mnist")   # then check --out
        seed_everything(args.seed, deterministic=args.deterministic)
        with Timer() as timer:
            metrics = ...
        write_result(out_dir, experiment="importance_learning.mnist",
                     method=args.method, config=vars(args), metrics=metrics,
                     published={}, wall_time_s=timer.elapsed)

    if __name__ == "__main__":
        run_main(main)

This module deliberately imports neither TensorFlow nor matplotlib at import time:
TensorFlow is imported inside the functions that need it, and matplotlib (with the
non-interactive Agg backend) only when a figure is saved.
"""

from __future__ import annotations

import argparse
import errno
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

# JSON and atomic writes are the library's (the checkpoints use them too); re-exported here.
from penalty_tf import files
from penalty_tf.files import PathLike, atomic_file, save_npz_atomic, to_jsonable, write_json_atomic  # noqa: F401


__all__ = [
    "ExperimentError",
    "Timer",
    "add_common_flags",
    "check_out_dir",
    "check_resume_budget",
    "make_deterministic",
    "new_figure",
    "progress",
    "resolve_out_dir",
    "restore_checkpoint",
    "run_main",
    "save_figure_atomic",
    "save_npz_atomic",
    "seed_everything",
    "to_jsonable",
    "versions",
    "write_json_atomic",
    "write_result",
]


class ExperimentError(Exception):
    """Bad input to an experiment (missing data, inconsistent flags, ...).

    Raise it with a message that tells the user what is wrong and how to fix it;
    :func:`run_main` prints ``error: <message>`` and exits with status 2, without a
    traceback.
    """


# --------------------------------------------------------------------------- flags


def add_common_flags(
    parser: argparse.ArgumentParser,
    *,
    methods: Sequence[str],
    default_method: str,
    epochs: int,
    lower_steps: int,
    resume: bool = False,
    resume_help: str = "continue from the last checkpoint in --out, if any",
) -> argparse.ArgumentParser:
    """Add the flags that every experiment script shares.

    Args:
        parser: the script's parser; flags are added in place.
        methods: the allowed values of ``--method`` (e.g. ``["penalty", "approxgrad"]``).
        default_method: the default of ``--method``; must be one of ``methods``.
        epochs: default of ``--epochs`` (the original's setting).
        lower_steps: default of ``--lower-steps`` (T, the original's ``niter``).
        resume: also add ``--resume`` (for long runs that checkpoint).
        resume_help: its help, which says what a resume may change (e.g. a longer budget).

    Returns:
        The same parser, for chaining.

    Flags added: ``--seed``, ``--data-dir``, ``--out``, ``--epochs``,
    ``--lower-steps``, ``--method``, ``--quiet``, ``--deterministic`` and optionally
    ``--resume``.
    ``--out`` defaults to ``None``; use :func:`resolve_out_dir` to turn that into
    ``runs/<experiment>``. Wrong values give argparse's usual error (exit status 2).
    """
    methods = list(methods)
    if default_method not in methods:
        raise ValueError(f"default_method {default_method!r} is not in methods {methods}")
    group = parser.add_argument_group("common run options")
    group.add_argument("--seed", type=int, default=0,
                       help="random seed for Python, NumPy and TensorFlow (default: %(default)s)")
    group.add_argument("--data-dir", default=None, metavar="DIR",
                       help="directory with the dataset files; searched before "
                            "$PENALTY_TF_DATA and ~/.keras/datasets")
    group.add_argument("--out", default=None, metavar="DIR",
                       help="output directory for result.json, plots and arrays "
                            "(default: runs/<experiment>)")
    group.add_argument("--epochs", type=_positive_int, default=epochs,
                       help="number of upper-level epochs/iterations (default: %(default)s)")
    group.add_argument("--lower-steps", type=_positive_int, default=lower_steps,
                       help="lower-level updates per upper-level step, T (default: %(default)s)")
    group.add_argument("--method", choices=methods, default=default_method,
                       help="bilevel method (default: %(default)s)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    group.add_argument("--deterministic", action="store_true", help=DETERMINISTIC_HELP)
    if resume:
        group.add_argument("--resume", action="store_true", help=resume_help)
    return parser


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


DETERMINISTIC_HELP = ("bitwise repeatable TensorFlow: deterministic kernels and no Grappler graph "
                      "rewrites (slower; see docs/using_the_solver.md)")

#: Where the scripts keep checkpoints inside ``--out`` (cleared of stale temporaries too).
CHECKPOINT_DIRS = ("checkpoint", "checkpoints/*")


def resolve_out_dir(args: argparse.Namespace, experiment_name: str, *, check: bool = True) -> Path:
    """Return the output directory of a run: ``--out`` or ``runs/<experiment_name>``, checked.

    The chosen path is also stored back into ``args.out`` (as a string), so that the
    ``config`` recorded in ``result.json`` says where the run wrote. With ``check`` (the
    default) the directory is then made ready by :func:`check_out_dir`: call this after
    the flags are validated (a refused flag leaves nothing behind) and before any data is
    loaded or model built (an unusable ``--out`` is refused before the work, not after).
    ``check=False`` only chooses the path, for settings that record it before they are
    validated; call :func:`check_out_dir` afterwards.
    """
    out = getattr(args, "out", None)
    path = Path(out) if out else Path("runs") / experiment_name
    args.out = str(path)
    return check_out_dir(path) if check else path


def _os_reason(error: OSError, flag: str) -> tuple[str, str]:
    """What an `OSError` of creating or probing an output directory means, and its fix."""
    other = f"choose another {flag}"
    reasons = {errno.EEXIST: ("it is a file, not a directory", f"remove or rename that file, or {other}"),
               errno.ENOTDIR: ("a part of the path is a file, not a directory", other),
               errno.EACCES: ("permission denied", f"{other} (a writable directory), or fix its permissions"),
               errno.EROFS: ("the filesystem is read-only", other),
               errno.ENOSPC: ("no space left on the device", f"free disk space, or {other}")}
    reasons[errno.EPERM] = reasons[errno.EACCES]
    return reasons.get(error.errno, (error.strerror or str(error), other))


def check_out_dir(path: PathLike, flag: str = "--out") -> Path:
    """Make ``path`` ready for a run's outputs before any work: create it, write and remove a
    probe file, and remove the temporary files that killed runs left there and in its
    checkpoint directories (`CHECKPOINT_DIRS`; only temporaries no live writer holds, see
    `penalty_tf.files.remove_stale_temps`).

    Raises:
        ExperimentError: naming the path, the reason and the fix when the directory cannot
            be created or written (a file at the path or above it, no permission, a
            read-only or full disk); nothing is left behind then.
    """
    path = Path(path)
    try:
        files.check_writable_dir(path)
    except OSError as error:
        reason, fix = _os_reason(error, flag)
        where = next((p for p in reversed(path.parents) if p.is_file()), error.filename or path)
        raise ExperimentError(f"cannot write to {flag} {path} ({reason}: {where}); {fix}") from None
    for directory in (path, *(d for pattern in CHECKPOINT_DIRS for d in sorted(path.glob(pattern)))):
        files.remove_stale_temps(directory)
    return path


# ------------------------------------------------------------------------ seeding


def seed_everything(seed: int, deterministic: bool = False) -> np.random.Generator:
    """Seed Python's ``random``, NumPy's global RNG and TensorFlow's global seed; with
    ``deterministic`` also :func:`make_deterministic` (the scripts' ``--deterministic``).

    Uses ``keras.utils.set_random_seed``, which seeds all three. Returns a fresh
    ``numpy.random.Generator`` seeded with the same seed, for code that prefers an
    explicit random stream. Call it before any model is built or step traced.

    Note: with XLA (``jit_compile=True``) TensorFlow ignores global seeds; compiled
    code must use ``tf.random.Generator`` or stateless random ops.
    """
    import keras  # imported lazily: keeps ``import penalty_tf.paper.experiment`` light

    if deterministic:
        make_deterministic()
    seed = int(seed)
    keras.utils.set_random_seed(seed)
    return np.random.default_rng(seed)


def make_deterministic() -> None:
    """Make TensorFlow compute the same bits in every process: deterministic kernels
    (``tf.config.experimental.enable_op_determinism``) and Grappler's graph rewrites off
    (``disable_meta_optimizer``). The second is what makes two runs of the MNIST CNN
    importance script agree bitwise on the CPU: Grappler rewrites a compiled step
    differently from process to process (docs/using_the_solver.md §5). Call it before the
    first step is traced; it costs speed."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def versions() -> dict[str, str]:
    """Versions of the software a result was produced with (for ``result.json``)."""
    import keras
    import tensorflow as tf

    from penalty_tf import __version__

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "penalty_tf": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# ------------------------------------------------------------------ figures


def new_figure(**figure_kwargs: Any) -> Any:
    """Return a new matplotlib ``Figure`` drawn by the Agg canvas, without pyplot.

    Such figures need no display, are not kept alive by pyplot's figure registry
    (no need to close them), and can be passed to :func:`save_figure_atomic`.
    ``figure_kwargs`` go to ``matplotlib.figure.Figure`` (e.g. ``figsize=(8, 6)``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**figure_kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure_atomic(fig: Any, path: PathLike, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure as PNG at ``path``, atomically.

    The figure is rendered with the non-interactive Agg canvas (no display needed),
    whatever backend pyplot happens to use. ``savefig_kwargs`` go to
    ``Figure.savefig`` (e.g. ``dpi=150, bbox_inches="tight"``); the format is PNG
    unless ``format=`` says otherwise. Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)  # attaches an Agg canvas to the figure
    savefig_kwargs.setdefault("format", "png")
    with atomic_file(path) as handle:
        fig.savefig(handle, **savefig_kwargs)
    return path


# ------------------------------------------------------------------------ results


RESULT_KEYS = ("experiment", "method", "config", "metrics", "published", "wall_time_s",
               "versions")
"""The keys of ``result.json``, in order (see ``docs/original.md`` §7.1)."""


def write_result(
    out_dir: PathLike,
    *,
    experiment: str,
    method: str,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    published: Mapping[str, Any],
    wall_time_s: float,
) -> dict[str, Any]:
    """Write ``out_dir/result.json`` (atomically) and return its content as a dict.

    The schema is the one fixed in ``docs/original.md`` §7.1::

        {"experiment": str, "method": str, "config": {...all flags...},
         "metrics": {...}, "published": {...}, "wall_time_s": float,
         "versions": {"tensorflow": ..., "keras": ..., "penalty_tf": ..., ...}}

    Args:
        out_dir: the run's output directory; created if missing.
        experiment: experiment name, e.g. ``"synthetic"`` or ``"poisoning.targeted"``.
        method: the method that produced the metrics, e.g. ``"penalty"``.
        config: every flag of the run, typically ``vars(args)``.
        metrics: the measured numbers.
        published: the paper's number for this setting
            (``penalty_tf.paper.published_dict(...)``), or ``{}``.
        wall_time_s: wall-clock seconds of the run.

    Returns:
        The JSON-ready dict that was written (NaN/inf already replaced by ``None``).
    """
    result = to_jsonable({
        "experiment": experiment,
        "method": method,
        "config": dict(config),
        "metrics": dict(metrics),
        "published": dict(published),
        "wall_time_s": float(wall_time_s),
        "versions": versions(),
    })
    write_json_atomic(Path(out_dir) / "result.json", result)
    return result


# ------------------------------------------------------------- progress and timing


class _NoProgress:
    """A progress bar that shows nothing (used under ``--quiet``)."""

    def update(self, current: int, values: Optional[list] = None, **kwargs: Any) -> None:
        """Do nothing."""

    def add(self, n: int, values: Optional[list] = None) -> None:
        """Do nothing."""


def progress(total: Optional[int], *, quiet: bool, unit_name: str = "step") -> Any:
    """Return a progress bar for a loop of ``total`` steps.

    A ``keras.utils.Progbar`` when ``quiet`` is false, otherwise an object with the
    same ``update(current, values=None)`` and ``add(n, values=None)`` methods that
    does nothing. ``values`` is a list of ``(name, number)`` pairs shown next to the
    bar (averaged over steps by Progbar).
    """
    if quiet:
        return _NoProgress()
    import keras

    return keras.utils.Progbar(total, unit_name=unit_name)


class Timer:
    """Context manager that measures wall-clock seconds with ``time.perf_counter``.

    ``elapsed`` is the running time inside the block, and the final duration after it::

        with Timer() as timer:
            work()
        print(timer.elapsed)
    """

    def __init__(self) -> None:
        self._start: Optional[float] = None
        self._stop: Optional[float] = None

    def __enter__(self) -> "Timer":
        self._start = time.perf_counter()
        self._stop = None
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since entering the block (frozen once the block is left)."""
        if self._start is None:
            return 0.0
        end = self._stop if self._stop is not None else time.perf_counter()
        return end - self._start


# ------------------------------------------------------------------- entry point


RESUME_HINT = ", or run without --resume (a fresh run replaces the checkpoint)"


def restore_checkpoint(checkpoint: Any, hint: str = RESUME_HINT) -> Optional[dict[str, Any]]:
    """``--resume``: ``checkpoint.restore()`` (a `penalty_tf.checkpoints.RunCheckpoint`), its
    sidecar state, or None when nothing was saved. A damaged checkpoint, one of other
    settings, or TF checkpoint files without the sidecar naming them (a run killed while
    writing its first checkpoint, or a damaged directory) is an `ExperimentError` naming the
    file and the fix, followed by ``hint``; nothing is deleted or written."""
    from penalty_tf.checkpoints import CheckpointError

    if not checkpoint.exists() and checkpoint.numbers():
        raise ExperimentError(
            f"cannot resume from {checkpoint.directory}: it holds checkpoint files but no "
            f"{checkpoint.sidecar.name} naming them (a run killed while writing its first checkpoint, "
            f"or a damaged directory); delete {checkpoint.directory}{hint}")
    try:
        return checkpoint.restore()
    except CheckpointError as error:
        raise ExperimentError(f"{error}{hint}") from None


def check_resume_budget(done: int, total: int, *, flag: str, unit: str, directory: PathLike) -> None:
    """Refuse a resume whose budget ``total`` (``flag``) is below the ``done`` units the
    checkpoint in ``directory`` already holds: its result would contradict its config. A
    larger budget is fine (the run is extended)."""
    if done > total:
        raise ExperimentError(
            f"cannot resume from {directory} with {flag} {total}: its checkpoint has already done {done} "
            f"{unit}; resume with {flag} {done} or more (extends the run), or run without --resume")


def _user_errors() -> tuple[type, ...]:
    """The errors that are the user's to fix (bad flags, data, checkpoint), not bugs. The
    checkpoint module is consulted only if loaded (it imports TensorFlow; unloaded, it
    cannot have raised)."""
    from penalty_tf.datasets.lookup import DataError

    errors: tuple[type, ...] = (ExperimentError, DataError)
    checkpoints = sys.modules.get("penalty_tf.checkpoints")
    return errors + (checkpoints.CheckpointError,) if checkpoints is not None else errors


#: What to do when a run diverged (NaN/Inf), for error messages. A checkpoint refuses
#: other learning rates (they are in its resume key), so the advice is a fresh run.
NONFINITE_ADVICE = ("The run diverged: rerun without --resume (a fresh run replaces the checkpoint) with "
                    "smaller learning rates (--lr-u, --lr-v; e.g. ten times smaller), or with the settings you "
                    "changed back at their defaults, or in another --out")


def _nonfinite_error() -> tuple[type, ...]:
    """`penalty_tf.solvers.NonFiniteError` if the solvers are loaded (unloaded, nothing can
    have raised it)."""
    monitor = sys.modules.get("penalty_tf.solvers.monitor")
    return (monitor.NonFiniteError,) if monitor is not None else ()


def os_error_message(error: OSError) -> str:
    """One line for an `OSError` of a run (a full disk, a permission changed meanwhile)."""
    where = f" ({error.filename})" if getattr(error, "filename", None) else ""
    what = error.strerror or str(error)
    return (f"{what}{where}: the run could not read or write a file; free disk space or fix the "
            "permissions, then rerun (scripts with --resume continue from their last checkpoint)")


def _fail(message: str, status: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def run_main(main_fn: Callable[[], Any]) -> None:
    """Run a script's ``main`` and turn the errors a user can fix into one clean line.

    Prints ``error: <message>`` to stderr, without a traceback, and exits with status

    * 2 for bad input (as argparse does for bad flags): an :class:`ExperimentError`, a
      dataset's `DataError`, a checkpoint's `CheckpointError`; and for a diverged run
      (`NonFiniteError`: its message followed by `NONFINITE_ADVICE`);
    * 1 for an `OSError` while the run works (a full disk, a permission): not the input's
      fault, and the outputs already written are complete files (atomic writes).

    Any other exception propagates unchanged (a bug should show its traceback). If
    ``main_fn`` returns an int, it is used as the exit status.
    """
    try:
        status = main_fn()
    except _user_errors() as error:
        _fail(str(error), 2)
    except _nonfinite_error() as error:
        _fail(f"{str(error).rstrip('.')}. {NONFINITE_ADVICE}", 2)
    except OSError as error:
        _fail(os_error_message(error), 1)
    if isinstance(status, int) and not isinstance(status, bool):
        sys.exit(status)
