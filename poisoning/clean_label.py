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

The run checkpoints after every target and every ``--checkpoint-every`` bilevel updates
of a target; ``--resume`` continues from the last checkpoint with the same result.

Writes result.json (``success_rate`` = found / attempted, per-target records),
triples.npz (target_instances, base_instances, poisoned_instances, unsuccessful) and
triples.png (target | base | poison | amplified difference, one row per success).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from penalty_tf import losses, optimizers, solvers, training
from penalty_tf.paper import experiment, published as paper
from penalty_tf.problem import BilevelProblem
from poisoning import runs, settings as run_settings
from poisoning.settings import CleanLabelSettings

NAME = "poisoning.clean_label"
MAX_SAVED = 30


# ------------------------------------------------------------------- the problem

class CleanLabelProblem:
    """Classifier variables, the poison variable, the losses and the plain training."""

    def __init__(self, model, image_shape: tuple, low: float, high: float,
                 rng: np.random.Generator, *, lr: float, beta: float):
        self.model = model
        self.rng = rng
        self.low, self.high = float(low), float(high)
        self.W = tf.Variable(tf.zeros((2048, 2)), name="W")
        self.b = tf.Variable(tf.zeros((2,)), name="b")
        self.u = tf.Variable(tf.zeros((1,) + tuple(image_shape)), name="poison")
        self.rmsprop = optimizers.TF1RMSProp([self.W, self.b], lr)
        self.beta = tf.Variable(beta, dtype=tf.float32, trainable=False, name="beta")
        self.init_classifier()
        self._train = optimizers.make_train_loop(self.training_loss, [self.W, self.b], self.rmsprop)
        self._features = tf.function(lambda x: self.model(x, training=False), autograph=False)

    def init_classifier(self) -> None:
        """W ~ Normal(0, 0.01^2), b = 0 (the original's initialisers)."""
        self.W.assign(self.rng.normal(0.0, 0.01, size=(2048, 2)).astype(np.float32))
        self.b.assign(np.zeros(2, np.float32))

    def logits(self, features):
        """features W + b."""
        return tf.matmul(features, self.W) + self.b

    def phi(self, images):
        """InceptionV3 features (frozen, inference mode)."""
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
        """f = CE(W phi_t + b, wrong label) + ||phi(u) - phi_t||^2 + beta ||u - base||^2."""
        term1 = tf.reduce_mean(losses.softmax_cross_entropy(
            batch["target_wrong_label"], self.logits(batch["target_features"])))
        term2 = tf.reduce_sum(tf.square(self._phi_u(batch) - batch["target_features"]))
        term3 = tf.reduce_sum(tf.square(self.u - batch["base_image"]))
        return term1 + term2 + self.beta * term3

    def lower_loss(self, batch: dict):
        """g = mean CE of (W, b) over [phi(u); the training features]."""
        logits = tf.concat([self.logits(self._phi_u(batch)), self.logits(batch["train_features"])], 0)
        labels = tf.concat([batch["poison_label"], batch["train_labels"]], 0)
        return tf.reduce_mean(losses.softmax_cross_entropy(labels, logits))

    def project(self, x):
        """The poison clipped to the [min, max] of the training images."""
        return tf.clip_by_value(x, self.low, self.high)

    def bilevel_problem(self) -> BilevelProblem:
        """u = the poison (projected), v = (W, b), re-initialised by `init_classifier`."""
        return BilevelProblem(self.upper_loss, self.lower_loss, [self.u], [self.W, self.b],
                              upper_bounds=self.project, lower_initializer=self.init_classifier,
                              lower_step_batch=self.with_poison_features)

    # -- plain training with TF1 RMSProp ---------------------------------------------
    def training_loss(self, batch: tuple):
        """Mean fused CE of (W, b) on ``batch = (features, one-hot labels)``."""
        features, labels = batch
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
            labels=labels, logits=self.logits(features)))

    def train_fresh(self, features: np.ndarray, labels: np.ndarray, steps: int) -> None:
        """A fresh classifier (`init_classifier`, RMSProp accumulators at one) trained by
        ``steps`` full-batch steps ``(W, b) <- TF1RMSProp((W, b), grad training_loss)``."""
        self.init_classifier()
        self.rmsprop.reset()
        self._train((tf.constant(features, tf.float32), tf.constant(np.eye(2, dtype=np.float32)[labels])),
                    tf.constant(int(steps)))

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.argmax(np.asarray(features, np.float32) @ self.W.numpy() + self.b.numpy(), axis=1)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """softmax(features W + b) in float64."""
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


