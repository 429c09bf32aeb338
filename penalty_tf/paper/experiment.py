"""Shared run plumbing for every experiment script.

Every script under ``synthetic/``, ``importance_learning/``, ``few_shot/`` and
``poisoning/`` uses the helpers in this module so that all runs look alike:

* the same command-line flags (:func:`add_common_flags`, :func:`resolve_out_dir`);
* the same seeding (:func:`seed_everything`);
* progress bars that ``--quiet`` silences (:func:`progress`) and a wall-clock
  :class:`Timer`;
* atomic output files, so that a killed run never leaves a half-written file
  (:func:`write_json_atomic`, :func:`save_npz_atomic`, :func:`save_figure_atomic`);
* one ``result.json`` schema (:func:`write_result`), see ``docs/original.md`` §7.1;
* clean error reporting for bad input (:class:`ExperimentError`, :func:`run_main`).

A typical script::

    def main(argv=None):
        parser = argparse.ArgumentParser(description=__doc__)
        add_common_flags(parser, methods=["penalty", "approxgrad"],
                         default_method="penalty", epochs=100, lower_steps=20)
        args = parser.parse_args(argv)
        out_dir = resolve_out_dir(args, "importance_learning.mnist")
        seed_everything(args.seed)
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
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

# JSON and atomic writes are the library's (the checkpoints use them too); re-exported here.
from penalty_tf.files import PathLike, atomic_file, save_npz_atomic, to_jsonable, write_json_atomic  # noqa: F401


__all__ = [
    "ExperimentError",
    "Timer",
    "add_common_flags",
    "new_figure",
    "progress",
    "resolve_out_dir",
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
) -> argparse.ArgumentParser:
    """Add the flags that every experiment script shares.

    Args:
        parser: the script's parser; flags are added in place.
        methods: the allowed values of ``--method`` (e.g. ``["penalty", "approxgrad"]``).
        default_method: the default of ``--method``; must be one of ``methods``.
        epochs: default of ``--epochs`` (the original's setting).
        lower_steps: default of ``--lower-steps`` (T, the original's ``niter``).
        resume: also add ``--resume`` (for long runs that checkpoint).

    Returns:
        The same parser, for chaining.

    Flags added: ``--seed``, ``--data-dir``, ``--out``, ``--epochs``,
    ``--lower-steps``, ``--method``, ``--quiet`` and optionally ``--resume``.
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
    if resume:
        group.add_argument("--resume", action="store_true",
                           help="continue from the last checkpoint in --out, if any")
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


def resolve_out_dir(args: argparse.Namespace, experiment_name: str) -> Path:
    """Return the output directory of a run: ``--out`` or ``runs/<experiment_name>``.

    The chosen path is also stored back into ``args.out`` (as a string), so that the
    ``config`` recorded in ``result.json`` says where the run wrote. The directory is
    not created here; :func:`write_result` and the ``*_atomic`` writers create it.
    """
    out = getattr(args, "out", None)
    path = Path(out) if out else Path("runs") / experiment_name
    args.out = str(path)
    return path


# ------------------------------------------------------------------------ seeding


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's ``random``, NumPy's global RNG and TensorFlow's global seed.

    Uses ``keras.utils.set_random_seed``, which seeds all three. Returns a fresh
    ``numpy.random.Generator`` seeded with the same seed, for code that prefers an
    explicit random stream.

    Note: with XLA (``jit_compile=True``) TensorFlow ignores global seeds; compiled
    code must use ``tf.random.Generator`` or stateless random ops.
    """
    import keras  # imported lazily: keeps ``import penalty_tf.paper.experiment`` light

    seed = int(seed)
    keras.utils.set_random_seed(seed)
    return np.random.default_rng(seed)


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


def restore_checkpoint(checkpoint: Any, hint: str = "") -> Optional[dict[str, Any]]:
    """``checkpoint.restore()`` (a `penalty_tf.checkpoints.RunCheckpoint`): its sidecar state,
    or None if there is none; a damaged checkpoint or one of other settings is an
    `ExperimentError` with the checkpoint's message and ``hint``."""
    from penalty_tf.checkpoints import CheckpointError

    try:
        return checkpoint.restore()
    except CheckpointError as error:
        raise ExperimentError(f"{error}{hint}") from None


def _user_errors() -> tuple[type, ...]:
    """The errors that are the user's to fix (bad flags, data, checkpoint), not bugs. The
    checkpoint module is consulted only if loaded (it imports TensorFlow; unloaded, it
    cannot have raised)."""
    from penalty_tf.datasets.lookup import DataError

    errors: tuple[type, ...] = (ExperimentError, DataError)
    checkpoints = sys.modules.get("penalty_tf.checkpoints")
    return errors + (checkpoints.CheckpointError,) if checkpoints is not None else errors


def run_main(main_fn: Callable[[], Any]) -> None:
    """Run a script's ``main`` and turn :class:`ExperimentError` into a clean exit.

    On ``ExperimentError`` (or a dataset's `DataError`, a checkpoint's `CheckpointError`) prints ``error: <message>`` to stderr and exits with
    status 2 (as argparse does for bad flags), without a traceback. Any other
    exception propagates unchanged (a bug should show its traceback). If ``main_fn``
    returns an int, it is used as the exit status.
    """
    try:
        status = main_fn()
    except _user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if isinstance(status, int) and not isinstance(status, bool):
        sys.exit(status)
