"""Synthetic bilevel problems: the runner behind the paper's Fig. 1, Fig. 2 and Table 2.

    python -m synthetic.run --example SMD20 --method penalty --lower-steps 10 \\
        --epochs 40001 --trials 20 --seed 0 --out runs/smd20

``--example``, ``--method`` and ``--lower-steps`` take several values (or ``all``). The
defaults are the original driver's (``test_synthetic.py``, docs/original.md §2.4): examples
SMD20, SMD21, SMD24, SMD23; methods GD, RMD, ApproxGrad, Penalty; T = 1, 5, 10; 40,001
upper iterations; 20 trials; err, f and g recorded every 10 iterations; lr_u 1e-3,
lr_v 1e-4, lr_p 1e-4; Penalty rho_0 1, lambda_0 10, eps_0 1, c_rho 1.1; ApproxGrad sigma
1e-6 with T + 1 linear-system steps. They are data, in `penalty_tf.paper.defaults.synthetic`;
every method registered in `penalty_tf.solvers` that has a row there is a ``--method``, and
every setting of its config in that row is a flag. (The paper's Table 2 used 10,000
iterations and 10 trials: ``--epochs 10000 --trials 10``.)

Writes to ``--out``: ``result.json`` (per example, method and T: initial and final err
over trials, seconds per 1000 iterations, and the paper's Table 2 time), ``curves.npz``
(arrays named like the original's files: ``{example}_{method}_T{T}_errs`` with shape
(records, trials), likewise ``_fs``, ``_gs``, ``_ts`` (seconds per trial) and for Penalty
``_ftilde`` and ``_rhos``), and one Fig. 1/2-style plot per example
(``err_{example}.png``: one panel per method and T, trials faint, their mean bold).
Every (example, method, T) saves a checkpoint after each trial under
``checkpoints/{example}_{method}_T{T}/`` (`penalty_tf.checkpoints.RunCheckpoint`, its curves
as tracked variables); ``--resume`` continues from there (the result of an uninterrupted
run, timings aside) and refuses checkpoints written with other settings.

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
import functools
import shutil
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import tensorflow as tf

from penalty_tf import solvers
from penalty_tf.checkpoints import RunCheckpoint
from penalty_tf.paper import experiment, published as paper
from penalty_tf.paper import settings as flag_settings
from penalty_tf.paper.defaults import synthetic as original
from synthetic.problems import ALL_EXAMPLES, EXAMPLES, SyntheticProblem, make_problem

EXPERIMENT = original.EXPERIMENT
METHOD_LABELS = {"gd": "GD", "rmd": "RMD", "approxgrad": "ApproxGrad", "penalty": "Penalty", "aid": "AID",
                 "bome": "BOME", "v-pbgd": "V-PBGD", "g-pbgd": "G-PBGD", "f2sa": "F2SA", "soba": "SOBA"}
#: The recorded curves besides err, and the solver output each records (if the solver has it).
RECORDED = {"fs": "f", "gs": "g", "ftilde": "h_lower", "rhos": "rho"}
#: Flags a resume may change: what a run prints and where, the NaN check, the test hook.
#: (Which settings run does not matter: each has its own checkpoint.)
FREE_ON_RESUME = ("out", "resume", "quiet", "no_check_finite", "stop_after", "deterministic")


# ------------------------------------------------------------------ solver settings
def methods() -> tuple[str, ...]:
    """The ``--method`` values: the solvers registered in `penalty_tf.solvers` that have a
    row in `penalty_tf.paper.defaults.synthetic`, in the table's order (``--method all``)."""
    return tuple(m for e, m in original.DEFAULTS if e == EXPERIMENT and m in solvers.names())


def paper_methods() -> tuple[str, ...]:
    """The original's four methods (``--method paper``, the default): `methods` without the
    solvers the paper did not have (``penalty_tf.paper.defaults.synthetic.EXTENSIONS``)."""
    return tuple(m for m in methods() if m not in original.EXTENSIONS)