# --------------------------------------------------------------------- the attack

@dataclasses.dataclass
class Inputs:
    """The dog-fish images (in [-1, 1]), their labels and InceptionV3 features."""

    data: Any
    train_f: np.ndarray
    test_f: np.ndarray

    @classmethod
    def load(cls, data_dir: Optional[str]) -> "Inputs":
        from penalty_tf.datasets import dogfish

        data = dogfish.load_dogfish(data_dir)
        train_f, test_f = dogfish.load_features(data_dir, len(data.x_train), len(data.x_test))
        return cls(data, train_f.astype(np.float32), test_f.astype(np.float32))


def fresh_state() -> dict[str, Any]:
    """The JSON state of a run before its first target. ``current``: the target under
    attack (None between targets)."""
    return {"records": [], "unsuccessful": [], "found": 0, "target_index": -1,
            "stop_reason": "attacked every requested target", "current": None,
            "timings": {"clean_training_s": 0.0, "bilevel_s": 0.0, "retraining_s": 0.0}}


class Attack:
    """The per-target protocol (module docstring, steps 1-8) on one problem and solver."""

    def __init__(self, inputs: Inputs, settings: CleanLabelSettings, problem: CleanLabelProblem,
                 quiet: bool):
        self.inputs, self.settings, self.problem, self.quiet = inputs, settings, problem, quiet
        self.solver = solvers.make("penalty", problem.bilevel_problem(), settings.solver)
        self.saved = tf.Variable(tf.zeros((MAX_SAVED,) + inputs.data.x_train.shape[1:]), name="saved_poisons")
        self.updates_run = 0   # bilevel updates of this process (for --stop-after)
        self.one_hot = np.eye(2, dtype=np.float32)
        self.train_batch = {"train_features": tf.constant(inputs.train_f),
                            "train_labels": tf.constant(self.one_hot[inputs.data.y_train])}

    def trackables(self) -> dict[str, Any]:
        """What the checkpoint holds: the solver (u, W, b, Adam moments, rho, lambda, eps,
        nu, counters), the RMSProp accumulators and the saved poisons."""
        return {"solver": self.solver, "rmsprop": self.problem.rmsprop.ms, "saved_poisons": self.saved}

    def run(self, options: runs.RunOptions) -> Optional[dict[str, Any]]:
        """Targets until ``--targets`` are attacked or none remains; the final JSON state,
        or None when ``--stop-after`` ended the process."""
        checkpoint, state = runs.open_checkpoint(options, {"classifier": self.problem.rng},
                                                 **self.trackables())
        state = state or fresh_state()
        n_test = len(self.inputs.data.x_test)
        limit = self.settings.targets if self.settings.targets is not None else n_test
        bar = experiment.progress(limit, quiet=self.quiet, unit_name="target")
        while len(state["records"]) < min(limit, n_test):
            if state["current"] is None:
                state["current"] = self.prepare_target(state)
                if state["current"] is None:
                    break
                checkpoint.save(**state)   # a kill before the first update keeps the clean training
            if not self.poison(state, checkpoint, options):
                return None
            self.record(state)
            checkpoint.save(**state)
            bar.update(len(state["records"]), values=[("found", state["found"])])
        return state

    def prepare_target(self, state: dict[str, Any]) -> Optional[dict[str, Any]]:
        """Steps 1-7 up to the bilevel phase: fresh Penalty state; clean training; the next
        correctly classified test image (the target; None, with the stop reason, when none
        remains); the base; u = base; a random classifier."""
        data, p = self.inputs.data, self.problem
        self.solver.restart()
        start = time.perf_counter()
        p.train_fresh(self.inputs.train_f, data.y_train, self.settings.train_steps)
        state["timings"]["clean_training_s"] += time.perf_counter() - start
        predictions = p.predict(self.inputs.test_f)
        clean_test_acc = float(np.mean(predictions == data.y_test))
        index = next_target(predictions, data.y_test, state["target_index"] + 1)
        if index is None:
            state["stop_reason"] = (f"no correctly classified test image after index "
                                    f"{state['target_index']} remains (the original crashed here)")
            if not self.quiet:
                print(f"\nstopping: {state['stop_reason']}")
            return None
        state["target_index"] = index
        label = int(data.y_test[index])
        base, dist = closest_base(self.inputs.train_f, data.y_train, self.inputs.test_f[index], label)
        if dist <= 0:
            raise experiment.ExperimentError(
                f"test image {index} has the same features as training image {base}: the "
                "dog-fish file holds a duplicate across train and test")
        p.u.assign(data.x_train[base][None])
        self.solver.reset_lower()
        return {"attempt": len(state["records"]), "target_index": index, "target_label": label,
                "base_index": base, "feature_distance": dist,
                "clean_test_accuracy": 100.0 * clean_test_acc, "updates": 0, "final": {}}

    def target_batch(self, current: dict[str, Any]) -> dict[str, tf.Tensor]:
        """The bilevel batch of a target: training features, the target's features and
        wrong label, the base image and its label."""
        data, index, base = self.inputs.data, current["target_index"], current["base_index"]
        return {**self.train_batch, "target_features": tf.constant(self.inputs.test_f[index][None]),
                "target_wrong_label": tf.constant(self.one_hot[[1 - current["target_label"]]]),
                "base_image": tf.constant(data.x_train[base][None]),
                "poison_label": tf.constant(self.one_hot[[int(data.y_train[base])]])}

    def poison(self, state: dict[str, Any], checkpoint: Any, options: runs.RunOptions) -> bool:
        """Step 7: the bilevel updates of the current target, a checkpoint every
        ``options.checkpoint_every``; False when ``--stop-after`` ended the process first."""
        current, epochs, every = state["current"], self.settings.epochs, options.checkpoint_every
        batch = self.target_batch(current)
        limit = options.update_limit(current["updates"], epochs, already=self.updates_run)
        while current["updates"] < limit:
            n = min(limit, current["updates"] + every - current["updates"] % every) - current["updates"]
            start = time.perf_counter()
            out = self.solver.steps(batch, n, self.settings.lower_steps)
            state["timings"]["bilevel_s"] += time.perf_counter() - start
            current["updates"] += n
            current["final"] = training.step_values(out)
            self.updates_run += n
            if current["updates"] % every == 0 or current["updates"] == epochs:
                checkpoint.save(**state)
        return current["updates"] == epochs

    def retrained_wrong_prob(self, added: np.ndarray, base_label: int, target: np.ndarray,
                             label: int) -> float:
        """Step 8: retrain from scratch on the training features plus ``added`` (labelled
        as the base); the probability of the target's wrong class."""
        data = self.inputs.data
        self.problem.train_fresh(np.concatenate([self.inputs.train_f, added]),
                                 np.concatenate([data.y_train, [base_label]]), self.settings.train_steps)
        return float(self.problem.probabilities(target[None])[0, 1 - label])

    def record(self, state: dict[str, Any]) -> None:
        """Step 8 and the record: retrain with phi(poison); success if the target is then
        misclassified. Diagnostic (not in the original): the same retraining from the same
        initial classifier with the unmodified base image instead."""
        current, data, p = state["current"], self.inputs.data, self.problem
        index, label, base = current["target_index"], current["target_label"], current["base_index"]
        target = self.inputs.test_f[index]
        phi_poison = p.poison_features()
        init = p.rng.bit_generator.state
        start = time.perf_counter()
        wrong_prob = {}
        for name, added in (("base", self.inputs.train_f[base][None]), ("poison", phi_poison)):
            p.rng.bit_generator.state = init
            wrong_prob[name] = self.retrained_wrong_prob(added, int(data.y_train[base]), target, label)
        state["timings"]["retraining_s"] += time.perf_counter() - start
        success = bool(p.predict(target[None])[0] != label)
        poison = p.u.numpy()[0]
        if success:
            if state["found"] < MAX_SAVED:
                self.saved[state["found"]].assign(poison)
            state["found"] += 1
        else:
            state["unsuccessful"].append(current["attempt"])
        state["records"].append({
            **{k: current[k] for k in ("attempt", "target_index", "target_label", "base_index",
                                       "feature_distance")},
            "success": success, "clean_test_accuracy": current["clean_test_accuracy"],
            "target_wrong_class_prob": wrong_prob["poison"],
            "target_wrong_class_prob_with_base": wrong_prob["base"],
            "poison_feature_distance": float(np.linalg.norm(phi_poison[0] - target)),
            "poison_pixel_change_max": float(np.abs(poison - data.x_train[base]).max()),
            "final": current["final"]})
        state["current"] = None
        if not self.quiet:
            print(f"\ntarget {index} ({'fish' if label else 'dog'} label {label}), base {base}: "
                  f"{'success' if success else 'no success'}; found {state['found']} out of "
                  f"{len(state['records'])}")

    def triples(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """The first `MAX_SAVED` successes' target, base and poison images, mapped to [0, 1]."""
        data = self.inputs.data
        hits = [r for r in state["records"] if r["success"]][:MAX_SAVED]
        empty = np.zeros((0,) + data.x_train.shape[1:], np.float32)
        if not hits:
            return {"target": empty, "base": empty, "poison": empty}
        return {"target": np.stack([(data.x_test[r["target_index"]] + 1) * 0.5 for r in hits]),
                "base": np.stack([(data.x_train[r["base_index"]] + 1) * 0.5 for r in hits]),
                "poison": np.stack([(x + 1) * 0.5 for x in self.saved.numpy()[:len(hits)]])}


# ------------------------------------------------------------------- the script

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m poisoning.clean_label",
                                     description=__doc__.split("\n\n")[0])
    experiment.add_common_flags(parser, methods=["penalty"], default_method="penalty",
                                epochs=201, lower_steps=10, resume=True, resume_help=runs.RESUME_HELP)
    run_settings.add_flags(parser, CleanLabelSettings, ("penalty",))
    parser.add_argument("--weights", default="imagenet",
                        help="InceptionV3 weights: 'imagenet', a weights file, or 'none'")
    runs.add_run_flags(parser, checkpoint_every=100)
    return parser


