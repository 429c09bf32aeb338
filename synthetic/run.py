"""Synthetic bilevel problems: the runner behind the paper's Fig. 1, Fig. 2 and Table 2.

    python -m synthetic.run --example SMD20 --method penalty --lower-steps 10 \\
        --epochs 40001 --trials 20 --seed 0 --out runs/smd20

``--example``, ``--method`` and ``--lower-steps`` take several values (or ``all``). The
defaults are the original driver's (``test_synthetic.py``, docs/original.md §2.4): examples
SMD20, SMD21, SMD24, SMD23; methods GD, RMD, ApproxGrad, Penalty; T = 1, 5, 10; 40,001
upper iterations; 20 trials; err, f and g recorded every 10 iterations; lr_u 1e-3,
lr_v 1e-4, lr_p 1e-4; Penalty rho_0 1, lambda_0 10, eps_0 1, c_rho 1.1; ApproxGrad sigma
1e-6 with T + 1 linear-system steps. (The paper's Table 2 used 10,000 iterations and 10
trials: ``--epochs 10000 --trials 10``.)

Writes to ``--out``: ``result.json`` (per example, method and T: initial and final err
over trials, seconds per 1000 iterations, and the paper's Table 2 time), ``curves.npz``
(arrays named like the original's files: ``{example}_{method}_T{T}_errs`` with shape
(records, trials), likewise ``_fs``, ``_gs``, ``_ts`` (seconds per trial) and for Penalty
``_ftilde`` and ``_rhos``), and one Fig. 1/2-style plot per example
(``err_{example}.png``: one panel per method and T, trials faint, their mean bold).
Each finished (example, method, T) is also saved under ``parts/``; ``--resume`` reuses
them after an interruption.

Deviations from the original, all documented choices:

* The A matrices are drawn once per example from a generator seeded by ``--seed`` and
  shared by all methods (the original drew them unseeded, separately per method).
* Trial k starts every method and T from the same seeded initial point (the original's
  were unseeded and differed).
* Penalty's recorded ``gs`` are g (the original stored f there by mistake, §2.5).
* The original printed nothing for Penalty/GD and some progress for RMD/ApproxGrad every
  1000 iterations (inside its timings); we show one progress bar per setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from penalty_tf.paper import experiment, published as paper

EXAMPLES = ("SMD20", "SMD21", "SMD24", "SMD23")
ALL_EXAMPLES = ("SMD20", "SMD21", "SMD22", "SMD23", "SMD24")
METHODS = ("gd", "rmd", "approxgrad", "penalty")
METHOD_LABELS = {"gd": "GD", "rmd": "RMD", "approxgrad": "ApproxGrad", "penalty": "Penalty"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Step sizes and penalty parameters of the synthetic driver (original defaults)."""

    lr_u: float = 1e-3
    lr_v: float = 1e-4
    lr_p: float = 1e-4
    sig: float = 1e-6
    rho0: float = 1.0
    lamb0: float = 10.0
    eps0: float = 1.0
    c_rho: float = 1.1


def build_solver(method: str, problem, settings: Settings, *, jit_compile: bool,
                 check_finite: bool = True):
    """The solver of ``method`` on a synthetic problem, with the original's settings.

    ApproxGrad runs T linear-system steps (+1: the synthetic variant's quirk) per iteration.
    """
    from penalty_tf.solvers import GD, RMD, ApproxGrad, Penalty, PenaltySchedule

    s = settings
    common = dict(upper_bounds=(problem.lower_bound, problem.upper_bound),
                  lower_bounds=(problem.lower_bound, problem.upper_bound),
                  jit_compile=jit_compile, check_finite=check_finite)
    args = (problem.upper_loss, problem.lower_loss, problem.upper_vars, problem.lower_vars)
    if method == "gd":
        solver = GD(*args, upper_optimizer=s.lr_u, lower_optimizer=s.lr_v, **common)
    elif method == "rmd":
        solver = RMD(*args, upper_lr=s.lr_u, lower_lr=s.lr_v, **common)
    elif method == "approxgrad":
        solver = ApproxGrad(*args, upper_optimizer=s.lr_u, lower_optimizer=s.lr_v,
                            linear_optimizer=s.lr_p, sig=s.sig, extra_linear_step=True, **common)
    elif method == "penalty":
        schedule = PenaltySchedule.synthetic(rho0=s.rho0, lamb0=s.lamb0, eps0=s.eps0, c_rho=s.c_rho)
        solver = Penalty(*args, upper_optimizer=s.lr_u, lower_optimizer=s.lr_v,
                         schedule=schedule, **common)
    else:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    return solver


def _stream(seed: int, example: str, *extra: int) -> np.random.Generator:
    """A generator seeded by (seed, example, extra...): independent, reproducible streams."""
    return np.random.default_rng([seed, zlib.crc32(example.encode()), *extra])