def solver_settings(method: str) -> dict[str, Any]:
    """The original's value of each field of ``method``'s config that the synthetic runs set."""
    fields = {f.name for f in dataclasses.fields(solvers.config_class(method))}
    return {k: v for k, v in original.DEFAULTS[(EXPERIMENT, method)].items() if k in fields}


def synthetic_penalty(lr_u: float, lr_v: float, **schedule: float) -> solvers.PenaltyConfig:
    """Penalty's config with the synthetic schedule (`PenaltySchedule.synthetic`: nu_0 = 0;
    lambda, eps and the learning rates divided by c_rho when the tolerance test passes)."""
    variant = solvers.PenaltySchedule.synthetic(**schedule)
    return solvers.PenaltyConfig(lr_u=lr_u, lr_v=lr_v, **dataclasses.asdict(variant))


#: Methods whose synthetic config is a variant, not their config class of the settings.
VARIANTS: dict[str, Callable[..., Any]] = {"penalty": synthetic_penalty}


def solver_config(method: str, flags: Optional[Mapping[str, Any]] = None) -> Any:
    """``method``'s typed config in the synthetic runs: each setting from ``flags`` (e.g.
    ``vars(args)``), the original's where ``flags`` has None or nothing."""
    flags = flags or {}
    settings = {name: default if flags.get(name) is None else flags[name]
                for name, default in solver_settings(method).items()}
    build = VARIANTS.get(method, functools.partial(solvers.make_config, method))
    return build(**settings)


def add_solver_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting of `solver_settings` (``--lr-u``, ``--rho0`` ...), shared by the
    methods that have it and typed as its default: the original's value (None where the
    methods' originals differ: each method then takes its own)."""
    group = parser.add_argument_group("solver settings (the original's by default)")
    values: dict[str, list] = {}
    for method in methods():
        for name, value in solver_settings(method).items():
            values.setdefault(name, []).append((method, value))
    for name, pairs in values.items():
        first = pairs[0][1]
        default = first if all(v == first for _, v in pairs) else None
        kind = {"action": argparse.BooleanOptionalAction} if isinstance(first, bool) else {"type": type(first)}
        if name in flag_settings.SOLVER_CHOICES:
            kind["choices"] = flag_settings.SOLVER_CHOICES[name]
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default,
                           help=", ".join(METHOD_LABELS.get(m, m) for m, _ in pairs), **kind)


# ------------------------------------------------------------------------ one trial
def _stream(seed: int, example: str, *extra: int) -> np.random.Generator:
    """A generator seeded by (seed, example, extra...): independent, reproducible streams."""
    return np.random.default_rng([seed, zlib.crc32(example.encode()), *extra])


def recorded(solver: solvers.BilevelSolver) -> tuple[str, ...]:
    """The curves recorded for ``solver``: err, then the `RECORDED` outputs it has."""
    return ("errs",) + tuple(name for name, key in RECORDED.items() if key in solver.outputs)


def run_trial(solver, error: Callable[[], Any], names: tuple[str, ...], lower_steps: int,
              epochs: int, record_every: int,
              on_record: Callable[[int], None] | None = None) -> tuple[dict[str, np.ndarray], float]:
    """Run ``epochs`` upper iterations; record the curves ``names`` every ``record_every``.

    As the original, epoch e is recorded after its update when ``e % record_every == 0``,
    and the wall time includes the err evaluations. The iterations between two records run
    as one graph call (`BilevelSolver.steps`), which gives the same iterates as one call per
    iteration without the per-call host overhead. Returns the arrays and the seconds.
    """
    records: dict[str, list] = {name: [] for name in names}
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
                records[name].append(out[RECORDED[name]])
            if on_record is not None:
                on_record(next_record)
    seconds = time.perf_counter() - start
    return {name: np.array([float(x) for x in values]) for name, values in records.items()}, seconds


