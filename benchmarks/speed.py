"""The like-for-like speed benchmark: every figure a README's speed claim rests on.

    python -m benchmarks.speed --cores 1 --threads 1 --rounds 3 --data-dir ../shared/data \
        --out results/speed.like_for_like
    python -m benchmarks.speed --trees before=../before after=. --tasks cnn poisoning --out DIR
    python -m benchmarks.speed --quick --out /tmp/speed            # the tiny CI budget

Every measurement is a fresh process pinned to ``--cores`` (``taskset -c``) with
``--threads`` TensorFlow intra-op, inter-op and OpenMP threads, importing the package from
its tree (``--trees NAME=PATH ...``; default: this tree alone, named ``here``). Runs are
interleaved: each of the ``--rounds`` rounds runs every task once in every tree, the trees'
order alternating between rounds, so that a change of the machine's load hits all alike.
The engine is `benchmarks.compare_trees.interleave`.

Tasks and their figures (seconds unless the name says ms):

* ``cnn`` — `importance_learning.speed` on the MNIST CNN of Table 3 (batch 200, T = 20,
  graph mode, CPU-time clock): ``plain_step_s`` (forward, backward, Adam),
  ``penalty_upper_iteration_s``, ``penalty_lower_step_s`` ((T=20 - T=1) / 19) and
  ``penalty_lower_step_over_plain``; with ``--parts`` also the passes of one lower step;
* ``poisoning`` — `poisoning.profile_update`: ms per bilevel update of the untargeted 1 %
  attack at T = 20 in graph mode (``ours``) and with XLA (``ours+xla``), ``per pass (ours)``
  and the ``matmul floor``;
* ``synthetic`` — `benchmarks.synthetic_timing` on SMD20 (Penalty, RMD, GD; T = 1 and 10;
  graph mode and XLA; one graph call per iteration and many): seconds per 1,000 upper
  iterations;
* ``mnist_small`` — the whole `importance_learning.mnist_small` run (pre-training,
  Penalty at the original's budget, retraining, evaluation): its wall time
  (``pipeline_s``) and the retrained test accuracy it reached.

Writes ``--out/raw.json`` after every run (an interrupted benchmark keeps what it measured),
then ``result.json`` (per task, tree and figure: median, min, max and the raw values of every
round; with two trees also the second's median over the first's) and ``table.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.compare_trees import _all, _synthetic, git_commit, interleave


def _cnn_figures(result: dict) -> dict[str, float]:
    out = {}
    for key, value in _all(result).items():
        if key.startswith("graph/") and not key.startswith("graph/approxgrad"):
            out[key[len("graph/"):]] = value
    return out


def _pipeline_figures(result: dict) -> dict[str, float]:
    return {"pipeline_s": float(result["wall_time_s"]), "test_accuracy": float(result["metrics"]["test_accuracy"])}


def tasks(quick: bool, parts: bool = False) -> dict[str, tuple[str, Callable[[str, str], list[str]], Callable]]:
    """name -> (module, argv given the data directory and a scratch directory, figures)."""
    cnn = (["--batch-size", "16", "--lower-steps", "2", "--repeats", "1"] if quick
           else ["--batch-size", "200", "--lower-steps", "20", "--repeats", "5"])
    poisoning = ["--rounds", "1", "--updates", "1", "--npoison", "10"] if quick else ["--rounds", "5"]
    synthetic = ["--iterations", "20", "--repeats", "1"] if quick else ["--iterations", "500", "--repeats", "3"]
    pipeline = (["--epochs", "1", "--pretrain-epochs", "1", "--retrain-epochs", "1", "--train-size", "400",
                 "--test-size", "400"] if quick else [])
    return {
        "cnn": ("importance_learning.speed",
                lambda data, out: ["--model", "mnist_cnn", *cnn, "--xla", "off", "--methods", "penalty",
                                   "--clock", "cpu", *(["--parts"] if parts else []), "--out", out],
                _cnn_figures),
        "poisoning": ("poisoning.profile_update", lambda data, out: ["--data-dir", data, *poisoning], _all),
        "synthetic": ("benchmarks.synthetic_timing",
                      lambda data, out: ["--examples", "SMD20", "--methods", "penalty", "rmd", "gd",
                                         "--lower-steps", "1", "10", *synthetic, "--memory-steps", "--quiet",
                                         "--out", out], _synthetic),
        "mnist_small": ("importance_learning.mnist_small",
                        lambda data, out: ["--data-dir", data, "--seed", "0", "--quiet", *pipeline, "--out", out],
                        _pipeline_figures),
    }


def summarise(raw: dict[str, dict[str, dict[str, list[float]]]], trees: list[str]) -> dict[str, Any]:
    """Per task, figure and tree: median, min, max, raw; with two trees, ``ratio`` =
    the second tree's median / the first's."""
    out: dict[str, Any] = {}
    for task, by_tree in raw.items():
        figures = sorted(set().union(*(set(f) for f in by_tree.values())))
        for figure in figures:
            entry: dict[str, Any] = {}
            for tree in trees:
                values = by_tree.get(tree, {}).get(figure)
                if values:
                    entry[tree] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                                   "raw": values}
            if len(trees) == 2 and all(t in entry for t in trees) and entry[trees[0]]["median"]:
                entry["ratio"] = entry[trees[1]]["median"] / entry[trees[0]]["median"]
            out.setdefault(task, {})[figure] = entry
    return out


def table(summary: dict[str, Any], trees: list[str]) -> str:
    """Markdown: one row per figure, the median [min, max] of every tree (and the ratio)."""
    head = "| task | figure | " + " | ".join(f"{t}: median [min, max]" for t in trees) \
        + (" | ratio |" if len(trees) == 2 else " |")
    lines = [head, "|" + "---|" * (2 + len(trees) + (len(trees) == 2))]
    for task, figures in summary.items():
        for figure, entry in figures.items():
            cells = [f"{entry[t]['median']:.4g} [{entry[t]['min']:.4g}, {entry[t]['max']:.4g}]" if t in entry
                     else "—" for t in trees]
            ratio = [f"{entry['ratio']:.3f}" if "ratio" in entry else "—"] if len(trees) == 2 else []
            lines.append("| " + " | ".join([task, figure, *cells, *ratio]) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["cnn", "poisoning", "synthetic", "mnist_small"],
                        choices=list(tasks(False)))
    parser.add_argument("--trees", nargs="+", default=["here=."], metavar="NAME=PATH",
                        help="source trees to time (git worktrees); default: this one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cores", default="1", help="taskset -c list every run is pinned to (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op = inter-op = OpenMP threads")
    parser.add_argument("--parts", action="store_true", help="cnn: also time the passes of a lower step")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (the CI test)")
    parser.add_argument("--data-dir", default=os.environ.get("PENALTY_TF_DATA", "../shared/data"))
    parser.add_argument("--out", required=True)
    return parser


def main(argv=None) -> dict:
    from penalty_tf.files import write_text_atomic
    from penalty_tf.paper.evidence import machine_state
    from penalty_tf.paper.experiment import ExperimentError, check_out_dir, versions, write_result

    args = build_parser().parse_args(argv)
    trees = {}
    for item in args.trees:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_dir():
            raise ExperimentError(f"--trees: {item!r} is not NAME=PATH of an existing directory")
        trees[name] = Path(path).resolve()
    if args.rounds < 1 or args.threads < 1:
        raise ExperimentError("--rounds and --threads must be >= 1")
    out = check_out_dir(Path(args.out))
    record = {"command": [sys.executable, "-m", "benchmarks.speed", *(argv if argv is not None else sys.argv[1:])],
              "trees": {n: {"path": str(p), "commit": git_commit(p)} for n, p in trees.items()},
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": args.cores,
              "threads": args.threads, "machine": machine_state(), "versions": versions(), "runs": [], "raw": {}}
    start = time.time()
    interleave(trees, args.tasks, args.rounds, args.cores, args.threads, str(Path(args.data_dir).resolve()),
               record, out, tasks(args.quick, args.parts))
    names = list(trees)
    summary = summarise(record["raw"], names)
    write_text_atomic(out / "table.md", table(summary, names))
    config = {**vars(args), "trees": record["trees"]}
    result = write_result(out, experiment="benchmarks.speed", method="+".join(args.tasks), config=config,
                          metrics=summary, published={}, wall_time_s=time.time() - start)
    print(table(summary, names))
    return result


if __name__ == "__main__":
    from penalty_tf.paper.experiment import run_main

    run_main(main)
