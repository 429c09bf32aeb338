"""The bilevel problem of few-shot learning and the solver on it (docs/original.md §3.5).

u = the encoder's variables, v = the T classifiers of a meta-batch:

    g(u, v) = mean_t  CE(classifier_t(encoder(support_t)), support labels_t)
    f(u, v) = mean_t  CE(classifier_t(encoder(query_t)),   query labels_t)

**Batched classifiers.** The original built one classifier variable pair per task and
one Adam per task. Here the T classifiers are ONE weight tensor W (T, d, N) and ONE bias
b (T, N), and a meta-iteration is one compiled graph call (`BilevelSolver.step`). The
solvers' Adam on the batched variable equals T per-task Adams: Adam is element-wise, and
the original's per-task Adams had equal learning rates, always stepped together (equal
step counters, equal bias corrections) and were decayed together by the multi-group
Penalty (every learning rate x0.99). Penalty's nu, its tolerance test (sums of squares
over all groups) and ApproxGrad's p and per-group residual are likewise unchanged by the
grouping, because task t's losses depend only on (u, W_t, b_t). A test checks batched
against per-task groups for both solvers.

**Faithful quirks** (each reproduced by default, docs/original.md §3.5.2, §1.6, §5.3 #41):

* `FewShotProblem.reset_classifiers` re-draws W and b before every meta-iteration but does
  **not** reset the bilevel solver's state: the classifiers' Adam moments, Penalty's nu
  and ApproxGrad's p (and its Adam) persist across meta-iterations although each task
  slot holds a new task every time.
* ApproxGrad corrects the encoder with **task 0's** implicit term only
  (`task_zero_weights`, ``correction="first"``); ``--correction all`` sums over tasks.
* Batch norm always uses the statistics of the batch at hand, per task and split,
  including when predicting the query sets (transductive).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

#: The run's ``--correction`` values: ApproxGrad's encoder correction by task 0 alone (the
#: original) or summed over every task.
CORRECTIONS = ("first", "all")


class FeatureBatch(NamedTuple):
    """A meta-batch whose images were replaced by encoder features (T, n, d)."""

    support: Any
    support_labels: Any
    query: Any
    query_labels: Any


class FewShotProblem:
    """Encoder (u), the batched classifiers W (T, d, N), b (T, N) (v), and f, g."""

    def __init__(self, encoder, tasks: int, nway: int, image_shape: Sequence[int]):
        import tensorflow as tf

        from penalty_tf.models.few_shot import feature_dim

        self.encoder, self.tasks, self.nway = encoder, tasks, nway
        self.dim = feature_dim(encoder, image_shape)
        self.weights = tf.Variable(tf.zeros((tasks, self.dim, nway)), name="classifier_W")
        self.bias = tf.Variable(tf.zeros((tasks, nway)), name="classifier_b")

    @property
    def upper_vars(self):
        return list(self.encoder.trainable_variables)

    @property
    def lower_vars(self):
        return [self.weights, self.bias]

    def _loss(self, inputs, labels, are_features: bool):
        """mean_t CE(cosine classifier_t(features_t), labels_t), the images' features
        computed here unless ``are_features``."""
        import tensorflow as tf

        from penalty_tf.models.few_shot import cosine_logits, task_losses

        features = inputs if are_features else self.encoder(inputs)
        return tf.reduce_mean(task_losses(cosine_logits(features, self.weights, self.bias), labels))

    def lower_loss(self, batch):
        """g: mean over tasks of the support cross-entropy."""
        return self._loss(batch[0], batch[1], isinstance(batch, FeatureBatch))

    def upper_loss(self, batch):
        """f: mean over tasks of the query cross-entropy."""
        return self._loss(batch[2], batch[3], isinstance(batch, FeatureBatch))

    def features_batch(self, batch) -> FeatureBatch:
        """The meta-batch with the images replaced by their encoder features, (T, n, d).

        The problem's ``lower_step_batch`` hook: the lower steps (and ApproxGrad's linear
        steps) differentiate w.r.t. the classifiers only and the encoder (u) does not change
        during them, so the features are computed once per meta-iteration instead of at
        every one of the T steps (the original recomputed them). Same values: the batch-
        statistics batch norm sees the same per-task batches either way."""
        return FeatureBatch(self.encoder(batch[0]), batch[1], self.encoder(batch[2]), batch[3])

    def bilevel(self):
        """The `penalty_tf.problem.BilevelProblem` the solvers are given (features once per
        meta-iteration through ``lower_step_batch``)."""
        from penalty_tf.problem import BilevelProblem

        return BilevelProblem(self.upper_loss, self.lower_loss, self.upper_vars, self.lower_vars,
                              lower_step_batch=self.features_batch)

    def reset_classifiers(self, rng: np.random.Generator) -> None:
        """Fresh W ~ N(0, 0.01^2), b = 0.001 (the original's ``reset_v_func``); the bilevel
        solver's state is deliberately left as it is (faithful quirk)."""
        from penalty_tf.models.few_shot import initial_classifiers

        w, b = initial_classifiers(rng, self.tasks, self.dim, self.nway)
        self.weights.assign(w)
        self.bias.assign(b)


def task_zero_weights(lower_vars) -> list[np.ndarray]:
    """The original's multi-group ApproxGrad corrects upper group i with lower group i only;
    with one encoder group and one group per task that is task 0 alone:
    ``grad_u f - H_{u v_0} p_0``. With the T classifiers batched into one variable per
    kind, the core's group indexing cannot express this, so p is multiplied by a one-hot
    task-0 mask along the task axis (axis 0 of W and b): ApproxGrad's ``correction_weights``.
    """
    out = []
    for v in lower_vars:
        mask = np.zeros((v.shape[0],) + (1,) * (len(v.shape) - 1), np.float32)
        mask[0] = 1.0
        out.append(mask)
    return out


def make_solver(method: str, problem: FewShotProblem, config, *, correction: str = "first",
                jit_compile: bool = False):
    """``penalty_tf.solvers.make(method, problem.bilevel(), config)``, TF1 Adam at the
    config's learning rates on every level. ApproxGrad's config must sum the correction
    over the lower groups (``correction="all"``, one group here); ``correction="first"``
    then restricts the sum to task 0 (`task_zero_weights`)."""
    from penalty_tf import solvers

    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    options = {}
    if isinstance(config, solvers.ApproxGradConfig) and correction == "first":
        options["correction_weights"] = task_zero_weights(problem.lower_vars)
    return solvers.make(method, problem.bilevel(), config, jit_compile=jit_compile, **options)
