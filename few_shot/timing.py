"""Seconds per meta-iteration at the original's settings, on random data of the real shapes.

    python -m few_shot.timing --dataset omniglot --method penalty approxgrad --xla --no-xla
    python -m few_shot.timing --dataset miniimagenet --repeats 3 --out runs/few_shot_timing

Omniglot: 20-way 5-shot, meta-batch 15, 28x28x1 images, 64-filter encoder. Mini-ImageNet:
5-way 5-shot, meta-batch 2, 84x84x3 images, the 3.5M-parameter residual encoder. Both: 20
lower steps (and 20 linear-system steps for ApproxGrad), 15 query images per class. The
first call (tracing and compilation) is timed separately. Also timed: one meta-test
meta-batch (features once, 100 classifier steps), from which the projected wall time of a
full run (iterations + evaluations every 1000 iterations, 600 tasks each) is computed.
The solvers' settings are the original's (`penalty_tf.paper.defaults.few_shot`). Random
pixels change nothing in the cost of a step. Wall and process CPU seconds are both
recorded, with the load average: on a shared machine the wall time is noisy.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from penalty_tf.paper import experiment

SETTINGS = {
    # dataset: (image shape, nway, kshot, meta-batch, encoder kwargs, iterations per method)
    "omniglot": ((28, 28, 1), 20, 5, 15, {}, {"penalty": 10000, "approxgrad": 10000}),
    "miniimagenet": ((84, 84, 3), 5, 5, 2, {}, {"penalty": 20001, "approxgrad": 10001}),
}


def time_setting(dataset: str, method: str, xla: bool, repeats: int, meta_test: bool,
                 meta_batch: int | None = None) -> dict:
    import tensorflow as tf

    from few_shot.meta_test import MetaTester
    from few_shot.problem import FewShotProblem, make_solver
    from few_shot.settings import solver_config
    from few_shot.tasks import QUERY_PER_CLASS, MetaBatch
    from penalty_tf.paper.defaults import defaults
    from penalty_tf.models.few_shot import build_encoder, initial_classifiers

    shape, nway, kshot, tasks, enc_kwargs, iterations = SETTINGS[dataset]
    tasks = meta_batch or tasks   # a smaller meta-batch: the cost is about linear in it
    rng = np.random.default_rng(0)
    encoder = build_encoder(dataset, shape, **enc_kwargs)
    problem = FewShotProblem(encoder, tasks, nway, shape)
    config = solver_config(method, defaults(f"few_shot.{dataset}", method))
    solver = make_solver(method, problem, config, jit_compile=xla)
    q = QUERY_PER_CLASS

    def batch():
        return (tf.constant(rng.random((tasks, nway * kshot, *shape), dtype=np.float32)),
                tf.constant(rng.integers(0, nway, (tasks, nway * kshot)).astype(np.int32)),
                tf.constant(rng.random((tasks, nway * q, *shape), dtype=np.float32)),
                tf.constant(rng.integers(0, nway, (tasks, nway * q)).astype(np.int32)))

    b = batch()
    counts = {"linear_steps": 20} if method == "approxgrad" else {}

    def one():
        problem.reset_classifiers(rng)
        solver.step(b, lower_steps=20, **counts)

    t0 = time.perf_counter()
    one()
    first = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        one()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out = {"dataset": dataset, "method": method, "xla": xla, "nway": nway, "kshot": kshot,
           "meta_batch": tasks, "first_call_s": first, "seconds_per_iteration": float(np.median(times)),
           "all_s": times, "cpu_seconds_per_iteration": float(np.median(cpu)),
           "load_average": os.getloadavg()[0]}
    if meta_test:
        tester = MetaTester(encoder, 100, 1e-3, jit_compile=xla)
        mb = MetaBatch(*(x.numpy() for x in b))
        w0, b0 = initial_classifiers(rng, tasks, problem.dim, nway)
        tester.accuracies(mb, w0, b0)
        t0 = time.perf_counter()
        tester.accuracies(mb, w0, b0)
        per_batch = time.perf_counter() - t0
        evals = iterations[method] // 1000
        eval_s = per_batch * (-(-600 // tasks)) * evals
        out.update(meta_test_batch_s=per_batch, evaluations=evals,
                   projected_hours=(out["seconds_per_iteration"] * iterations[method] + eval_s) / 3600,
                   iterations=iterations[method])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs="+", default=["omniglot", "miniimagenet"],
                        choices=list(SETTINGS))
    parser.add_argument("--method", nargs="+", default=["penalty", "approxgrad"],
                        choices=["penalty", "approxgrad"])
    parser.add_argument("--xla", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--meta-batch", type=int, default=None,
                        help="override the meta-batch size (default: the original's)")
    parser.add_argument("--no-meta-test", action="store_true")
    parser.add_argument("--out", default="runs/few_shot_timing")
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.meta_batch is not None and args.meta_batch < 1):
        parser.error(f"--repeats and --meta-batch must be >= 1, got {args.repeats} and {args.meta_batch}")
    experiment.check_out_dir(args.out)          # before the timings, not at their first write
    rows = []
    for dataset in args.dataset:
        for method in args.method:
            for xla in args.xla:
                row = time_setting(dataset, method, xla == "on", args.repeats,
                                   meta_test=not args.no_meta_test, meta_batch=args.meta_batch)
                rows.append(row)
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()},
                      flush=True)
                experiment.write_json_atomic(f"{args.out}/timing.json",
                                             {"rows": rows, "versions": experiment.versions()})
    return rows


if __name__ == "__main__":
    experiment.run_main(main)