# ------------------------------------------------------------ settings, checkpoints
class Curves(tf.Module):
    """The curves of one (example, method, T) as tracked float64 variables, so that its
    `RunCheckpoint` saves them: ``(records, trials)`` per recorded name, ``ts`` (trials,)."""

    def __init__(self, names: tuple[str, ...], records: int, trials: int):
        super().__init__(name="curves")
        shapes = {**{name: [records, trials] for name in names}, "ts": [trials]}
        self.arrays = {name: tf.Variable(tf.zeros(shape, tf.float64), trainable=False, name=name)
                       for name, shape in shapes.items()}

    def put(self, trial: int, arrays: Mapping[str, np.ndarray], seconds: float) -> None:
        """Column ``trial`` of every curve, and its seconds."""
        for name, values in arrays.items():
            self.arrays[name][:, trial].assign(values)
        self.arrays["ts"][trial].assign(seconds)

    def numpy(self) -> dict[str, np.ndarray]:
        return {name: variable.numpy() for name, variable in self.arrays.items()}


class Stopped(Exception):
    """The hidden ``--stop-after N`` ended the run after N trials (tests: a kill at a known point)."""


class MethodRuns:
    """One (example, method) on its problem: one solver for every T and trial (T is a
    tensor argument: no recompilation), compiled before the first timed trial; each
    trial re-initialises u, v and the solver, and ends with a checkpoint."""

    def __init__(self, example: str, method: str, problem: SyntheticProblem,
                 args: argparse.Namespace, out: Path):
        self.example, self.method, self.problem, self.args, self.out = example, method, problem, args, out
        self.config = solver_config(method, vars(args))
        self.solver = solvers.make(method, problem.bilevel(), self.config, jit_compile=args.xla,
                                   check_finite=not args.no_check_finite)
        self.error = tf.function(problem.error, jit_compile=args.xla)
        self.names = recorded(self.solver)
        self.records = (args.epochs - 1) // args.record_every + 1
        self.compiled = False

    def checkpoint(self, lower_steps: int, curves: Curves) -> RunCheckpoint:
        """The checkpoint of T = ``lower_steps``: it must match the run's flags (but
        `FREE_ON_RESUME` and the solver flags) and this method's typed config."""
        config = dict(vars(self.args), example=self.example, method=self.method,
                      lower_steps=lower_steps, solver=self.config)
        ignore = FREE_ON_RESUME + tuple(name for m in methods() for name in solver_settings(m))
        return RunCheckpoint(self.out / "checkpoints" / f"{self.example}_{self.method}_T{lower_steps}",
                             config, ignore=ignore, curves=curves)

    def curves(self, lower_steps: int, budget: list) -> dict[str, np.ndarray]:
        """All trials of T = ``lower_steps`` (continued from its checkpoint with --resume),
        shaped (records, trials) like the original's files."""
        curves = Curves(self.names, self.records, self.args.trials)
        checkpoint = self.checkpoint(lower_steps, curves)
        done = self._restore(checkpoint)
        if done < self.args.trials:
            self._compile()
            self._run_trials(lower_steps, curves, checkpoint, done, budget)
        return curves.numpy()

    def _restore(self, checkpoint: RunCheckpoint) -> int:
        """Trials already done: the checkpoint's with --resume, else 0 (and its files gone)."""
        if not self.args.resume:
            shutil.rmtree(checkpoint.directory, ignore_errors=True)
            return 0
        state = experiment.restore_checkpoint(checkpoint)
        return 0 if state is None else state["trials"]

    def _compile(self) -> None:
        """Trace (and compile) the iteration and err before timing (the original's TF1
        graphs had no compile step); `restart` before every trial undoes the step."""
        if not self.compiled:
            self.solver.steps(None, 1, 1)
            self.error()
            self.compiled = True

    def _run_trials(self, lower_steps: int, curves: Curves, checkpoint: RunCheckpoint,
                    first: int, budget: list) -> None:
        args = self.args
        if not args.quiet:
            print(f"{self.example}/{self.method}/T{lower_steps}: {args.trials} trials x "
                  f"{args.epochs} iterations" + (f" (resumed after {first})" if first else ""))
        bar = experiment.progress((args.trials - first) * self.records, quiet=args.quiet,
                                  unit_name="record")
        for trial in range(first, args.trials):
            self.problem.initialize(_stream(args.seed, self.example, 1, trial), std=args.std)
            self.solver.restart()
            arrays, seconds = run_trial(self.solver, self.error, self.names, lower_steps,
                                        args.epochs, args.record_every, on_record=lambda _: bar.add(1))
            curves.put(trial, arrays, seconds)
            checkpoint.save(trials=trial + 1)
            _spend(budget)


