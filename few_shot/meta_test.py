"""The meta-test protocol (docs/original.md §3.5.5).

``test_tasks`` (600) tasks from the meta-test classes, in meta-batches of the training
meta-batch size; the encoder is frozen, so each task's support and query features are
computed once, then ``test_steps`` (100) Adam steps from zero moments train fresh
classifiers on the support features, and the accuracy on the query set is recorded per
task. Reported: mean, sd (sample, ddof=1) and the 95 % confidence half-width
1.96 sd / sqrt(tasks) over the tasks (the original printed only the mean).

Faithful quirk: the classifier Adam is fresh for every meta-test meta-batch, with
learning rate 1e-3 (Penalty scripts) or lr_v (ApproxGrad scripts: 1e-2 on Omniglot).
"""

from __future__ import annotations

import math

import numpy as np

from few_shot.tasks import MetaBatch, TaskSampler
from penalty_tf.paper import experiment


class MetaTester:
    """The meta-test protocol on a frozen encoder, one compiled call per meta-batch."""

    def __init__(self, encoder, steps: int = 100, lr: float = 1e-3, jit_compile: bool = False):
        import tensorflow as tf

        self.encoder, self.steps, self.lr = encoder, int(steps), float(lr)
        self._fn = tf.function(self._accuracies, jit_compile=jit_compile, autograph=False)

    def _accuracies(self, support, support_labels, query, query_labels, w0, b0):
        """Per task: ``steps`` TF1-Adam steps of (W, b) from (w0, b0) on the support
        cross-entropy of the frozen features, then the fraction of query images whose
        argmax cosine logit is their label."""
        import tensorflow as tf

        from penalty_tf.models.few_shot import cosine_logits, task_losses
        from penalty_tf.optimizers import adam_steps

        fs = tf.stop_gradient(self.encoder(support))   # frozen encoder: features once
        fq = tf.stop_gradient(self.encoder(query))

        def loss(w, b):
            return tf.reduce_mean(task_losses(cosine_logits(fs, w, b), support_labels))

        w, b = adam_steps(loss, [w0, b0], self.steps, self.lr)
        pred = tf.argmax(cosine_logits(fq, w, b), axis=-1, output_type=tf.int32)
        return tf.reduce_mean(tf.cast(pred == tf.cast(query_labels, tf.int32), tf.float32), axis=-1)

    def accuracies(self, batch: MetaBatch, w0: np.ndarray, b0: np.ndarray) -> np.ndarray:
        """Query accuracy of each task of ``batch`` (fresh classifiers w0, b0)."""
        return self._fn(batch.support, batch.support_labels, batch.query, batch.query_labels,
                        w0, b0).numpy()

    def evaluate(self, sampler: TaskSampler, init_rng: np.random.Generator, tasks: int,
                 meta_batch: int, dim: int, quiet: bool = True) -> np.ndarray:
        """Accuracies of ``tasks`` meta-test tasks (ceil(tasks / meta_batch) meta-batches)."""
        from penalty_tf.models.few_shot import initial_classifiers

        out = []
        bar = experiment.progress(tasks, quiet=quiet, unit_name="task")
        while sum(len(a) for a in out) < tasks:
            batch = sampler.sample(meta_batch)
            w0, b0 = initial_classifiers(init_rng, meta_batch, dim, sampler.nway)
            out.append(self.accuracies(batch, w0, b0))
            bar.add(meta_batch)
        return np.concatenate(out)[:tasks]


def summarize_accuracies(accs: np.ndarray) -> dict[str, float]:
    """Mean, sample sd (ddof=1) and 95 % CI half-width 1.96 sd / sqrt(n), in percent."""
    accs = np.asarray(accs, np.float64) * 100.0
    n = len(accs)
    sd = float(accs.std(ddof=1)) if n > 1 else 0.0
    return {"acc_mean": float(accs.mean()), "acc_sd": sd, "acc_ci95": 1.96 * sd / math.sqrt(n),
            "tasks": n}