def build_attack(args: argparse.Namespace, settings: CleanLabelSettings) -> Attack:
    """The inputs, the frozen InceptionV3 and the attack's problem and solver."""
    from poisoning.inception import feature_model

    inputs = Inputs.load(args.data_dir)
    x_train = inputs.data.x_train
    model = feature_model(args.weights, image_size=x_train.shape[1])
    problem = CleanLabelProblem(model, x_train.shape[1:], float(x_train.min()), float(x_train.max()),
                                np.random.default_rng([args.seed, 2]), lr=settings.solver.lr_v,
                                beta=settings.beta)
    return Attack(inputs, settings, problem, args.quiet)


def write_outputs(out, args: argparse.Namespace, attack: Attack, state: dict[str, Any],
                  wall: float) -> dict[str, Any]:
    """triples.npz, triples.png and result.json; then the checkpoint goes."""
    images = attack.triples(state)
    experiment.save_npz_atomic(out / "triples.npz", target_instances=images["target"],
                               base_instances=images["base"], poisoned_instances=images["poison"],
                               unsuccessful=np.array(state["unsuccessful"], np.int64))
    save_triples_figure(out / "triples.png", images["target"], images["base"], images["poison"])
    records, found = state["records"], state["found"]
    lift = [r["target_wrong_class_prob"] - r["target_wrong_class_prob_with_base"] for r in records]
    metrics = {"found": found, "attempted": len(records),
               "mean_wrong_class_prob_lift": float(np.mean(lift)) if lift else None,
               "success_rate": (100.0 * found / len(records)) if records else None,
               "unit": "percent", "stop_reason": state["stop_reason"], "timings": state["timings"],
               "targets": records}
    if not args.quiet:
        print(f"clean-label attack: {found} of {len(records)} targets misclassified")
    written = experiment.write_result(out, experiment=NAME, method="penalty", config=vars(args),
                                      metrics=metrics,
                                      published=paper.published_dict(experiment=NAME, method="penalty"),
                                      wall_time_s=wall)
    runs.remove_checkpoint(runs.RunOptions.from_args(args, out))
    return written


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    settings = run_settings.resolve(args, CleanLabelSettings, NAME)   # checks every setting's range
    out = experiment.resolve_out_dir(args, NAME, check=False)
    options = runs.RunOptions.from_args(args, out)
    experiment.check_out_dir(out)                # after the flags, before any work
    experiment.seed_everything(args.seed, deterministic=args.deterministic)
    start = time.perf_counter()
    attack = build_attack(args, settings)
    state = attack.run(options)
    if state is None:   # --stop-after (tests: a killed run)
        return {}
    return write_outputs(out, args, attack, state, time.perf_counter() - start)


if __name__ == "__main__":
    experiment.run_main(main)