def run_trial(solver, error: Callable[[], Any], lower_steps: int, epochs: int,
              record_every: int, extras: tuple[str, ...] = (),
              on_record: Callable[[int], None] | None = None) -> tuple[dict[str, np.ndarray], float]:
    """Run ``epochs`` upper iterations; record err, f, g (and extras) every ``record_every``.

    As the original, epoch e is recorded after its update when ``e % record_every == 0``,
    and the wall time includes the err evaluations. The iterations between two records run
    as one graph call (`BilevelSolver.steps`), which gives the same iterates as one call per
    iteration without the per-call host overhead. Returns the arrays and the seconds.
    """
    names = ("errs", "fs", "gs") + extras
    records: dict[str, list] = {name: [] for name in names}
    keys = {"fs": "f", "gs": "g", "ftilde": "h_lower", "rhos": "rho"}
    start = time.perf_counter()
    done = 0
    while done < epochs:
        next_record = 0 if done == 0 else -(-done // record_every) * record_every
        chunk = (next_record - done + 1) if next_record < epochs else (epochs - done)
        out = solver.steps(None, chunk, lower_steps)
        done += chunk
        if next_record < epochs:
            records["errs"].append(error())
            for name in names[1:]:
                records[name].append(out[keys[name]])
            if on_record is not None:
                on_record(next_record)
    seconds = time.perf_counter() - start
    return {name: np.array([float(x) for x in values]) for name, values in records.items()}, seconds


def run_method(example: str, method: str, args: argparse.Namespace, problem,
               todo: list[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """All trials of one (example, method) for each T in ``todo``: yields T and arrays
    shaped (records, trials) like the original's files, as each T finishes. One solver serves every T and trial (T is
    a tensor argument: no recompilation); each trial re-initialises u, v and the solver."""
    import tensorflow as tf

    solver = build_solver(method, problem, Settings(**_settings_kwargs(args)),
                          jit_compile=args.xla, check_finite=not args.no_check_finite)
    error = tf.function(problem.error, jit_compile=args.xla)
    # Compile before timing (the original's TF1 graphs had no compile step).
    solver.steps(None, 1, 1)
    error()
    extras = ("ftilde", "rhos") if method == "penalty" else ()
    n_records = (args.epochs - 1) // args.record_every + 1
    for lower_steps in todo:
        if not args.quiet:
            print(f"{example}/{method}/T{lower_steps}: {args.trials} trials x {args.epochs} iterations")
        bar = experiment.progress(args.trials * n_records, quiet=args.quiet, unit_name="record")
        trials = []
        for trial in range(args.trials):
            problem.initialize(_stream(args.seed, example, 1, trial), std=args.std)
            solver.restart()
            arrays, seconds = run_trial(solver, error, lower_steps, args.epochs, args.record_every,
                                        extras, on_record=lambda _: bar.add(1))
            arrays["ts"] = np.array(seconds)
            trials.append(arrays)
        yield lower_steps, {name: np.stack([t[name] for t in trials], axis=-1) for name in trials[0]}


def summarize(arrays: dict[str, np.ndarray], epochs: int) -> dict[str, Any]:
    """initial/final err (mean, sd over trials) and seconds per 1000 iterations."""
    errs, ts = arrays["errs"], arrays["ts"] * 1000.0 / epochs
    return {"trials": int(errs.shape[1]), "epochs": epochs,
            "initial_err_mean": float(errs[0].mean()), "initial_err_sd": float(errs[0].std()),
            "final_err_mean": float(errs[-1].mean()), "final_err_sd": float(errs[-1].std()),
            "final_err_median": float(np.median(errs[-1])),
            "seconds_per_1000_iterations": float(ts.mean()),
            "seconds_per_1000_iterations_sd": float(ts.std())}


def plot_example(example: str, curves: dict[tuple[str, int], np.ndarray], record_every: int,
                 path: Path) -> None:
    """Fig. 1/2 style: err against iterations, one panel per method (rows) and T (columns)."""
    methods = [m for m in METHODS if any(k[0] == m for k in curves)]
    ts = sorted({k[1] for k in curves})
    fig = experiment.new_figure(figsize=(3.2 * len(ts), 2.6 * len(methods)))
    axes = fig.subplots(len(methods), len(ts), squeeze=False, sharex=True)
    for i, method in enumerate(methods):
        for j, t in enumerate(ts):
            ax = axes[i][j]
            errs = curves.get((method, t))
            if errs is None:
                ax.set_axis_off()
                continue
            x = np.arange(errs.shape[0]) * record_every
            ax.plot(x, errs, color="gold", alpha=0.5, linewidth=0.7)
            ax.plot(x, errs.mean(axis=1), color="tab:blue", linewidth=2.0)
            ax.set_yscale("log")
            ax.set_title(f"{METHOD_LABELS[method]}, T={t}", fontsize=9)
            if j == 0:
                ax.set_ylabel("err")
            if i == len(methods) - 1:
                ax.set_xlabel("upper-level iteration")
    fig.suptitle(f"{example}: distance to the solution ({errs.shape[1]} trials, mean bold)")
    fig.tight_layout()
    experiment.save_figure_atomic(fig, path, dpi=110)


def _settings_kwargs(args: argparse.Namespace) -> dict[str, float]:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}


def _expand(values: list[str], allowed: tuple, flag: str) -> list:
    if "all" in values:
        return list(allowed)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise experiment.ExperimentError(f"{flag}: unknown value(s) {bad}; choose from {list(allowed)} or all")
    return list(dict.fromkeys(values))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m synthetic.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--example", nargs="+", default=["all"],
                        help=f"examples ({', '.join(ALL_EXAMPLES)}) or 'all' = {' '.join(EXAMPLES)}")
    parser.add_argument("--method", nargs="+", default=["all"],
                        help=f"methods ({', '.join(METHODS)}) or 'all'")
    parser.add_argument("--lower-steps", nargs="+", type=int, default=[1, 5, 10], metavar="T",
                        help="inner iterations T per upper iteration")
    parser.add_argument("--epochs", type=int, default=40001, help="upper iterations per trial")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--record-every", type=int, default=10, help="the original's nstep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=10, help="p = q = r, the size of each block")
    parser.add_argument("--std", type=float, default=1.0, help="init spread (1: Uniform[-5, 5])")
    for field in dataclasses.fields(Settings):
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=float,
                            default=field.default)
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=True,
                        help="compile the iteration with XLA (same results, faster)")
    parser.add_argument("--no-check-finite", action="store_true",
                        help="skip the per-iteration NaN/Inf check (slightly faster)")
    parser.add_argument("--out", default=None, help="output directory (default runs/synthetic)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished (example, method, T) parts in --out")
    parser.add_argument("--quiet", action="store_true")
    return parser


