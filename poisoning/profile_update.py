"""Where the time of one bilevel update of the untargeted attack goes (T = 20, full batch).

    python -m poisoning.profile_update [--npoison 60] [--rounds 5] [--updates 10]

Times, interleaved in one process (so that machine load hits every variant alike; the
medians and the ratios are what to read on a shared machine):

* ``naive``: the same Penalty solver on losses that concatenate the *inputs*
  ``[u; X_train] @ W`` and use TensorFlow's fused softmax cross-entropy (as a direct
  transcription of the original does);
* ``fused CE``: separate products (concatenated logits) but still the fused cross-entropy,
  whose second derivative is a batch of 1,060 tiny matmuls (see `penalty_tf.losses`);
* ``ours``: the poisoning module's losses (separate products, log-softmax cross-entropy);
* ``ours+xla``: the same with ``jit_compile=True``;
* ``matmul floor``: only the 6 skinny (1,000 x 784) x (784 x 10) products that one nested-
  tape pass needs (forward X_val W, X_train W; backward X_train^T dz, X_val^T dz; the
  second-order X_train w and X_train^T (.)), 22 passes per update (20 lower steps, the
  upper step, the tolerance test);
* ``per pass``: (T=20 - T=1) / 19, the cost of one lower step.

Prints a table and writes nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m poisoning.profile_update")
    parser.add_argument("--npoison", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.npoison <= 1000 or args.rounds < 1 or args.updates < 1:
        parser.error("--npoison must be in [1, 1000], --rounds and --updates >= 1")

    import tensorflow as tf

    from penalty_tf.datasets import load_mnist
    from penalty_tf.solvers import Penalty, PenaltySchedule
    from poisoning import common, untargeted

    np.random.seed(0)
    splits = untargeted.make_splits(load_mnist(args.data_dir), args.npoison, "penalty")
    problem = common.PoisoningProblem(splits, -1.0, np.random.default_rng(0))
    W0 = problem.W.numpy()

    def fused_ce(labels, logits):
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits))

    def naive_lower(batch):
        x = tf.concat([problem.u, batch["x_train"]], 0)
        labels = tf.concat([batch["y_poison"], batch["y_train"]], 0)
        return problem.weight_decay() + fused_ce(labels, tf.matmul(x, problem.W))

    def fused_lower(batch):
        logits = tf.concat([tf.matmul(problem.u, problem.W), tf.matmul(batch["x_train"], problem.W)], 0)
        labels = tf.concat([batch["y_poison"], batch["y_train"]], 0)
        return problem.weight_decay() + fused_ce(labels, logits)

    def fused_upper(batch):
        return -fused_ce(batch["y_val"], tf.matmul(batch["x_val"], problem.W))

    def solver(lower, xla, upper=problem.upper_loss):
        return Penalty(upper, lower, [problem.u], [problem.W], upper_optimizer=0.1,
                       lower_optimizer=1e-3, upper_bounds=(0.0, 1.0), jit_compile=xla,
                       schedule=PenaltySchedule(rho0=10.0, lamb0=100.0, eps0=1.0, nu0=0.0))

    variants = {"naive": solver(naive_lower, False, fused_upper),
                "fused CE": solver(fused_lower, False, fused_upper),
                "ours": solver(problem.lower_loss, False),
                "ours+xla": solver(problem.lower_loss, True)}
    x_train, x_val = problem.batch["x_train"], problem.batch["x_val"]

    @tf.function(autograph=False)
    def floor(n):
        def body(i, acc):
            w = problem.W + 0.0 * acc
            a = tf.matmul(x_val, w)
            b = tf.matmul(x_train, w)
            c = tf.matmul(x_train, b, transpose_a=True)
            d = tf.matmul(x_val, a, transpose_a=True)
            e = tf.matmul(x_train, w + c)
            f = tf.matmul(x_train, e, transpose_a=True)
            return i + 1, acc + d + f
        return tf.while_loop(lambda i, acc: i < n, body, (tf.constant(0), tf.zeros_like(problem.W)))[1]

    for s in variants.values():               # compile
        s.steps(problem.batch, 1, 20)
        s.steps(problem.batch, 1, 1)
    floor(tf.constant(1))
    times = {name: [] for name in list(variants) + ["ours T=1", "matmul floor"]}
    for _ in range(args.rounds):
        for name, s in variants.items():
            problem.W.assign(W0)
            start = time.perf_counter()
            s.steps(problem.batch, args.updates, 20)
            times[name].append(1000 * (time.perf_counter() - start) / args.updates)
        start = time.perf_counter()
        variants["ours"].steps(problem.batch, args.updates, 1)
        times["ours T=1"].append(1000 * (time.perf_counter() - start) / args.updates)
        start = time.perf_counter()
        floor(tf.constant(22 * args.updates)).numpy()
        times["matmul floor"].append(1000 * (time.perf_counter() - start) / args.updates)
    med = {k: float(np.median(v)) for k, v in times.items()}
    med["per pass (ours)"] = (med["ours"] - med["ours T=1"]) / 19
    print(f"{'variant':<18}{'median ms/update':>18}{'min':>10}{'x floor':>10}")
    for k, v in med.items():
        lo = min(times[k]) if k in times else float("nan")
        print(f"{k:<18}{v:>18.1f}{lo:>10.1f}{v / med['matmul floor']:>10.2f}")
    return med


if __name__ == "__main__":
    main()
