"""Before/after timing of two source trees (git worktrees) of this project, like for like.

    git worktree add --detach ../before 19d8ac2
    git worktree add --detach ../after HEAD
    python -m benchmarks.compare_trees --trees before=../before after=../after \
        --tasks synthetic poisoning cnn --rounds 3 --core 1 --out results/redesign.before_after

Every run is a fresh process pinned to one core (``taskset -c --core``) with one
TensorFlow intra-op, one inter-op and one OpenMP thread, importing the package from its
tree (``PYTHONPATH``, working directory = the tree). Runs are interleaved: each round runs
every task once on every tree, the trees' order alternating from round to round, so that a
change in the machine's load hits both trees alike. Per figure the raw values of every
round, their median and the ratio after/before of the medians are written to
``--out/raw.json`` after every run (an interrupted comparison keeps what it measured) and
printed as a table at the end; ``--out/result.json`` holds the summary (so that
``python -m penalty_tf.paper.evidence run NAME -- python -m benchmarks.compare_trees ...``
records it).

Tasks (the benchmarks the redesign must not slow down):

* ``synthetic``: `benchmarks.synthetic_timing` on SMD20 and SMD23, T = 1 and 10, 500
  iterations, 3 repeats, no memory probes; figures: seconds per 1000 iterations of every
  (example, method, T, mode, XLA);
* ``poisoning``: `poisoning.profile_update` (the untargeted attack's update at T = 20):
  milliseconds per update of each variant;
* ``cnn``: `importance_learning.speed --model mnist_cnn --lower-steps 20 --repeats 5 --xla off
  --threads 1 --clock cpu`: CPU seconds of a plain training step and of Penalty's and
  ApproxGrad's upper iterations in graph mode (XLA's compilation of the CNN's nested-tape
  step takes over 20 minutes on one core, so it is left out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

MARK = "@@RESULT@@"
#: How a task is run in a tree: the Python that calls its ``main`` and prints the result.
RUNNER = ("import json, sys; from {module} import main; r = main({argv!r}); "
          "print({mark!r} + json.dumps(r, default=float))")


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    """Every number in a nest of dicts as ``"a/b/c": value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}/{key}" if prefix else str(key), item, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


def _synthetic(result: dict) -> dict[str, float]:
    """The median seconds per 1000 iterations, keyed mode/xla/example/T/method."""
    out: dict[str, float] = {}
    _flatten("", result["metrics"]["timing"], out)
    return {k[:-len("/median")]: v for k, v in out.items() if k.endswith("/median")}


def _all(result: dict) -> dict[str, float]:
    """Every number of the result's metrics (or of the returned dict)."""
    out: dict[str, float] = {}
    _flatten("", result.get("metrics", result), out)
    return out


#: name -> (module, argv given the data directory, figures of the result)
TASKS: dict[str, tuple[str, Callable[[str, str], list[str]], Callable[[dict], dict[str, float]]]] = {
    "synthetic": ("benchmarks.synthetic_timing",
                  lambda data, out: ["--examples", "SMD20", "SMD23", "--lower-steps", "1", "10",
                                     "--iterations", "500", "--repeats", "3", "--memory-steps",
                                     "--quiet", "--out", out], _synthetic),
    "poisoning": ("poisoning.profile_update", lambda data, out: ["--data-dir", data], _all),
    "cnn": ("importance_learning.speed",
            lambda data, out: ["--model", "mnist_cnn", "--lower-steps", "20", "--repeats", "5", "--xla", "off",
                               "--threads", "1", "--clock", "cpu", "--out", out], _all),
}


