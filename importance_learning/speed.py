"""Seconds per upper-level iteration of importance learning vs a plain training step.

    python -m importance_learning.speed --model mnist_cnn --lower-steps 20 --repeats 5 --out DIR

Measures, on one fixed minibatch of ``--batch-size`` random images (timing does not depend
on the values), for graph mode and XLA (``--xla both``):

* a plain training step (forward, backward, Adam) of the classifier;
* a Penalty upper-level iteration at T = ``--lower-steps`` (T lower steps, the u-step and the
  tolerance test) and at T = 1; the difference / (T - 1) is the cost of one lower step;
* an ApproxGrad upper-level iteration (T lower + T linear-system steps) likewise;
* with ``--methods``, any registered solver (``all``: every one, `penalty_tf.solvers.names`)
  likewise, with K = T for a solver that has ``linear_steps`` (ApproxGrad, AID).

For each method it also reports the iteration's arithmetic from `BilevelSolver.cost` at the
timed counts, ``arithmetic_units = gradients + hvps`` (gradients of f or g and Hessian- or
mixed-vector products; ``forwards``, loss values not differentiated, are reported apart),
and ``upper_iteration_over_arithmetic = upper_iteration_s / (arithmetic_units *
plain_step_s)``: how much an iteration costs over its passes priced at one plain step each
(the target: at most 1.5). The same at T = 1 is ``upper_iteration_T1_over_arithmetic``.
Every method starts from the same classifier weights; Penalty and ApproxGrad use the
paper's settings, the others their defaults with small learning rates (`SETTINGS`).

With ``--parts`` it also measures where a Penalty lower step's time goes, each pass as one
compiled call on the same batch: the forward pass of g, g's gradient (forward + backward),
g's gradient together with its Hessian-vector product ``H_vv w`` (one nested-tape pass,
`penalty_tf.autodiff.gradient_plus_hvp`), the same by forward-over-reverse
(``gradient_and_hvp_forward_over_reverse``: a `tf.autodiff.ForwardAccumulator` around the
gradient, for a w fixed beforehand; Penalty's w = nu + rho G needs G first, so it would
add a gradient), and that pass with f's gradient on a validation
batch added — the lower step's direction ``grad f + H (nu + rho G)`` without the optimizer
update. ``--threads 1`` pins TensorFlow to one thread (cleaner per-op costs). ``--precision
mixed_bfloat16`` times the same under Keras' bfloat16 compute policy (float32 variables).

Reports medians over ``--repeats`` calls after one warm-up call, and the ratios to the
plain step. By default the clock is the process's CPU time (``--clock cpu``: seconds of
all its threads), which other programs on a shared machine do not inflate; with ``--clock
wall`` on an idle machine, divide by the cores used. Compare ratios.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time

import numpy as np

from penalty_tf.paper import experiment


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}

#: The settings each method is timed with: Penalty and ApproxGrad as in the paper's importance
#: learning; the others their config's defaults with small learning rates (the timing hardly
#: depends on the values, but a NaN would stop the run). ``default`` is for any other method.
SETTINGS = {"penalty": {"lr_u": 3.0, "lr_v": 1e-4, "nu0": 1e-6},
            "approxgrad": {"lr_u": 3.0, "lr_v": 1e-4, "lr_p": 1e-5, "sig": 1e-3},
            "default": {"lr_u": 1e-3, "lr_v": 1e-4}}


def method_names(requested) -> list[str]:
    """``requested`` (``all`` = every registered solver) checked against the registry."""
    from penalty_tf import solvers

    known = solvers.names()
    methods = known if "all" in requested else list(dict.fromkeys(requested))
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise experiment.ExperimentError(f"--methods: unknown method(s) {', '.join(unknown)}; choose from "
                                         f"{', '.join(known)} or all")
    return methods


def _median_time(fn, repeats: int, clock: str = "cpu") -> float:
    """Median over ``repeats`` calls after one warm-up call. ``cpu`` = the process's CPU
    seconds (all threads): robust when other programs share the cores, as here; ``wall`` =
    elapsed seconds."""
    fn()  # warm-up (tracing, compilation)
    times = []
    now = CLOCK[clock]
    for _ in range(repeats):
        start = now()
        fn()
        times.append(now() - start)
    return statistics.median(times)


def _model_and_batches(model_name: str, batch_size: int):
    """The seeded classifier and one fixed (x, y, x_val, y_val) batch of random images."""
    import tensorflow as tf

    from penalty_tf.models import classifiers

    tf.keras.utils.set_random_seed(0)
    model = classifiers.build(model_name)
    shape = (batch_size,) + tuple(model.input_shape[1:])
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(2):
        batches += [tf.constant(rng.random(shape, np.float32)),
                    tf.constant(rng.integers(0, 10, batch_size), tf.int32)]
    return model, tuple(batches)


def _counts(solver, steps: int) -> dict[str, int]:
    """K = ``steps`` for every count the solver has besides T (e.g. ``linear_steps``)."""
    return {name: steps for name in inspect.signature(solver.cost).parameters if name != "lower_steps"}


def measure(model_name: str, lower_steps: int, batch_size: int, repeats: int, xla: bool,
            methods=("penalty", "approxgrad"), clock: str = "cpu") -> dict:
    import tensorflow as tf

    from importance_learning.bilevel import Classifier, importance_problem
    from penalty_tf import solvers
    from penalty_tf.optimizers import tf1_adam

    model, (x, y, xv, yv) = _model_and_batches(model_name, batch_size)
    initial = [w.numpy() for w in model.weights]
    train = Classifier(model, jit_compile=xla).train_step(tf1_adam(1e-4))
    out = {"plain_step_s": _median_time(lambda: float(train((x, y))), repeats, clock)}
    plain = out["plain_step_s"]
    for method in methods:
        model.set_weights(initial)          # every method from the same point (no drift to NaN)
        slot = tf.Variable(tf.zeros(batch_size), name="importance_slot")
        settings = SETTINGS.get(method, SETTINGS["default"])
        solver = solvers.make(method, importance_problem(model, slot), jit_compile=xla, **settings)
        batch = (x, y, xv, yv)
        extra, extra1 = _counts(solver, lower_steps), _counts(solver, 1)
        t_full = _median_time(lambda: float(solver.step(batch, lower_steps=lower_steps, **extra)["f"]), repeats, clock)
        t_one = _median_time(lambda: float(solver.step(batch, lower_steps=1, **extra1)["f"]), repeats, clock)
        per_lower = (t_full - t_one) / max(lower_steps - 1, 1)
        out[f"{method}_upper_iteration_s"] = t_full
        out[f"{method}_upper_iteration_T1_s"] = t_one
        out[f"{method}_lower_step_s"] = per_lower
        out[f"{method}_lower_step_over_plain"] = per_lower / plain
        out[f"{method}_upper_iteration_over_plain"] = t_full / plain
        cost, cost1 = solver.cost(lower_steps, **extra), solver.cost(1, **extra1)
        units, units1 = cost["gradients"] + cost["hvps"], cost1["gradients"] + cost1["hvps"]
        out.update({f"{method}_{k}": n for k, n in cost.items()})
        out[f"{method}_arithmetic_units"] = units
        out[f"{method}_upper_iteration_over_arithmetic"] = t_full / (units * plain)
        out[f"{method}_arithmetic_units_T1"] = units1
        out[f"{method}_upper_iteration_T1_over_arithmetic"] = t_one / (units1 * plain)
    return out


def measure_parts(model_name: str, batch_size: int, repeats: int, xla: bool, clock: str = "cpu") -> dict:
    """Seconds of the passes that make up a Penalty lower step (see the module docstring)."""
    import tensorflow as tf

    from importance_learning.bilevel import Classifier, cross_entropy, importance_weighted_loss
    from penalty_tf import autodiff
    from penalty_tf.optimizers import tf1_adam
    from penalty_tf.solvers.base import as_tf_variable

    model, (x, y, xv, yv) = _model_and_batches(model_name, batch_size)
    v = [as_tf_variable(w) for w in model.trainable_variables]
    slot = tf.Variable(tf.zeros(batch_size), name="importance_slot")

    def f():
        return tf.reduce_mean(cross_entropy(model, xv, yv))

    def g():
        return importance_weighted_loss(model, slot, x, y)

    def direction(grad):
        return [0.01 * t for t in grad]

    fixed = [tf.fill(t.shape, 1e-3) for t in v]

    def forward_over_reverse():
        """G and H w for a w known beforehand, by a forward-mode JVP of the gradient."""
        with tf.autodiff.ForwardAccumulator(v, fixed) as accumulator:
            grad = autodiff.gradient(g, v)[1]
        return grad, accumulator.jvp(grad)

    passes = {
        "forward": g,
        "gradient": lambda: autodiff.gradient(g, v)[1],
        "gradient_and_hvp": lambda: autodiff.gradient_plus_hvp(None, g, v, direction, v).grads,
        "gradient_and_hvp_forward_over_reverse": forward_over_reverse,
        "lower_step_direction": lambda: autodiff.gradient_plus_hvp(f, g, v, direction, v).grads,
    }
    train = Classifier(model, jit_compile=xla).train_step(tf1_adam(1e-4))
    out = {"plain_step_s": _median_time(lambda: float(train((x, y))), repeats, clock)}
    for name, fn in passes.items():
        compiled = tf.function(fn, jit_compile=xla)
        out[f"{name}_s"] = _median_time(lambda: tf.nest.map_structure(np.asarray, compiled()), repeats, clock)
        out[f"{name}_over_plain"] = out[f"{name}_s"] / out["plain_step_s"]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist_cnn",
                        choices=["mnist_softmax", "mnist_cnn", "cifar10_cnn", "svhn_cnn"])
    parser.add_argument("--lower-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--xla", choices=["off", "on", "both"], default="both")
    parser.add_argument("--methods", nargs="+", default=["penalty", "approxgrad"],
                        help="registered solvers (penalty_tf.solvers.names()), or all")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="cpu: process CPU seconds (robust on a shared machine); wall: elapsed seconds")
    parser.add_argument("--parts", action="store_true",
                        help="also measure the passes that make up a Penalty lower step")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads (0: TensorFlow's default)")
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32",
                        help="Keras dtype policy of the model: mixed_bfloat16 computes the layers in "
                             "bfloat16 with float32 variables, gradients and losses")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.lower_steps < 2 or args.repeats < 1 or args.batch_size < 1 or args.threads < 0:
        raise experiment.ExperimentError(
            "--lower-steps must be >= 2, --repeats and --batch-size >= 1, --threads >= 0")
    if args.threads:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    args.methods = method_names(args.methods)
    import keras
    keras.mixed_precision.set_global_policy(args.precision)
    out_dir = experiment.resolve_out_dir(args, "importance_learning.speed")
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    metrics = {}
    with experiment.Timer() as timer:
        for xla in modes:
            key = "xla" if xla else "graph"
            metrics[key] = measure(args.model, args.lower_steps, args.batch_size, args.repeats, xla,
                                   tuple(args.methods), args.clock)
            print(key, {k: round(v, 4) for k, v in metrics[key].items()}, flush=True)
            if args.parts:
                metrics[f"{key}_parts"] = measure_parts(args.model, args.batch_size, args.repeats, xla,
                                                        args.clock)
                print(f"{key} parts", {k: round(v, 4) for k, v in metrics[f"{key}_parts"].items()},
                      flush=True)
    return experiment.write_result(out_dir, experiment="importance_learning.speed", method="+".join(args.methods),
                                   config=vars(args), metrics=metrics, published={},
                                   wall_time_s=timer.elapsed)


if __name__ == "__main__":
    experiment.run_main(main)
