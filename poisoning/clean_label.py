"""Clean-label feature-collision attack on dog-vs-fish with Penalty (docs/original.md §3.11).

    python -m poisoning.extract_features --data-dir DIR            # once
    python -m poisoning.clean_label --data-dir DIR --targets 20 --out runs/clean_label

For each target (a test image the clean classifier gets right) one poison image is made
from the training image of the other class closest to the target in InceptionV3 feature
space (the *base*), keeping the base's correct label, and optimised by Penalty through
the frozen InceptionV3 so that a classifier retrained with it misclassifies the target:

    f = CE(W phi_t + b, wrong label of t) + ||phi(u) - phi_t||^2 + beta ||u - base||^2
    g = mean CE of (W, b) over [phi(u); the training features]   (labels: base's; true)

u = the poison image (299 x 299 x 3, clipped to the [min, max] of the training images
after every step), v = (W 2048 x 2 ~ N(0, 0.01^2), b = 0). Per target, as the original:
re-initialise (W, b), the RMSProp state, Penalty's Adam states and its rho, lambda, eps,
nu and learning rates; train the clean classifier (2,001 full-batch TF1-RMSProp(1e-3)
steps on the training features); pick the next correctly classified test image as the
target; pick the base; re-initialise (W, b) at random (the original's
``reset_lower_level``: the bilevel phase starts from an untrained classifier); 201 Penalty
updates of T = 10 (lr_u 1e-2, lr_v 1e-3, rho_0 = lambda_0 = eps_0 = 1, nu_0 0);
retrain (W, b) from scratch on the training features + phi(poison) with the base label;
success if the target is misclassified. Paper: 100 % success.

Deviations: the run stops cleanly (and says so) when no correctly classified test image
remains (the original crashed); ``--targets N`` limits how many targets are attacked;
``--seed`` seeds the initialisations (the original seeded nothing). As the original, the
first 30 successes are saved as (target, base, poison) triples mapped to [0, 1].

Writes result.json (``success_rate`` = found / attempted, per-target records),
triples.npz (target_instances, base_instances, poisoned_instances, unsuccessful) and
triples.png (target | base | poison | amplified difference, one row per success).
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Sequence

import numpy as np

from penalty_tf import losses
from penalty_tf.paper import experiment, published as paper

NAME = "poisoning.clean_label"
MAX_SAVED = 30


# ------------------------------------------------------------- TF1 RMSProp helper

class TF1RMSProp:
    """TF1's ``tf.train.RMSPropOptimizer`` (decay 0.9, momentum 0, epsilon 1e-10, not
    centered), which the original's clean-label ``train_simple`` used. Unlike Keras'
    RMSprop, the mean-square accumulator starts at ONE and epsilon sits INSIDE the root::

        ms <- decay * ms + (1 - decay) * grad^2
        w  <- w - lr * grad / sqrt(ms + epsilon)
    """

    def __init__(self, variables: Sequence, learning_rate: float = 1e-3, decay: float = 0.9,
                 epsilon: float = 1e-10):
        import tensorflow as tf

        self.variables = list(variables)
        self.learning_rate = float(learning_rate)
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.ms = [tf.Variable(tf.ones(v.shape, v.dtype), trainable=False, name="rms")
                   for v in self.variables]

    def apply(self, grads: Sequence) -> None:
        import tensorflow as tf

        for var, ms, grad in zip(self.variables, self.ms, grads):
            new_ms = self.decay * ms + (1.0 - self.decay) * tf.square(grad)
            ms.assign(new_ms)
            var.assign_sub(self.learning_rate * grad / tf.sqrt(new_ms + self.epsilon))

    def reset(self) -> None:
        """Accumulators back to one (the original re-ran the optimizer's initialisers)."""
        import tensorflow as tf

        for ms in self.ms:
            ms.assign(tf.ones(ms.shape, ms.dtype))


# ------------------------------------------------------------------- the problem

class CleanLabelProblem:
    """Classifier variables, the poison variable, the losses and the plain training."""

    def __init__(self, model, image_shape: tuple, low: float, high: float,
                 rng: np.random.Generator, lr: float = 1e-3):
        import tensorflow as tf

        self.tf = tf
        self.model = model
        self.rng = rng
        self.low, self.high = float(low), float(high)
        self.W = tf.Variable(tf.zeros((2048, 2)), name="W")
        self.b = tf.Variable(tf.zeros((2,)), name="b")
        self.u = tf.Variable(tf.zeros((1,) + tuple(image_shape)), name="poison")
        self.rmsprop = TF1RMSProp([self.W, self.b], lr)
        self.beta = tf.Variable(0.01, trainable=False, name="beta")
        self.init_classifier()
        self._train = tf.function(self._train_loop, autograph=False)
        self._features = tf.function(lambda x: self.model(x, training=False), autograph=False)

    def init_classifier(self) -> None:
        """W ~ Normal(0, 0.01^2), b = 0 (the original's initialisers)."""
        self.W.assign(self.rng.normal(0.0, 0.01, size=(2048, 2)).astype(np.float32))
        self.b.assign(np.zeros(2, np.float32))

    def logits(self, features):
        return self.tf.matmul(features, self.W) + self.b

    def phi(self, images):
        return self.model(images, training=False)

    def _phi_u(self, batch: dict):
        """phi(u): from the batch when the solver's ``lower_step_batch`` hook put it there
        (computed once per iteration: u is fixed during the lower steps), else InceptionV3."""
        return batch["poison_features"] if "poison_features" in batch else self.phi(self.u)

    def with_poison_features(self, batch: dict) -> dict:
        """The ``lower_step_batch`` hook: the batch plus phi(u) (one Inception forward per
        iteration instead of one per lower step as in the original; same values)."""
        return {**batch, "poison_features": self.phi(self.u)}

    # -- bilevel losses --------------------------------------------------------------
    def upper_loss(self, batch: dict):
        tf = self.tf
        term1 = tf.reduce_mean(losses.softmax_cross_entropy(
            batch["target_wrong_label"], self.logits(batch["target_features"])))
        term2 = tf.reduce_sum(tf.square(self._phi_u(batch) - batch["target_features"]))
        term3 = tf.reduce_sum(tf.square(self.u - batch["base_image"]))
        return term1 + term2 + self.beta * term3

    def lower_loss(self, batch: dict):
        tf = self.tf
        logits = tf.concat([self.logits(self._phi_u(batch)), self.logits(batch["train_features"])], 0)
        labels = tf.concat([batch["poison_label"], batch["train_labels"]], 0)
        return tf.reduce_mean(losses.softmax_cross_entropy(labels, logits))

    def project(self, x):
        return self.tf.clip_by_value(x, self.low, self.high)

    # -- plain training with TF1 RMSProp ---------------------------------------------
    def _train_loop(self, features, labels, steps):
        tf = self.tf

        def body(i):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
                    labels=labels, logits=self.logits(features)))
            self.rmsprop.apply(tape.gradient(loss, [self.W, self.b]))
            return (i + 1,)

        tf.while_loop(lambda i: i < steps, body, (tf.constant(0),))
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
            labels=labels, logits=self.logits(features)))

    def train_simple(self, features: np.ndarray, labels: np.ndarray, steps: int) -> float:
        """``steps`` full-batch TF1-RMSProp steps on mean CE; returns the final loss."""
        tf = self.tf
        return float(self._train(tf.constant(features, tf.float32),
                                 tf.constant(np.eye(2, dtype=np.float32)[labels]),
                                 tf.constant(int(steps))))

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.argmax(np.asarray(features, np.float32) @ self.W.numpy() + self.b.numpy(), axis=1)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        z = np.asarray(features, np.float64) @ self.W.numpy() + self.b.numpy()
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def poison_features(self) -> np.ndarray:
        return self._features(self.u).numpy()


