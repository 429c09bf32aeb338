"""Dataset distillation on MNIST: learn 20 images (two per class, pixels in [0, 1]) such that
a linear softmax classifier trained on them alone classifies real digits.

    u = the images X_s (20 x 784, box [0, 1]), their labels fixed (0, 0, 1, 1, ..., 9, 9);
    v = (W, b) of a linear softmax classifier (784 x 10 + 10);
    g(u, v) = CE(softmax(X_s W + b), y_s) + (wd / 2) |W|^2          (train on the 20 images)
    f(u, v) = CE(softmax(X_r W + b), y_r) on a minibatch of real training images.

The L2 term makes g strongly convex in v (H_vv >= wd I), so v*(u) is unique and the exact
hypergradient is well defined; with wd small, H_vv is very ill-conditioned: its range is
spanned by the 20 images (rank <= 200 of the 7,850 dimensions), every other direction has
curvature wd. That is what makes the problem hard for methods that approximate
H_vv^-1 implicitly (see docs/which_solver.md).

Quality: `refit_accuracy`, the test accuracy of a classifier trained from zero on the 20
images alone (Newton's method on g, exact), which is what distillation is for; and
`lower_accuracy`, the test accuracy of the solver's own v.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf.datasets import mnist as mnist_data

IMAGES_PER_CLASS = 2
CLASSES = 10
PIXELS = 784


class Distillation(NamedTuple):
    problem: ptf.BilevelProblem
    images: tf.Variable          # u
    weights: tf.Variable         # W
    bias: tf.Variable            # b
    labels: tf.Tensor            # y_s
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    weight_decay: float


def _as_float(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, np.float32) / 255.0).reshape(len(x), PIXELS)


def build(seed: int = 0, *, weight_decay: float = 1e-3, data_dir: Optional[str] = None,
          init: str = "noise") -> Distillation:
    """The distillation problem. ``init``: ``"noise"`` (pixels Uniform[0, 1]) or ``"real"``
    (two random training images of each class)."""
    data = mnist_data.load_mnist(data_dir, download=False)
    x_train, y_train = _as_float(data.x_train), np.asarray(data.y_train, np.int32)
    x_test, y_test = _as_float(data.x_test), np.asarray(data.y_test, np.int32)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES, dtype=np.int32), IMAGES_PER_CLASS)
    if init == "noise":
        start = rng.uniform(0.0, 1.0, size=(len(labels), PIXELS))
    elif init == "real":
        start = np.stack([x_train[rng.choice(np.flatnonzero(y_train == c))] for c in labels])
    else:
        raise ValueError(f"init must be 'noise' or 'real', got {init!r}")
    images = tf.Variable(start.astype(np.float32), name="distilled_images")
    weights = tf.Variable(tf.zeros([PIXELS, CLASSES]), name="W")
    bias = tf.Variable(tf.zeros([CLASSES]), name="b")
    y_s = tf.constant(labels)

    def lower_loss(batch: Any) -> tf.Tensor:
        logits = images @ weights + bias
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y_s, logits))
        return ce + 0.5 * weight_decay * tf.reduce_sum(tf.square(weights))

    def upper_loss(batch: Any) -> tf.Tensor:
        x, y = batch
        logits = x @ weights + bias
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    problem = ptf.BilevelProblem(upper_loss, lower_loss, images, [weights, bias], upper_bounds=(0.0, 1.0))
    return Distillation(problem, images, weights, bias, y_s, (x_train, y_train), (x_test, y_test),
                        weight_decay)


def batches(d: Distillation, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled minibatches of real training images, repeated forever."""
    x, y = d.train
    return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
            .batch(batch_size, drop_remainder=True).repeat())


def accuracy(weights: np.ndarray, bias: np.ndarray, data: tuple[np.ndarray, np.ndarray]) -> float:
    x, y = data
    return float(np.mean(np.argmax(x @ weights + bias, axis=1) == y))


def lower_accuracy(d: Distillation) -> float:
    """Test accuracy of the solver's current v."""
    return accuracy(d.weights.numpy(), d.bias.numpy(), d.test)