def run_once(tree: Path, task: str, core: int | str, data_dir: str, threads: int = 1,
             tasks: dict | None = None) -> dict[str, float]:
    """One fresh process of ``task`` (of ``tasks``, default `TASKS`) in ``tree``, pinned to
    the cores ``core`` (a `taskset -c` list, e.g. 1 or "0,1") with ``threads`` TensorFlow
    intra-op, inter-op and OpenMP threads; its figures."""
    module, argv_of, figures = (tasks or TASKS)[task]
    with tempfile.TemporaryDirectory() as tmp:
        code = RUNNER.format(module=module, argv=argv_of(data_dir, tmp), mark=MARK)
        n = str(int(threads))
        env = dict(os.environ, PYTHONPATH=str(tree), TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS=n,
                   OMP_NUM_THREADS=n, TF_CPP_MIN_LOG_LEVEL="3", PENALTY_TF_DATA=data_dir)
        proc = subprocess.run(["taskset", "-c", str(core), sys.executable, "-c", code], cwd=tree, env=env,
                              capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{task} in {tree} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return figures(json.loads(lines[-1][len(MARK):]))


def interleave(trees: dict[str, Path], task_names: list[str], rounds: int, core: int | str, threads: int,
               data_dir: str, record: dict, out: Path, tasks: dict | None = None) -> dict:
    """``rounds`` rounds of every task on every tree (the trees' order alternating from
    round to round); the raw figures go to ``record["raw"][task][tree][figure]`` (a list, one
    value per round) and ``record["runs"]``, and ``record`` is written to ``out/raw.json``
    after every run."""
    from penalty_tf.files import write_text_atomic

    names = list(trees)
    for r in range(rounds):
        for task in task_names:
            for name in (names if r % 2 == 0 else names[::-1]):
                load = os.getloadavg()[0]
                start = time.time()
                figures = run_once(Path(trees[name]).resolve(), task, core, data_dir, threads, tasks)
                record["runs"].append({"round": r, "task": task, "tree": name, "load_before": load,
                                       "seconds": round(time.time() - start, 1)})
                for figure, value in figures.items():
                    record["raw"].setdefault(task, {}).setdefault(name, {}).setdefault(figure, []).append(value)
                if len(names) == 2:
                    record["summary"] = summarise(record["raw"], *names)
                write_text_atomic(out / "raw.json", json.dumps(record, indent=1))
                print(f"round {r} {task} {name}: {time.time() - start:.0f} s (load {load:.2f})", flush=True)
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_text_atomic(out / "raw.json", json.dumps(record, indent=1))
    return record


def summarise(raw: dict[str, dict[str, dict[str, list[float]]]], before: str, after: str) -> dict:
    """Per task and figure: the medians of both trees and after/before."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task, trees in raw.items():
        if before not in trees or after not in trees:
            continue
        for figure in sorted(set(trees[before]) & set(trees[after])):
            b, a = statistics.median(trees[before][figure]), statistics.median(trees[after][figure])
            out.setdefault(task, {})[figure] = {"before": b, "after": a, "ratio": a / b if b else float("nan")}
    return out


def git_commit(tree: Path) -> str:
    """The commit checked out in ``tree``."""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True).stdout.strip()


def main(argv=None) -> dict:
    from penalty_tf.paper.evidence import machine_state
    from penalty_tf.paper.experiment import versions

    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_trees", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", nargs=2, required=True, metavar="NAME=PATH",
                        help="the 'before' tree first, then the 'after' tree")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--core", type=int, default=1, help="the one CPU core every run is pinned to")
    parser.add_argument("--data-dir", default=os.environ.get("PENALTY_TF_DATA", "../shared/data"))
    parser.add_argument("--out", required=True, help="directory of raw.json")
    args = parser.parse_args(argv)
    trees = dict(item.split("=", 1) for item in args.trees)
    from penalty_tf.paper.experiment import check_out_dir

    out = check_out_dir(Path(args.out))
    record = {"command": [sys.executable, "-m", "benchmarks.compare_trees", *(argv or sys.argv[1:])],
              "trees": {n: {"path": str(Path(p).resolve()), "commit": git_commit(Path(p))} for n, p in trees.items()},
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "core": args.core,
              "threads": {"TF_NUM_INTRAOP_THREADS": 1, "TF_NUM_INTEROP_THREADS": 1, "OMP_NUM_THREADS": 1},
              "machine": machine_state(), "versions": versions(),
              "runs": [], "raw": {}}
    data_dir = str(Path(args.data_dir).resolve())
    wall_start = time.time()
    interleave(trees, args.tasks, args.rounds, args.core, 1, data_dir, record, out)
    from penalty_tf.paper.experiment import write_result

    write_result(out, experiment="benchmarks.compare_trees", method="+".join(args.tasks),
                 config={**vars(args), "trees": record["trees"]}, metrics=record["summary"], published={},
                 wall_time_s=time.time() - wall_start)
    for task, figures in record.get("summary", {}).items():
        print(f"\n{task}: figure  before  after  after/before")
        for figure, s in figures.items():
            print(f"  {figure}  {s['before']:.4g}  {s['after']:.4g}  {s['ratio']:.3f}")
    return record


if __name__ == "__main__":
    from penalty_tf.paper.experiment import run_main

    run_main(main)