def _spend(budget: list) -> None:
    """Count one trial against ``--stop-after`` (``budget = [trials left]``, or ``[None]``)."""
    if budget[0] is not None:
        budget[0] -= 1
        if budget[0] <= 0:
            raise Stopped()


# ---------------------------------------------------------------------------- report
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
    rows = [m for m in methods() if any(k[0] == m for k in curves)]
    ts = sorted({k[1] for k in curves})
    fig = experiment.new_figure(figsize=(3.2 * len(ts), 2.6 * len(rows)))
    axes = fig.subplots(len(rows), len(ts), squeeze=False, sharex=True)
    for i, method in enumerate(rows):
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
            ax.set_title(f"{METHOD_LABELS.get(method, method)}, T={t}", fontsize=9)
            if j == 0:
                ax.set_ylabel("err")
            if i == len(rows) - 1:
                ax.set_xlabel("upper-level iteration")
    fig.suptitle(f"{example}: distance to the solution ({errs.shape[1]} trials, mean bold)")
    fig.tight_layout()
    experiment.save_figure_atomic(fig, path, dpi=110)


# ----------------------------------------------------------------------------- flags
def _expand(values: list[str], allowed: tuple, flag: str, named: Optional[Mapping[str, tuple]] = None) -> list:
    """``values`` checked against ``allowed``; ``all`` means every allowed value and a key
    of ``named`` its group (``paper``: the original's methods)."""
    if "all" in values:
        return list(allowed)
    for name, group in (named or {}).items():
        if name in values:
            values = [v for v in values if v != name] + list(group)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise experiment.ExperimentError(f"{flag}: unknown value(s) {bad}; choose from {list(allowed)}, "
                                         + ", ".join([*(named or {}), "all"]))
    return list(dict.fromkeys(values))