def _part_path(out: Path, example: str, method: str, t: int) -> Path:
    return out / "parts" / f"{example}_{method}_T{t}.npz"


def _part_key(args: argparse.Namespace) -> str:
    """What a saved part must have been run with to be reused by --resume."""
    keys = ("epochs", "trials", "record_every", "seed", "dim", "std", *(_settings_kwargs(args)))
    return repr({k: getattr(args, k) for k in keys})


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    examples = _expand(args.example, ALL_EXAMPLES, "--example")
    methods = _expand(args.method, METHODS, "--method")
    for name in ("epochs", "trials", "record_every", "dim"):
        if getattr(args, name) < 1:
            raise experiment.ExperimentError(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.lower_steps) < 1:
        raise experiment.ExperimentError("--lower-steps must be >= 1")
    out = experiment.resolve_out_dir(args, "synthetic")
    experiment.seed_everything(args.seed)
    from synthetic.problems import make_problem

    start = time.perf_counter()
    metrics, published, curves = {}, {}, {}
    for example in examples:
        problem = make_problem(example, rng=_stream(args.seed, example, 0), p=args.dim,
                               q=args.dim, r=args.dim)
        errs_by_setting = {}
        for method in methods:
            parts = {t: _load_part(out, example, method, t, args) if args.resume else None
                     for t in args.lower_steps}
            todo = [t for t, arrays in parts.items() if arrays is None]
            if todo:
                for t, arrays in run_method(example, method, args, problem, todo):
                    experiment.save_npz_atomic(_part_path(out, example, method, t),
                                               part_key=np.array(_part_key(args)), **arrays)
                    parts[t] = arrays
            for t in args.lower_steps:
                key, arrays = f"{example}/{method}/T{t}", parts[t]
                metrics[key] = summarize(arrays, args.epochs)
                published[key] = paper.published_dict(table="Table 2", experiment="synthetic",
                                                      method=method, example=example, lower_steps=t)
                curves.update({f"{example}_{method}_T{t}_{n}": a for n, a in arrays.items()})
                errs_by_setting[(method, t)] = arrays["errs"]
                if not args.quiet:
                    m = metrics[key]
                    print(f"{key}: err {m['initial_err_mean']:.3g} -> {m['final_err_mean']:.3g} "
                          f"± {m['final_err_sd']:.2g}; {m['seconds_per_1000_iterations']:.3f} s/1000 it.")
        plot_example(example, errs_by_setting, args.record_every, out / f"err_{example}.png")
    experiment.save_npz_atomic(out / "curves.npz", **curves)
    return experiment.write_result(out, experiment="synthetic", method=",".join(methods),
                                   config=vars(args), metrics=metrics, published=published,
                                   wall_time_s=time.perf_counter() - start)


def _load_part(out: Path, example: str, method: str, t: int, args) -> dict[str, np.ndarray] | None:
    path = _part_path(out, example, method, t)
    if not path.is_file():
        return None
    with np.load(path) as data:
        if str(data["part_key"]) != _part_key(args):
            return None
        return {k: data[k] for k in data.files if k != "part_key"}


if __name__ == "__main__":
    experiment.run_main(main)