def refit(d: Distillation, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """argmin_v g(u, v) for the current images, from v = 0 (float64 L-BFGS on the strongly
    convex lower problem, to |grad g| <= ``tol``): the classifier a user would train on them."""
    from scipy.optimize import minimize

    x = d.images.numpy().astype(np.float64)
    y = np.eye(CLASSES)[d.labels.numpy()]
    n, wd = len(x), d.weight_decay

    def loss_and_grad(theta):
        w, b = theta[:-CLASSES].reshape(PIXELS, CLASSES), theta[-CLASSES:]
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        r = (np.exp(log_p) - y) / n
        value = -np.sum(y * log_p) / n + 0.5 * wd * np.sum(w * w)
        return value, np.concatenate([(x.T @ r + wd * w).ravel(), r.sum(axis=0)])

    result = minimize(loss_and_grad, np.zeros(PIXELS * CLASSES + CLASSES), jac=True, method="L-BFGS-B",
                      options={"gtol": tol, "maxiter": 20000, "maxcor": 30})
    theta = result.x
    return theta[:-CLASSES].reshape(PIXELS, CLASSES).astype(np.float32), theta[-CLASSES:].astype(np.float32)


def refit_accuracy(d: Distillation) -> float:
    """Test accuracy of a classifier trained from zero on the distilled images alone."""
    return accuracy(*refit(d), d.test)


# ---------------------------------------------------------------- the direction study
def _fixed_u_solver(d: Distillation, method: str, rho0: float, lr_v: float):
    """``method`` with u frozen (upper step size 0) and, for Penalty, rho, lambda, nu fixed
    (eps0 so small that the tolerance test never passes)."""
    if method == "penalty":
        return ptf.make("penalty", d.problem, lr_u=0.0, lr_v=lr_v, rho0=rho0, eps0=1e-30)
    return ptf.make("aid", d.problem, lr_u=0.0, lr_v=0.0)


def direction_study(weight_decay: float, method: str, rho0: float, counts: list[int], *, lr_v: float = 1e-3,
                    seed: int = 0, data_dir: Optional[str] = None) -> list[dict[str, float]]:
    """How good the u-direction gets at a fixed u as the lower iterations accumulate.

    From v = v*(u) (`refit`) at the initial images, on one fixed batch of 1,000 real
    images: Penalty runs lower steps (Adam at ``lr_v``, rho = ``rho0``, lambda and nu at
    their defaults, nothing else changing), AID runs K conjugate-gradient steps on
    ``H_vv p = f_v`` (v stays at v*). At each of ``counts`` (lower steps for Penalty, K for
    AID) it records the cosine and relative error of the u-direction against the exact
    hypergradient, |grad_v g| and f at the solver's v, and the test accuracy of that v.
    """
    from penalty_tf import diagnostics

    d = build(seed, weight_decay=weight_decay, data_dir=data_dir)
    weights, bias = refit(d)
    d.weights.assign(weights)
    d.bias.assign(bias)
    batch = next(iter(batches(d, 1000, seed + 1)))
    solver = _fixed_u_solver(d, method, rho0, lr_v)
    rows, done = [], 0
    for count in counts:
        if method == "penalty":
            while done < count:
                n = min(count - done, 1000)
                solver.step(batch, n)
                done += n
        elif count:
            solver.step(batch, 1, linear_steps=count)
        check = diagnostics.check_hypergradient(solver, batch)
        f = solver.problem.upper_loss(batch)
        with tf.GradientTape() as tape:
            g = solver.problem.lower_loss(batch)
        lower_grad = tape.gradient(g, [d.weights, d.bias])
        rows.append({"count": count, "cosine": check.cosine, "relative_error": check.relative_error,
                     "direction_norm": check.direction_norm, "exact_norm": check.exact_norm,
                     "lower_grad_norm": float(tf.linalg.global_norm(lower_grad)), "f": float(f),
                     "lower_accuracy": lower_accuracy(d)})
    return rows


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """``python -m benchmarks.distillation --weight-decay 1e-3 1e-1 --rho0 1e-2 1 --out DIR``:
    `direction_study` for every weight decay x (Penalty at every rho0, AID); result.json."""
    import argparse
    import time

    from penalty_tf.paper import experiment

    parser = argparse.ArgumentParser(prog="python -m benchmarks.distillation", description=direction_study.__doc__)
    parser.add_argument("--weight-decay", nargs="+", type=float, default=[1e-3, 1e-2, 1e-1])
    parser.add_argument("--rho0", nargs="+", type=float, default=[1e-2, 1.0, 100.0])
    parser.add_argument("--lower-steps", nargs="+", type=int, default=[0, 10, 100, 1000, 10000],
                        help="Penalty: lower steps at which the direction is checked")
    parser.add_argument("--cg-steps", nargs="+", type=int, default=[0, 10, 30, 100, 300],
                        help="AID: CG steps at which the direction is checked")
    parser.add_argument("--lr-v", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = experiment.check_out_dir(args.out)
    start = time.perf_counter()
    metrics: dict[str, Any] = {}
    for wd in args.weight_decay:
        for rho0 in args.rho0:
            key = f"wd={wd:g}/penalty/rho0={rho0:g}"
            metrics[key] = direction_study(wd, "penalty", rho0, args.lower_steps, lr_v=args.lr_v, seed=args.seed,
                                           data_dir=args.data_dir)
            print(key, [(r["count"], round(r["cosine"], 3)) for r in metrics[key]], flush=True)
        key = f"wd={wd:g}/aid"
        metrics[key] = direction_study(wd, "aid", 0.0, args.cg_steps, seed=args.seed, data_dir=args.data_dir)
        print(key, [(r["count"], round(r["cosine"], 3)) for r in metrics[key]], flush=True)
    experiment.write_result(out, experiment="benchmarks.distillation", method="penalty+aid", config=vars(args),
                            metrics=metrics, published={}, wall_time_s=time.perf_counter() - start)
    return metrics


if __name__ == "__main__":
    from penalty_tf.paper import experiment as _experiment
    _experiment.run_main(main)