def build_parser() -> argparse.ArgumentParser:
    run = original.RUN
    parser = argparse.ArgumentParser(prog="python -m synthetic.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--example", nargs="+", default=["all"],
                        help=f"examples ({', '.join(ALL_EXAMPLES)}) or 'all' = {' '.join(EXAMPLES)}")
    parser.add_argument("--method", nargs="+", default=["paper"],
                        help=f"methods ({', '.join(methods())}), 'paper' = {' '.join(paper_methods())} "
                             "(the original's), or 'all'")
    parser.add_argument("--lower-steps", nargs="+", type=int, default=list(run["lower_steps"]),
                        metavar="T", help="inner iterations T per upper iteration")
    parser.add_argument("--epochs", type=int, default=run["epochs"], help="upper iterations per trial")
    parser.add_argument("--trials", type=int, default=run["trials"])
    parser.add_argument("--record-every", type=int, default=run["record_every"], help="the original's nstep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=run["dim"], help="p = q = r, the size of each block")
    parser.add_argument("--std", type=float, default=run["std"], help="init spread (1: Uniform[-5, 5])")
    add_solver_flags(parser)
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=True,
                        help="compile the iteration with XLA (same results, faster)")
    parser.add_argument("--no-check-finite", action="store_true",
                        help="skip the per-iteration NaN/Inf check (slightly faster)")
    parser.add_argument("--out", default=None, help="output directory (default runs/synthetic)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoints in --out; every setting must be as before, "
                             "--epochs and --trials included (another length is refused, naming both values)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--deterministic", action="store_true", help=experiment.DETERMINISTIC_HELP)
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str], list[str]]:
    """The flags, checked (ranges; err recorded at least twice; the chosen methods' configs
    built once, so that a value a config refuses is a clean error); and the examples and
    methods they select."""
    args = build_parser().parse_args(argv)
    examples = _expand(args.example, ALL_EXAMPLES, "--example")
    chosen = _expand(args.method, methods(), "--method", {"paper": paper_methods()})
    check = flag_settings.check_range
    for name in ("epochs", "trials", "dim", "lower_steps"):
        check(name, getattr(args, name), minimum=1)
    check("seed", args.seed, **flag_settings.SEED_RANGE)
    check("std", args.std, above=0)
    check("stop_after", args.stop_after, minimum=0)
    check("record_every", args.record_every, minimum=1)
    if args.epochs > 1 and args.record_every >= args.epochs:
        raise experiment.ExperimentError(
            f"--record-every {args.record_every} must be smaller than --epochs {args.epochs}: err is recorded "
            "after iterations 0, N, 2N, ... below --epochs, so only the initial err would be recorded "
            "(and reported as the final one)")
    names = {name for method in chosen for name in solver_settings(method)}
    for name in sorted(names):
        check(name, getattr(args, name))
    if "penalty" in chosen:
        check("c_rho", args.c_rho, above=0)       # the synthetic schedule divides by it
    for method in chosen:
        with flag_settings.config_errors(solver_settings(method), f"the settings of --method {method}"):
            solver_config(method, vars(args))
    return args, examples, chosen


# ------------------------------------------------------------------------------ main
def run_example(example: str, chosen: list[str], args: argparse.Namespace, out: Path,
                budget: list) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Every method and T on one example (one problem: the same A for all); plots it."""
    problem = make_problem(example, rng=_stream(args.seed, example, 0), p=args.dim, q=args.dim, r=args.dim)
    results = {}
    for method in chosen:
        runs = MethodRuns(example, method, problem, args, out)
        for t in args.lower_steps:
            results[(method, t)] = runs.curves(t, budget)
            if not args.quiet:
                m = summarize(results[(method, t)], args.epochs)
                print(f"{example}/{method}/T{t}: err {m['initial_err_mean']:.3g} -> {m['final_err_mean']:.3g} "
                      f"± {m['final_err_sd']:.2g}; {m['seconds_per_1000_iterations']:.3f} s/1000 it.")
    plot_example(example, {k: arrays["errs"] for k, arrays in results.items()}, args.record_every,
                 out / f"err_{example}.png")
    return results


def main(argv: list[str] | None = None) -> dict:
    args, examples, chosen = parse_args(argv)
    out = experiment.resolve_out_dir(args, EXPERIMENT)
    experiment.seed_everything(args.seed, deterministic=args.deterministic)
    start = time.perf_counter()
    metrics, published, curves = {}, {}, {}
    budget = [args.stop_after]
    try:
        results = {example: run_example(example, chosen, args, out, budget) for example in examples}
    except Stopped:
        return {}
    for example, by_setting in results.items():
        for (method, t), arrays in by_setting.items():
            key = f"{example}/{method}/T{t}"
            metrics[key] = summarize(arrays, args.epochs)
            published[key] = paper.published_dict(table="Table 2", experiment=EXPERIMENT,
                                                  method=method, example=example, lower_steps=t)
            curves.update({f"{example}_{method}_T{t}_{n}": a for n, a in arrays.items()})
    experiment.save_npz_atomic(out / "curves.npz", **curves)
    return experiment.write_result(out, experiment=EXPERIMENT, method=",".join(chosen),
                                   config=vars(args), metrics=metrics, published=published,
                                   wall_time_s=time.perf_counter() - start)


if __name__ == "__main__":
    experiment.run_main(main)
