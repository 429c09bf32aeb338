"""Table 2 analogue: speed of GD, RMD, ApproxGrad and Penalty, and memory of RMD vs Penalty.

    python -m benchmarks.synthetic_timing --out runs/benchmarks

**Timing.** Seconds per 1000 upper-level iterations of every method on every SMD example
(``--examples``, default SMD20 SMD21 SMD24 SMD23) for T = ``--lower-steps`` (1 5 10), all
measured in one process, with and without XLA (``jit_compile``), in two calling modes:

* ``step``: one graph call per upper iteration, ``solver.step(None, T)`` — how a
  minibatch problem is driven;
* ``steps``: ``solver.steps(None, CHUNK, T)``, CHUNK = ``--chunk`` (10) iterations per
  graph call — how ``synthetic.run`` drives the full-batch problems (one call per record
  interval of the original driver).

Solvers are built by `penalty_tf.solvers.make` on ``SyntheticProblem.bilevel()`` with the
original's settings (``synthetic.run.solver_config``) and ``check_finite=True`` (each call then reads one status scalar back, as in real use). Every
solver is warmed up first (the first call traces, and with XLA compiles; its time is
reported as ``first_call_s``). Each timed run restarts from the same initial point and
solver state and runs ``--iterations`` (2000) iterations; the ``--repeats`` (3) runs of a
setting are spread over the whole benchmark (the repeat loop is outermost, and the four
methods of one setting are timed back to back), so that a change in the machine's load
shifts all methods alike. Reported: median, min and max; the ratios RMD/Penalty and
ApproxGrad/Penalty of the medians, next to the same ratios of the paper's Table 2 means;
and for Penalty the speed-up over the original TF1 code (one ``session.run`` per lower
step) timed on this kind of machine (``TF1_PENALTY``).

**Memory.** Peak resident memory of RMD and Penalty as T grows (``--memory-steps``,
10 100 1000) on SMD20 with a large block size (``--memory-dim`` 50000: u and v have
100,000 float32 entries each, 0.4 MB; RMD keeps all T + 1 iterates of v, Penalty none).
Each (method, T) is measured in a fresh subprocess (``benchmarks.memory_probe``;
``--memory-jobs`` of them at a time, after the timing), as peak RSS minus the RSS after
building the solver (``extra_mb``), and also without the one-off cost of tracing the
graph (``run_extra_mb``). A setting that fails (out of
memory, refused because it would not fit) is reported, not fatal.

Everything goes to ``DIR/result.json`` (``metrics``: the nested numbers; ``published``:
the paper's Table 2 rows keyed ``"SMD20/penalty/T10"``) and is printed as markdown tables.
``--quick`` (for tests) times one example at T = 1 and 5, 50 iterations, 1 repeat; it does
not change the memory settings.

Absolute seconds depend on the machine and its load (the paper's are TF1 graph mode on
the authors' hardware, per 10,000 iterations): compare ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np

from penalty_tf import solvers
from penalty_tf.files import atomic_file
from penalty_tf.paper import experiment, published as paper
from synthetic.problems import EXAMPLES, make_problem
from synthetic.run import METHOD_LABELS as LABELS, methods, paper_methods, solver_config

EXPERIMENT = "benchmarks.synthetic_timing"
#: The methods timed by default: the paper's four (Table 2); `ALL_METHODS` may be chosen.
METHODS = paper_methods()
ALL_METHODS = methods()
MODES = ("step", "steps")
XLA_KEYS = {False: "no_xla", True: "xla"}
RATIOS = ("rmd/penalty", "approxgrad/penalty")

#: Penalty with the original TF1 code (one ``session.run`` per lower step), seconds per
#: 1000 upper-level iterations, timed on this kind of machine: {example: {T: seconds}}.
TF1_PENALTY = {"SMD20": {1: 1.24, 5: 2.48, 10: 4.6},
               "SMD23": {1: 1.55, 5: 3.18, 10: 5.32}}

REPO_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- flags
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {EXPERIMENT}",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--examples", nargs="+", default=list(EXAMPLES), choices=EXAMPLES,
                        metavar="EXAMPLE", help=f"SMD examples, from {' '.join(EXAMPLES)}")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=ALL_METHODS,
                        metavar="METHOD", help="methods to time (ratios need rmd, "
                                               "approxgrad and penalty)")
    parser.add_argument("--lower-steps", nargs="+", type=int, default=[1, 5, 10], metavar="T",
                        help="inner iterations T per upper iteration")
    parser.add_argument("--iterations", type=int, default=2000,
                        help="upper-level iterations per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting")
    parser.add_argument("--chunk", type=int, default=10,
                        help="iterations per graph call in the 'steps' mode")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="calling modes to time")
    parser.add_argument("--xla", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="jit_compile settings to time")
    parser.add_argument("--quick", action="store_true",
                        help="for tests: first example only, T = 1 5, 50 iterations, 1 repeat")
    parser.add_argument("--memory-steps", nargs="*", type=int, default=[10, 100, 1000],
                        metavar="T", help="T values of the memory probe (none: skip it)")
    parser.add_argument("--memory-dim", type=int, default=50000,
                        help="block size p = q = r of SMD20 in the memory probe")
    parser.add_argument("--memory-methods", nargs="+", default=["rmd", "penalty"],
                        choices=METHODS, help="methods of the memory probe")
    parser.add_argument("--memory-iterations", type=int, default=3,
                        help="measured steps per memory probe")
    parser.add_argument("--memory-xla", action="store_true",
                        help="compile the memory probe's solver with XLA")
    parser.add_argument("--memory-jobs", type=int, default=2,
                        help="memory probes run at the same time (after the timing)")
    parser.add_argument("--memory-timeout", type=float, default=900.0,
                        help="seconds before a memory probe is abandoned")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output directory "
                                                    "(default runs/benchmarks.synthetic_timing)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.quick:
        args.examples = args.examples[:1]
        args.lower_steps = [1, 5]
        args.iterations = 50
        args.repeats = 1
    for name in ("iterations", "repeats", "chunk", "memory_dim", "memory_iterations",
                 "memory_jobs"):
        if getattr(args, name) < 1:
            raise experiment.ExperimentError(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.lower_steps) < 1 or (args.memory_steps and min(args.memory_steps) < 1):
        raise experiment.ExperimentError("--lower-steps and --memory-steps must be >= 1")
    for name in ("examples", "methods", "lower_steps", "modes", "xla", "memory_steps",
                 "memory_methods"):
        setattr(args, name, list(dict.fromkeys(getattr(args, name))))


# ---------------------------------------------------------------------------- timing
def _key(t: int) -> str:
    return f"T{t}"


def _spread(runs: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs),
            "runs": list(runs)}


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not b:
        return None
    return a / b


class Subject:
    """One solver on its own copy of one problem, with a way back to its start."""

    def __init__(self, example: str, method: str, xla: bool, seed: int):
        self.example, self.method, self.xla, self.seed = example, method, xla, seed
        # The same seed for every method: the same A matrices and initial point.
        self.problem = make_problem(example, rng=np.random.default_rng(seed))
        self.solver = solvers.make(method, self.problem.bilevel(), solver_config(method),
                                   jit_compile=xla, check_finite=True)
        self.first_call_s: dict[str, float] = {}

    def restart(self) -> None:
        """Same initial point and solver state (penalty schedule, moments) for every run."""
        self.problem.initialize(np.random.default_rng([self.seed, 1]))
        self.solver.restart()

    def warm_up(self, lower_steps: list[int], chunk: int, modes: list[str]) -> None:
        """Trace (and compile) every mode; T is a tensor argument, so no retrace per T."""
        for mode in modes:
            for i, t in enumerate(lower_steps):
                start = time.perf_counter()
                self.call(mode, t, chunk)
                if i == 0:
                    self.first_call_s[mode] = time.perf_counter() - start
                self.call(mode, t, chunk)
        self.restart()

    def call(self, mode: str, lower_steps: int, iterations: int) -> None:
        if mode == "step":
            self.solver.step(None, lower_steps)
        else:
            self.solver.steps(None, iterations, lower_steps)

    def time(self, mode: str, lower_steps: int, iterations: int, chunk: int) -> float:
        """Seconds per 1000 upper-level iterations of one run of ``iterations``."""
        self.restart()
        gc.collect()
        start = time.perf_counter()
        if mode == "step":
            for _ in range(iterations):
                self.solver.step(None, lower_steps)
        else:
            done = 0
            while done < iterations:
                n = min(chunk, iterations - done)
                self.solver.steps(None, n, lower_steps)
                done += n
        return (time.perf_counter() - start) * 1000.0 / iterations


def run_timing(args: argparse.Namespace) -> dict[str, Any]:
    """All timings in this process; returns the nested ``timing`` (and warm-up) metrics."""
    xlas = [x == "on" for x in args.xla]
    subjects = {}
    bar = experiment.progress(len(args.examples) * len(xlas) * len(args.methods),
                              quiet=args.quiet, unit_name="solver")
    if not args.quiet:
        print("building and warming up (tracing, XLA compilation) every solver ...")
    for xla in xlas:
        for example in args.examples:
            for method in args.methods:
                subject = Subject(example, method, xla, args.seed)
                subject.warm_up(args.lower_steps, args.chunk, args.modes)
                subjects[(example, method, xla)] = subject
                bar.add(1)

    runs: dict[tuple, list[float]] = {}
    total = args.repeats * len(subjects) * len(args.lower_steps) * len(args.modes)
    bar = experiment.progress(total, quiet=args.quiet, unit_name="run")
    if not args.quiet:
        print(f"timing {total} runs of {args.iterations} iterations ...")
    for _ in range(args.repeats):
        for example in args.examples:
            for xla in xlas:
                for t in args.lower_steps:
                    for mode in args.modes:
                        for method in args.methods:  # back to back: fair ratios
                            seconds = subjects[(example, method, xla)].time(
                                mode, t, args.iterations, args.chunk)
                            runs.setdefault((mode, xla, example, t, method), []).append(seconds)
                            bar.add(1)

    timing: dict[str, Any] = {}
    first_call: dict[str, Any] = {}
    tracing: dict[str, Any] = {}
    for (mode, xla, example, t, method), values in runs.items():
        cell = timing.setdefault(mode, {}).setdefault(XLA_KEYS[xla], {}).setdefault(example, {})
        cell.setdefault(_key(t), {})[method] = _spread(values)
    for (example, method, xla), subject in subjects.items():
        for mode, seconds in subject.first_call_s.items():
            first_call.setdefault(mode, {}).setdefault(XLA_KEYS[xla], {}) \
                .setdefault(example, {})[method] = seconds
        tracing.setdefault(XLA_KEYS[xla], {}).setdefault(example, {})[method] = \
            subject.solver.tracing_count()
    return {"timing": timing, "first_call_s": first_call, "tracing_count": tracing}


def paper_table2(examples: list[str], lower_steps: list[int]) -> dict[str, Any]:
    """The published Table 2 rows keyed ``"SMD20/penalty/T10"`` (seconds per 10,000 it.)."""
    published = {}
    for example in examples:
        for t in lower_steps:
            for method in METHODS:
                rows = paper.lookup(table="Table 2", experiment="synthetic", method=method,
                                    example=example, lower_steps=t)
                if rows:
                    published[f"{example}/{method}/{_key(t)}"] = rows[0].to_dict()
    return published


def derived(timing: dict[str, Any], published: dict[str, Any], examples: list[str],
            lower_steps: list[int]) -> dict[str, Any]:
    """Ratios of medians (and of minima), the paper's ratios and Penalty's speed-up over TF1."""
    paper_ratios: dict[str, Any] = {}
    for example in examples:
        for t in lower_steps:
            means = {m: published.get(f"{example}/{m}/{_key(t)}", {}).get("mean")
                     for m in METHODS}
            paper_ratios.setdefault(example, {})[_key(t)] = {
                name: _ratio(means[name.split("/")[0]], means["penalty"]) for name in RATIOS}
    ratios: dict[str, Any] = {}
    ratios_min: dict[str, Any] = {}
    speedup: dict[str, Any] = {}
    for mode, by_xla in timing.items():
        for xla_key, by_example in by_xla.items():
            for example, by_t in by_example.items():
                for t_key, cells in by_t.items():
                    med = {m: c["median"] for m, c in cells.items()}
                    low = {m: c["min"] for m, c in cells.items()}
                    ratios.setdefault(mode, {}).setdefault(xla_key, {}) \
                        .setdefault(example, {})[t_key] = {
                            name: _ratio(med.get(name.split("/")[0]), med.get("penalty"))
                            for name in RATIOS}
                    # On a busy machine the fastest run is the least disturbed one.
                    ratios_min.setdefault(mode, {}).setdefault(xla_key, {}) \
                        .setdefault(example, {})[t_key] = {
                            name: _ratio(low.get(name.split("/")[0]), low.get("penalty"))
                            for name in RATIOS}
                    tf1 = TF1_PENALTY.get(example, {}).get(int(t_key[1:]))
                    if tf1 is not None and "penalty" in med:
                        speedup.setdefault(mode, {}).setdefault(xla_key, {}) \
                            .setdefault(example, {})[t_key] = tf1 / med["penalty"]
    tf1 = {ex: {_key(t): s for t, s in by_t.items()} for ex, by_t in TF1_PENALTY.items()}
    return {"ratios": ratios, "ratios_of_min": ratios_min, "paper_ratios": paper_ratios, "tf1_original_penalty": tf1,
            "speedup_vs_tf1_penalty": speedup}


# ---------------------------------------------------------------------------- memory
def probe_memory(method: str, lower_steps: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run `benchmarks.memory_probe` in a fresh process; its JSON, or the failure."""
    command = [sys.executable, "-m", "benchmarks.memory_probe", "--method", method,
               "--lower-steps", str(lower_steps), "--dim", str(args.memory_dim),
               "--iterations", str(args.memory_iterations), "--seed", str(args.seed)]
    if args.memory_xla:
        command.append("--xla")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=args.memory_timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {args.memory_timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        reason = ("killed by signal %d (out of memory?)" % -done.returncode
                  if done.returncode < 0 else f"exit status {done.returncode}")
        return {"ok": False, "error": f"{reason}; no result printed. {tail}"[:2000],
                "returncode": done.returncode}
    result["returncode"] = done.returncode
    return result


def _mb(kib: Optional[float]) -> Optional[float]:
    return None if kib is None else kib * 1024 / 1e6


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Every (method, T) of the memory probe, each in a fresh process."""
    vector_mb = 2 * args.memory_dim * 4 / 1e6
    memory: dict[str, Any] = {
        "example": "SMD20", "dim": args.memory_dim, "entries_per_level": 2 * args.memory_dim,
        "iterate_mb": vector_mb, "iterations": args.memory_iterations,
        "xla": args.memory_xla, "units": "MB (1e6 bytes)",
        "rmd_iterates_mb": {_key(t): (t + 1) * vector_mb for t in args.memory_steps},
    }
    cells = [(method, t) for method in args.memory_methods for t in args.memory_steps]
    if not args.quiet:
        print(f"memory: {len(cells)} probes (SMD20, dim {args.memory_dim}), "
              f"{args.memory_jobs} at a time ...", flush=True)
    # Each probe is its own process, so running several at once does not change what
    # each measures (its own RSS); only the sum must fit in memory (the probe refuses a
    # run estimated not to fit in what is available when it starts).
    with ThreadPoolExecutor(max_workers=args.memory_jobs) as pool:
        raws = list(pool.map(lambda cell: probe_memory(cell[0], cell[1], args), cells))
    for (method, t), raw in zip(cells, raws):
        entry = {"ok": bool(raw.get("ok")), "raw": raw}
        if entry["ok"]:
            entry.update(baseline_mb=_mb(raw["baseline_kib"]), peak_mb=_mb(raw["peak_kib"]),
                         extra_mb=_mb(raw["extra_kib"]),
                         run_extra_mb=_mb(raw.get("run_extra_kib")),
                         seconds_per_step=raw.get("seconds_per_step"))
        else:
            entry["error"] = raw.get("error", "unknown failure")
        memory.setdefault(method, {})[_key(t)] = entry
    for name in ("extra_mb", "run_extra_mb"):
        memory[f"ratio_rmd_penalty_{name}"] = {
            _key(t): _ratio(memory.get("rmd", {}).get(_key(t), {}).get(name),
                            memory.get("penalty", {}).get(_key(t), {}).get(name))
            for t in args.memory_steps}
    return memory


# ---------------------------------------------------------------------------- report
def _fmt(x: Optional[float], digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def format_report(metrics: dict[str, Any], args: argparse.Namespace) -> str:
    lines: list[str] = []
    methods = args.methods
    load = metrics.get("load_average") or {}
    if load.get("before") and load.get("after_timing"):
        lines += [f"Load average (1 min) on {metrics['cpu_count']} cores: "
                  f"{load['before'][0]:.1f} before the timing, {load['after_timing'][0]:.1f} "
                  "after it (other processes slow the timings down)."]
    for mode in args.modes:
        for xla_flag in args.xla:
            xla_key = XLA_KEYS[xla_flag == "on"]
            by_example = metrics["timing"].get(mode, {}).get(xla_key)
            if not by_example:
                continue
            call = ("solver.step(None, T): one graph call per iteration" if mode == "step"
                    else f"solver.steps(None, {args.chunk}, T): one graph call per "
                         f"{args.chunk} iterations")
            lines += ["", f"### mode `{mode}` ({call}), jit_compile={xla_flag == 'on'}", "",
                      f"Seconds per 1000 upper-level iterations, median of {args.repeats} "
                      f"run(s) of {args.iterations}. Paper ratios from Table 2 means; TF1 = "
                      "original code's Penalty on this kind of machine.", ""]
            head = (["example", "T"] + [LABELS[m] for m in methods]
                    + ["RMD/Pen", "paper", "AG/Pen", "paper", "TF1 Pen", "speed-up"])
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            worst = 0.0
            for example, by_t in by_example.items():
                for t_key, cells in by_t.items():
                    r = metrics["ratios"][mode][xla_key][example][t_key]
                    pr = metrics["paper_ratios"].get(example, {}).get(t_key, {})
                    tf1 = metrics["tf1_original_penalty"].get(example, {}).get(t_key)
                    sp = metrics["speedup_vs_tf1_penalty"].get(mode, {}).get(xla_key, {}) \
                        .get(example, {}).get(t_key)
                    row = [example, t_key[1:]] + [_fmt(cells[m]["median"]) for m in methods]
                    row += [_fmt(r["rmd/penalty"], 2), _fmt(pr.get("rmd/penalty"), 2),
                            _fmt(r["approxgrad/penalty"], 2), _fmt(pr.get("approxgrad/penalty"), 2),
                            _fmt(tf1, 2), (_fmt(sp, 1) + "×") if sp else "–"]
                    lines.append("| " + " | ".join(row) + " |")
                    for c in cells.values():
                        worst = max(worst, (c["max"] - c["min"]) / c["median"])
            if args.repeats > 1:
                lines += ["", f"Largest spread (max − min) / median of a cell: {worst:.0%}."]
            first = metrics["first_call_s"].get(mode, {}).get(xla_key, {})
            if first:
                mean_first = {m: statistics.mean(d[m] for d in first.values() if m in d)
                              for m in methods}
                lines += ["First call (trace" + (" + XLA compile" if xla_flag == "on" else "")
                          + "), mean over examples, s: "
                          + ", ".join(f"{LABELS[m]} {v:.2f}" for m, v in mean_first.items())]
    memory = metrics.get("memory")
    if memory and memory.get("rmd" if "rmd" in args.memory_methods else args.memory_methods[0]):
        lines += ["", f"### memory: SMD20, dim {memory['dim']} (u and v "
                      f"{memory['entries_per_level']:,} float32 entries, "
                      f"{memory['iterate_mb']:.2f} MB each), {memory['iterations']} step(s), "
                      f"jit_compile={memory['xla']}, one fresh process per cell", "",
                  "extra = peak RSS − RSS after building the solver (MB); run = peak of the "
                  "T-step iterations − RSS after a traced T=1 warm-up step (MB).", ""]
        ms = args.memory_methods
        head = (["T", "RMD iterates (T+1)·|v|"] + [f"{LABELS[m]} extra" for m in ms]
                + [f"{LABELS[m]} run" for m in ms])
        if "rmd" in ms and "penalty" in ms:
            head += ["RMD/Pen extra", "RMD/Pen run"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in args.memory_steps:
            k = _key(t)
            row = [str(t), _fmt(memory["rmd_iterates_mb"][k], 1)]
            for name in ("extra_mb", "run_extra_mb"):
                for m in ms:
                    e = memory[m][k]
                    row.append(_fmt(e.get(name), 1) if e["ok"] else "failed")
            if "rmd" in ms and "penalty" in ms:
                row += [_fmt(memory["ratio_rmd_penalty_extra_mb"][k], 1),
                        _fmt(memory["ratio_rmd_penalty_run_extra_mb"][k], 1)]
            lines.append("| " + " | ".join(row) + " |")
        for m in ms:
            for t in args.memory_steps:
                e = memory[m][_key(t)]
                if not e["ok"]:
                    lines.append(f"- {LABELS[m]}, T={t}: {e['error']}")
    return "\n".join(lines).lstrip("\n")


# ------------------------------------------------------------------------------ main
def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    _check_args(args)
    out = experiment.resolve_out_dir(args, EXPERIMENT)
    experiment.seed_everything(args.seed)
    start = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    metrics: dict[str, Any] = {"units": "seconds per 1000 upper-level iterations",
                               "cpu_count": os.cpu_count()}
    metrics.update(run_timing(args))
    published = paper_table2(args.examples, args.lower_steps)
    metrics.update(derived(metrics["timing"], published, args.examples, args.lower_steps))
    metrics["load_average"] = {"before": load_before,
                               "after_timing": os.getloadavg() if load_before else None}
    if args.memory_steps:
        metrics["memory"] = run_memory(args)

    report = format_report(metrics, args)
    print(report)
    result = experiment.write_result(out, experiment=EXPERIMENT, method=",".join(args.methods),
                                     config=vars(args), metrics=metrics, published=published,
                                     wall_time_s=time.perf_counter() - start)
    with atomic_file(out / "report.md") as handle:
        handle.write((report + "\n").encode())
    return result


if __name__ == "__main__":
    experiment.run_main(main)
