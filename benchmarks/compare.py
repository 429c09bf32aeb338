"""Every solver on the same bilevel problems: quality against wall time and upper iterations.

    python -m benchmarks.compare --problems smd20 distillation --methods penalty approxgrad aid \\
        --seeds 0 1 2 --data-dir ../shared/data --out results/compare
    python -m benchmarks.compare --quick --out /tmp/compare        # the reduced CI setting

For every (problem, method, seed) a fresh process (``--worker``) builds the problem
(`benchmarks.problems.SPECS`), makes the solver with ``penalty_tf.solvers.make`` and the
problem's settings (``--set METHOD.FIELD=VALUE`` overrides one), and runs the problem's
number of upper iterations at its T, measuring the quality every ``eval_every`` iterations
(the time spent measuring, and the first iteration, which traces and compiles the step, are
not counted), with it the problem's own numbers if it has any (``Instance.extras``), and,
with ``--check-every N``, the cosine between
the solver's u-direction and the exact hypergradient
(`penalty_tf.diagnostics.check_hypergradient`). The process reports its curves and its peak
resident memory (VmHWM, so one run's memory does not leak into the next).

Writes to ``--out``: ``result.json`` (config, and per problem and method the curves of every
seed and the summary), ``table.md`` (final quality, time and iterations to reach the
problem's target, seconds per upper iteration, peak memory, the problem's reported extras such as
the corrupted points hyper-cleaning kept: medians over seeds) and one
``{problem}.png`` per problem (quality against seconds and against iterations).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from benchmarks.problems import SPECS, Spec

QUICK_PROBLEMS = ("smd20", "distillation")
QUICK_METHODS = ("penalty", "approxgrad", "aid")


# ------------------------------------------------------------------------ one run
def peak_memory_mib() -> float:
    """This process's peak resident set size (VmHWM), MiB; NaN where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def parse_sets(items: list[str], flag: str = "--set") -> dict[str, dict[str, Any]]:
    """``["penalty.rho0=1", ...]`` -> ``{"penalty": {"rho0": 1.0}}`` (values parsed as JSON,
    else kept as strings)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        method, dot, field = key.partition(".")
        if not (sep and dot and method and field):
            raise SystemExit(f"{flag} takes NAME.FIELD=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        out.setdefault(method, {})[field] = value
    return out


def run_one(spec: Spec, method: str, seed: int, iterations: int, eval_every: int, check_every: int,
            sets: dict[str, Any], data_dir: Optional[str], options: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """One solver on one problem and seed: its curves (iteration, seconds, quality [, cosine]
    [, extras: the problem's `Instance.extras` dict at each measurement])."""
    import keras

    from penalty_tf import diagnostics, solvers

    keras.utils.set_random_seed(seed)
    instance = spec.build(seed, data_dir, **(options or {}))
    fields = {f.name for f in dataclasses.fields(solvers.config_class(method))}
    settings = {**spec.settings(method, fields), **sets}
    solver = solvers.make(method, instance.problem, **settings)
    curve = {"iteration": [0], "seconds": [0.0], "quality": [instance.quality()], "cosine": []}
    if instance.extras is not None:           # the problem's own numbers at each measurement
        curve["extras"] = [instance.extras()]
    # RMD's direction depends on the lower steps of an iteration: there is nothing to check;
    # nor where the lower problem has no unique minimiser (hyper-cleaning)
    checkable = instance.checkable and type(solver).upper_direction is not solvers.BilevelSolver.upper_direction
    solver.step(instance.next_batch(), spec.lower_steps)     # iteration 1 traces: not timed
    seconds = 0.0
    for k in range(2, iterations + 1):
        batch = instance.next_batch()
        start = time.perf_counter()
        solver.step(batch, spec.lower_steps)
        seconds += time.perf_counter() - start
        if k % eval_every == 0 or k == iterations:
            curve["iteration"].append(k)
            curve["seconds"].append(seconds)
            curve["quality"].append(instance.quality())
            if instance.extras is not None:
                curve["extras"].append(instance.extras())
        if check_every and checkable and (k % check_every == 0 or k == iterations):
            check = diagnostics.check_hypergradient(solver, instance.check_batch)
            curve["cosine"].append([k, check.cosine, check.relative_error])
    return {"problem": spec.name, "method": method, "seed": seed, "settings": settings, "options": options or {},
            "curve": curve, "seconds_per_iteration": seconds / max(iterations - 1, 1),
            "peak_memory_mib": peak_memory_mib()}


def _extras_text(run: dict[str, Any]) -> str:
    """The last measurement's `Instance.extras` as ``" name value ..."`` ("" without extras)."""
    extras = run["curve"].get("extras") or [{}]
    return "".join(f" {k} {v:.4g}" if isinstance(v, (int, float)) else f" {k} {v}" for k, v in extras[-1].items())


def worker(job: dict[str, Any]) -> None:
    """``--worker JSON``: `run_one` in this process; prints its result as one JSON line."""
    spec = SPECS[job["problem"]]
    result = run_one(spec, job["method"], job["seed"], job["iterations"], job["eval_every"],
                     job["check_every"], job["sets"], job["data_dir"], job.get("options"))
    print("RESULT " + json.dumps(result), flush=True)


def run_in_process(job: dict[str, Any]) -> dict[str, Any]:
    """`worker` in a fresh Python process (its own peak memory, no state from other runs)."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.compare", "--worker", json.dumps(job)],
                          capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {**{k: job[k] for k in ("problem", "method", "seed")}, "error": tail}
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------------ summary
def time_to_target(spec: Spec, curve: dict[str, list]) -> tuple[Optional[float], Optional[int]]:
    """Seconds and iterations at the first measurement that reaches ``spec.target``."""
    for seconds, iteration, quality in zip(curve["seconds"], curve["iteration"], curve["quality"]):
        if spec.reached(quality):
            return seconds, iteration
    return None, None


def _median(values: list[Optional[float]]) -> Optional[float]:
    """Median over seeds; None when any seed has none (it did not reach the target)."""
    if not values or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None
    return float(statistics.median(values))


def summarise(spec: Spec, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Final quality (median, min, max), time and iterations to target, s / iteration, memory."""
    ok = [r for r in runs if "error" not in r]
    finals = [r["curve"]["quality"][-1] for r in ok]
    reached = [time_to_target(spec, r["curve"]) for r in ok]
    cosines = [c[1] for r in ok for c in r["curve"].get("cosine", [])]
    return {"seeds": len(runs), "failed": [r.get("error") for r in runs if "error" in r],
            "final_quality_median": _median(finals) if finals else None,
            "final_quality_min": min(finals) if finals else None, "final_quality_max": max(finals) if finals else None,
            "seconds_to_target_median": _median([s for s, _ in reached]) if ok else None,
            "iterations_to_target_median": _median([i for _, i in reached]) if ok else None,
            "seeds_reaching_target": sum(s is not None for s, _ in reached),
            "seconds_per_iteration_median": _median([r["seconds_per_iteration"] for r in ok]) if ok else None,
            "peak_memory_mib_median": _median([r["peak_memory_mib"] for r in ok]) if ok else None,
            "cosine_median": float(statistics.median(cosines)) if cosines else None,
            "extras_median": {k: _median([r["curve"]["extras"][-1][k] for r in ok]) if ok else None
                              for k in spec.reported_extras}}


def _cell(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _extras_cell(extras: dict[str, Any]) -> str:
    """``"name value, ..."`` of a summary's median final extras ("—" without any)."""
    return ", ".join(f"{k} {_cell(v, '.4g')}" for k, v in extras.items()) or "—"


def table(results: dict[str, dict[str, Any]]) -> str:
    """The markdown table: one row per (problem, method)."""
    rows = ["| problem | method | final quality (median [min, max]) | target | reached (seeds) | "
            "s to target | iterations to target | s / iteration | peak MiB | cosine | problem's numbers |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, by_method in results.items():
        spec = SPECS[name]
        for method, entry in by_method.items():
            s = entry["summary"]
            quality = (f"{_cell(s['final_quality_median'], '.4g')} [{_cell(s['final_quality_min'], '.4g')}, "
                       f"{_cell(s['final_quality_max'], '.4g')}]")
            rows.append(f"| {name} | {method} | {quality} | {spec.metric} {'≥' if spec.higher_is_better else '≤'} "
                        f"{spec.target:g} | {s['seeds_reaching_target']}/{s['seeds']} | "
                        f"{_cell(s['seconds_to_target_median'], '.3g')} | "
                        f"{_cell(s['iterations_to_target_median'], '.0f')} | "
                        f"{_cell(s['seconds_per_iteration_median'], '.3g')} | "
                        f"{_cell(s['peak_memory_mib_median'], '.0f')} | {_cell(s['cosine_median'], '.2f')} | "
                        f"{_extras_cell(s.get('extras_median') or {})} |")
    return "\n".join(rows) + "\n"


def plot(name: str, by_method: dict[str, Any], out: Path) -> Path:
    """Quality against seconds (left) and iterations (right), every seed, one colour per method."""
    from penalty_tf.paper import experiment

    fig = experiment.new_figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    for i, (method, entry) in enumerate(by_method.items()):
        colour = f"C{i % 10}"
        for j, run in enumerate(r for r in entry["runs"] if "error" not in r):
            c = run["curve"]
            label = method if j == 0 else None
            left.plot(c["seconds"], c["quality"], color=colour, label=label, lw=1)
            right.plot(c["iteration"], c["quality"], color=colour, label=label, lw=1)
    spec = SPECS[name]
    for ax, xlabel in ((left, "seconds (stepping only)"), (right, "upper iterations")):
        ax.axhline(spec.target, color="grey", ls=":", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(spec.metric)
        if not spec.higher_is_better:
            ax.set_yscale("log")
    right.legend(fontsize=8)
    fig.suptitle(name)
    return experiment.save_figure_atomic(fig, out / f"{name}.png")


# ------------------------------------------------------------------------ CLI
def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    from penalty_tf import solvers

    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", choices=sorted(SPECS), metavar="PROBLEM",
                        help=f"problems ({', '.join(SPECS)}); default: all ({', '.join(QUICK_PROBLEMS)} with --quick)")
    parser.add_argument("--methods", nargs="+", choices=solvers.names(), metavar="METHOD",
                        help=f"solvers ({', '.join(solvers.names())}); default: all "
                             f"({', '.join(QUICK_METHODS)} with --quick)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (0 with --quick)")
    parser.add_argument("--iterations", type=int, default=None, help="upper iterations (default: the problem's)")
    parser.add_argument("--check-every", type=int, default=0,
                        help="check the u-direction against the exact hypergradient every N iterations (0: never)")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.FIELD=VALUE",
                        help="a config field of one method, e.g. penalty.rho0=1 (repeatable)")
    parser.add_argument("--option", action="append", default=[], metavar="PROBLEM.NAME=VALUE",
                        help="a setting of one problem, e.g. distillation.weight_decay=0.1 (repeatable)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="upper iterations between quality measurements (default: the problem's)")
    parser.add_argument("--quick", action="store_true", help="the reduced setting CI runs")
    parser.add_argument("--data-dir", default=None, help="folder with mnist.npz (default: the usual lookup)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    args.problems = args.problems or list(QUICK_PROBLEMS if args.quick else SPECS)
    args.methods = args.methods or list(QUICK_METHODS if args.quick else solvers.names())
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    if args.iterations is not None and args.iterations < 2:
        parser.error("--iterations must be >= 2")
    if args.check_every < 0:
        parser.error("--check-every must be >= 0")
    if args.eval_every is not None and args.eval_every < 1:
        parser.error("--eval-every must be >= 1")
    unknown = sorted(set(parse_sets(args.set)) - set(args.methods))
    if unknown:
        parser.error(f"--set names methods that do not run: {unknown}")
    unknown = sorted(set(parse_sets(args.option, "--option")) - set(args.problems))
    if unknown:
        parser.error(f"--option names problems that do not run: {unknown}")
    return args


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    from penalty_tf import files
    from penalty_tf.paper import experiment

    args = parse_args(argv)
    out = experiment.check_out_dir(args.out)
    sets, options = parse_sets(args.set), parse_sets(args.option, "--option")
    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for name in args.problems:
        spec = SPECS[name]
        iterations = args.iterations or (spec.quick_iterations if args.quick else spec.iterations)
        eval_every = args.eval_every or (max(iterations // 4, 1) if args.quick else spec.eval_every)
        results[name] = {}
        for method in args.methods:
            runs = []
            for seed in args.seeds:
                job = {"problem": name, "method": method, "seed": seed, "iterations": iterations,
                       "eval_every": eval_every, "check_every": args.check_every,
                       "sets": sets.get(method, {}), "data_dir": args.data_dir, "options": options.get(name, {})}
                runs.append(run_in_process(job))
                print(f"{name}/{method}/seed {seed}: " + (runs[-1].get("error") or
                      f"{spec.metric} {runs[-1]['curve']['quality'][-1]:.4g}{_extras_text(runs[-1])}"), flush=True)
            results[name][method] = {"runs": runs, "summary": summarise(spec, runs)}
        plot(name, results[name], out)
    files.write_text_atomic(out / "table.md", table(results))
    summary = {name: {m: e["summary"] for m, e in by.items()} for name, by in results.items()}
    experiment.write_result(out, experiment="benchmarks.compare", method="+".join(args.methods),
                            config={k: v for k, v in vars(args).items()},
                            metrics={"summary": summary, "runs": results}, published={},
                            wall_time_s=time.perf_counter() - start)
    print(table(results))
    return summary


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        from penalty_tf.paper import experiment
        experiment.run_main(main)