def next_target(predictions: np.ndarray, labels: np.ndarray, start: int) -> int | None:
    """First index >= start whose prediction is correct, or None (no target remains)."""
    hits = np.flatnonzero(predictions[start:] == labels[start:])
    return int(start + hits[0]) if len(hits) else None


def closest_base(train_features: np.ndarray, train_labels: np.ndarray,
                 target_features: np.ndarray, target_label: int) -> tuple[int, float]:
    """The training example of another class closest to the target (Euclidean, features)."""
    candidates = np.flatnonzero(train_labels != target_label)
    dist = np.linalg.norm(train_features[candidates] - target_features[None, :], axis=1)
    best = int(np.argmin(dist))
    return int(candidates[best]), float(dist[best])


def save_triples_figure(path, targets, bases, poisons) -> None:
    n = len(targets)
    fig = experiment.new_figure(figsize=(8, 2.1 * max(n, 1)))
    axes = fig.subplots(max(n, 1), 4, squeeze=False)
    titles = ("target", "base", "poison", "|poison - base| x10")
    for i in range(n):
        diff = np.clip(np.abs(poisons[i] - bases[i]) * 10, 0, 1)
        for j, img in enumerate((targets[i], bases[i], poisons[i], diff)):
            axes[i][j].imshow(np.clip(img, 0, 1))
            axes[i][j].set_axis_off()
            if i == 0:
                axes[i][j].set_title(titles[j], fontsize=9)
    if n == 0:
        axes[0][0].text(0.5, 0.5, "no successful poison", ha="center")
        for ax in axes[0]:
            ax.set_axis_off()
    experiment.save_figure_atomic(fig, path, dpi=80, bbox_inches="tight")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m poisoning.clean_label",
                                     description=__doc__.split("\n\n")[0])
    experiment.add_common_flags(parser, methods=["penalty"], default_method="penalty",
                                epochs=201, lower_steps=10)
    parser.add_argument("--targets", type=int, default=None,
                        help="how many test targets to attack (default: until none remains)")
    parser.add_argument("--beta", type=float, default=0.01, help="weight of ||u - base||^2")
    parser.add_argument("--train-steps", type=int, default=2001,
                        help="TF1-RMSProp steps of each (re)training of the classifier")
    parser.add_argument("--weights", default="imagenet",
                        help="InceptionV3 weights: 'imagenet', a weights file, or 'none'")
    parser.add_argument("--lr-u", type=float, default=1e-2)
    parser.add_argument("--lr-v", type=float, default=1e-3)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.targets is not None and args.targets < 1:
        raise experiment.ExperimentError(f"--targets must be >= 1, got {args.targets}")
    if args.train_steps < 1:
        raise experiment.ExperimentError(f"--train-steps must be >= 1, got {args.train_steps}")
    if args.beta < 0:
        raise experiment.ExperimentError(f"--beta must be >= 0, got {args.beta}")
    out = experiment.resolve_out_dir(args, NAME)
    experiment.seed_everything(args.seed)
    from penalty_tf.datasets import dogfish
    from penalty_tf.solvers import Penalty, PenaltySchedule
    from poisoning.inception import feature_model

    start = time.perf_counter()
    data = dogfish.load_dogfish(args.data_dir)
    train_f, test_f = dogfish.load_features(args.data_dir, len(data.x_train), len(data.x_test))
    train_f, test_f = train_f.astype(np.float32), test_f.astype(np.float32)
    low, high = float(data.x_train.min()), float(data.x_train.max())
    model = feature_model(args.weights, image_size=data.x_train.shape[1])

    import tensorflow as tf

    problem = CleanLabelProblem(model, data.x_train.shape[1:], low, high,
                                np.random.default_rng([args.seed, 2]), lr=args.lr_v)
    problem.beta.assign(args.beta)
    solver = Penalty(problem.upper_loss, problem.lower_loss, [problem.u], [problem.W, problem.b],
                     upper_optimizer=args.lr_u, lower_optimizer=args.lr_v,
                     schedule=PenaltySchedule.single_group(rho0=1.0, lamb0=1.0, eps0=1.0, nu0=0.0),
                     upper_bounds=problem.project, lower_initializer=problem.init_classifier,
                     lower_step_batch=problem.with_poison_features)
    one_hot = np.eye(2, dtype=np.float32)
    train_labels = tf.constant(one_hot[data.y_train])
    train_features = tf.constant(train_f)

    records: list[dict[str, Any]] = []
    saved = {"target": [], "base": [], "poison": []}
    unsuccessful: list[int] = []
    found, target_index, stop_reason = 0, -1, "attacked every requested target"
    limit = args.targets if args.targets is not None else len(data.x_test)
    bar = experiment.progress(limit, quiet=args.quiet, unit_name="target")
    timings = {"clean_training_s": 0.0, "bilevel_s": 0.0, "retraining_s": 0.0}
    for attempt in range(len(data.x_test)):
        if len(records) >= limit:
            break
        # 1-2. fresh classifier, optimizer states and penalty state; clean training.
        problem.init_classifier()
        problem.rmsprop.reset()
        solver.restart()
        t0 = time.perf_counter()
        problem.train_simple(train_f, data.y_train, args.train_steps)
        timings["clean_training_s"] += time.perf_counter() - t0
        clean_test_acc = float(np.mean(problem.predict(test_f) == data.y_test))
        # 3. the next correctly classified test image.
        index = next_target(problem.predict(test_f), data.y_test, target_index + 1)
        if index is None:
            stop_reason = (f"no correctly classified test image after index {target_index} "
                           "remains (the original crashed here)")
            if not args.quiet:
                print(f"\nstopping: {stop_reason}")
            break
        target_index = index
        label = int(data.y_test[index])
        # 4-5. base = closest training image of the other class; poison starts there.
        base, dist = closest_base(train_f, data.y_train, test_f[index], label)
        if dist <= 0:
            raise experiment.ExperimentError(
                f"test image {index} has the same features as training image {base}: the "
                "dog-fish file holds a duplicate across train and test")
        problem.u.assign(data.x_train[base][None])
        batch = {"train_features": train_features, "train_labels": train_labels,
                 "target_features": tf.constant(test_f[index][None]),
                 "target_wrong_label": tf.constant(one_hot[[1 - label]]),
                 "base_image": tf.constant(data.x_train[base][None]),
                 "poison_label": tf.constant(one_hot[[int(data.y_train[base])]])}
        # 6-7. random classifier, then the bilevel updates.
        solver.reset_lower()
        t0 = time.perf_counter()
        final = solver.steps(batch, args.epochs, args.lower_steps)
        timings["bilevel_s"] += time.perf_counter() - t0
        # 8. retrain from scratch with the poison's features; test the target. Diagnostic
        # (not in the original): the same retraining, from the same initial classifier,
        # with the unmodified base image instead, to isolate what the optimisation did.
        phi_poison = problem.poison_features()
        base_label = int(data.y_train[base])
        init = problem.rng.bit_generator.state
        t0 = time.perf_counter()
        wrong_prob = {}
        for name, added in (("base", train_f[base][None]), ("poison", phi_poison)):
            problem.rng.bit_generator.state = init
            problem.init_classifier()
            problem.rmsprop.reset()
            problem.train_simple(np.concatenate([train_f, added]),
                                 np.concatenate([data.y_train, [base_label]]), args.train_steps)
            wrong_prob[name] = float(problem.probabilities(test_f[index][None])[0, 1 - label])
        timings["retraining_s"] += time.perf_counter() - t0
        success = bool(problem.predict(test_f[index][None])[0] != label)
        poison = problem.u.numpy()[0]
        if success:
            if found < MAX_SAVED:
                saved["target"].append((data.x_test[index] + 1) * 0.5)
                saved["base"].append((data.x_train[base] + 1) * 0.5)
                saved["poison"].append((poison + 1) * 0.5)
            found += 1
        else:
            unsuccessful.append(attempt)
        records.append({"attempt": attempt, "target_index": index, "target_label": label,
                        "base_index": base, "feature_distance": dist, "success": success,
                        "clean_test_accuracy": 100.0 * clean_test_acc,
                        "target_wrong_class_prob": wrong_prob["poison"],
                        "target_wrong_class_prob_with_base": wrong_prob["base"],
                        "poison_feature_distance": float(np.linalg.norm(phi_poison[0] - test_f[index])),
                        "poison_pixel_change_max": float(np.abs(poison - data.x_train[base]).max()),
                        "final": {k: float(v) for k, v in final.items()
                                  if k not in ("status", "failed_iteration")}})
        bar.update(len(records), values=[("found", found)])
        if not args.quiet:
            print(f"\ntarget {index} ({'fish' if label else 'dog'} label {label}), base {base}: "
                  f"{'success' if success else 'no success'}; found {found} out of {len(records)}")

    attempted = len(records)
    images = {k: (np.stack(v) if v else np.zeros((0,) + data.x_train.shape[1:], np.float32))
              for k, v in saved.items()}
    experiment.save_npz_atomic(out / "triples.npz", target_instances=images["target"],
                               base_instances=images["base"], poisoned_instances=images["poison"],
                               unsuccessful=np.array(unsuccessful, np.int64))
    save_triples_figure(out / "triples.png", images["target"], images["base"], images["poison"])
    lift = [r["target_wrong_class_prob"] - r["target_wrong_class_prob_with_base"] for r in records]
    metrics = {"found": found, "attempted": attempted,
               "mean_wrong_class_prob_lift": float(np.mean(lift)) if lift else None,
               "success_rate": (100.0 * found / attempted) if attempted else None,
               "unit": "percent", "stop_reason": stop_reason, "timings": timings,
               "targets": records}
    if not args.quiet:
        print(f"clean-label attack: {found} of {attempted} targets misclassified")
    return experiment.write_result(out, experiment=NAME, method="penalty", config=vars(args),
                                   metrics=metrics,
                                   published=paper.published_dict(experiment=NAME, method="penalty"),
                                   wall_time_s=time.perf_counter() - start)


if __name__ == "__main__":
    experiment.run_main(main)
