"""Few-shot machinery: sampler, batched solvers = per-task groups, meta-test, CI formula."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from few_shot.meta_test import MetaTester, summarize_accuracies
from few_shot.problem import FewShotProblem, make_solver
from few_shot.settings import solver_config
from few_shot.tasks import MetaBatch, Split, TaskSampler
from penalty_tf.models import few_shot as m
from penalty_tf.optimizers import adam_steps
from penalty_tf.paper.defaults import defaults
from penalty_tf.paper.experiment import ExperimentError
from penalty_tf.solvers import ApproxGrad, Penalty, PenaltySchedule, tf1_adam


def _split(classes=12, per_class=20, offset=0):
    """Images whose every pixel holds (class id + image number / 100), so an image's class
    and identity can be read back from its pixels."""
    labels = np.repeat(np.arange(offset, offset + classes), per_class)
    ident = labels + np.tile(np.arange(per_class), classes) / 100.0
    images = np.broadcast_to(ident[:, None, None, None], (len(labels), 2, 2, 1)).astype(np.float32)
    return Split(np.ascontiguousarray(images), labels, np.arange(offset, offset + classes))


def test_sampler_tasks_are_disjoint_with_k_and_15_per_class_and_position_labels():
    split = _split(classes=12, offset=100)
    sampler = TaskSampler(split, nway=3, kshot=2, rng=np.random.default_rng(0))
    for _ in range(5):
        support, query, chosen = sampler.sample_indices(3)
        # 3 tasks x 3 classes = 9 < 12 classes: all classes of the meta-batch are distinct
        assert len(set(chosen.ravel().tolist())) == 9
        batch = sampler.sample(3)
        assert batch.support.shape == (3, 6, 2, 2, 1) and batch.query.shape == (3, 45, 2, 2, 1)
        assert batch.support.dtype == np.float32 and batch.support_labels.dtype == np.int32
        for t in range(3):
            s_cls = np.floor(batch.support[t, :, 0, 0, 0] + 1e-6).astype(int)
            q_cls = np.floor(batch.query[t, :, 0, 0, 0] + 1e-6).astype(int)
            # K = 2 support and 15 query images per class, 3 classes
            assert sorted(np.unique(s_cls, return_counts=True)[1]) == [2, 2, 2]
            assert sorted(np.unique(q_cls, return_counts=True)[1]) == [15, 15, 15]
            # labels are positions 0..N-1, one position per class, the same in support and query
            pos = {c: set(batch.support_labels[t][s_cls == c].tolist()) for c in np.unique(s_cls)}
            assert sorted(p for s in pos.values() for p in s) == [0, 1, 2]
            for c in np.unique(q_cls):
                assert set(batch.query_labels[t][q_cls == c].tolist()) == pos[c]
            # no image in both support and query
            assert not set(batch.support[t, :, 0, 0, 0].tolist()) & set(batch.query[t, :, 0, 0, 0].tolist())


def test_sampler_reuses_classes_only_when_too_few_remain():
    """The original clears its used list when used + N >= number of classes."""
    split = _split(classes=7)
    sampler = TaskSampler(split, nway=3, kshot=1, rng=np.random.default_rng(1))
    for _ in range(10):
        _, _, chosen = sampler.sample_indices(4)
        assert len(set(chosen[0]) | set(chosen[1])) == 6      # 0 + 3 < 7 and 3 + 3 < 7: disjoint
        assert len(set(chosen[2]) & (set(chosen[0]) | set(chosen[1]))) >= 2  # 6 + 3 >= 7: cleared
        assert len(set(chosen[3]) & set(chosen[2])) == 0       # 3 + 3 < 7: disjoint again


def test_sampler_shuffles_order_and_rejects_too_small_classes():
    split = _split(classes=5)
    sampler = TaskSampler(split, nway=5, kshot=5, rng=np.random.default_rng(2))
    labels = sampler.sample(1).support_labels[0]
    assert sorted(labels.tolist()) == sorted([0, 1, 2, 3, 4] * 5)
    assert labels.tolist() != sorted(labels.tolist())         # shuffled
    with pytest.raises(ExperimentError, match="fewer than K"):
        TaskSampler(split, nway=5, kshot=6, rng=np.random.default_rng(0))
    with pytest.raises(ExperimentError, match="needs 6 classes"):
        TaskSampler(split, nway=6, kshot=1, rng=np.random.default_rng(0))


def test_ci_formula():
    accs = np.array([0.5, 0.75, 1.0, 0.25])
    s = summarize_accuracies(accs)
    # percent; deviations from 62.5 are +-12.5 and +-37.5: sample variance 3125 / 3
    sd = math.sqrt(3125.0 / 3.0)
    assert s["acc_mean"] == pytest.approx(62.5)
    assert s["acc_sd"] == pytest.approx(sd, rel=1e-9)
    assert s["acc_ci95"] == pytest.approx(1.96 * sd / math.sqrt(4), rel=1e-9)
    assert s["tasks"] == 4


def test_functional_adam_equals_tf1_keras_adam():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(3, 4)).astype(np.float32)
    w0 = rng.normal(size=(3, 4)).astype(np.float32)

    def loss(w):
        return tf.reduce_sum((w - target) ** 4)

    (got,) = adam_steps(loss, [tf.constant(w0)], 7, 0.05)
    var = tf.Variable(w0)
    opt = tf1_adam(0.05)
    for _ in range(7):
        with tf.GradientTape() as tape:
            value = loss(var)
        opt.apply([tape.gradient(value, var)], [var])
    np.testing.assert_allclose(got.numpy(), var.numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# batched classifiers (one W (T, d, N)) == one group per task (the original's structure)

T, N, D, IMG = 2, 2, None, (4, 4, 1)


def _encoder(seed):
    keras.utils.set_random_seed(seed)
    return m.build_encoder("omniglot", IMG, filters=3, blocks=1)


def _batch(seed=0, k=2, q=3):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.random((T, N * k, *IMG), dtype=np.float32)),
            tf.constant(rng.integers(0, N, (T, N * k)).astype(np.int32)),
            tf.constant(rng.random((T, N * q, *IMG), dtype=np.float32)),
            tf.constant(rng.integers(0, N, (T, N * q)).astype(np.int32)))


class _PerTask:
    """The original's layout: one (W_t, b_t) pair of variables per task."""

    def __init__(self, encoder, w, b):
        self.encoder = encoder
        self.ws = [tf.Variable(w[t]) for t in range(T)]
        self.bs = [tf.Variable(b[t]) for t in range(T)]

    def _loss(self, x, y):
        losses = []
        for t in range(T):
            feats = self.encoder(x[t])[None]
            losses.append(m.task_losses(m.cosine_logits(feats, self.ws[t][None], self.bs[t][None]), y[t][None])[0])
        return tf.reduce_mean(tf.stack(losses))

    def lower_loss(self, batch):
        return self._loss(batch[0], batch[1])

    def upper_loss(self, batch):
        return self._loss(batch[2], batch[3])

    @property
    def groups(self):
        return [[self.ws[t], self.bs[t]] for t in range(T)]


def _config(method, **overrides):
    """The solver config of the Omniglot runs (lr_u = lr_v = lr_p = 1e-2), with ``overrides``."""
    return solver_config(method, {**defaults("few_shot.omniglot", method), **overrides})


def _pair(method, **kwargs):
    enc_a, enc_b = _encoder(0), _encoder(0)
    batched = FewShotProblem(enc_a, T, N, IMG)
    batched.reset_classifiers(np.random.default_rng(3))
    per_task = _PerTask(enc_b, batched.weights.numpy(), batched.bias.numpy())
    return batched, per_task


def _assert_same(batched, per_task, rtol=2e-4, atol=2e-6):
    for a, b in zip(batched.encoder.trainable_variables, per_task.encoder.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(batched.weights.numpy(), np.stack([w.numpy() for w in per_task.ws]),
                               rtol=rtol, atol=atol)
    np.testing.assert_allclose(batched.bias.numpy(), np.stack([b.numpy() for b in per_task.bs]),
                               rtol=rtol, atol=atol)


def test_batched_penalty_equals_per_task_groups():
    batched, per_task = _pair("penalty")
    # the Omniglot runs' config (multi-group: lr x0.99), large eps: the schedule fires too
    a = make_solver("penalty", batched, _config("penalty", eps0=1e8))
    schedule = PenaltySchedule.multi_group(rho0=1e-2, lamb0=1e-2, eps0=1e8, nu0=1e-4)
    b = Penalty(per_task.upper_loss, per_task.lower_loss, [per_task.encoder.trainable_variables],
                per_task.groups, upper_optimizer=[1e-2], lower_optimizer=[1e-2] * T, schedule=schedule)
    before = [v.numpy().copy() for v in batched.encoder.trainable_variables]
    for i in range(3):
        batch = _batch(i)
        out_a, out_b = a.step(batch, lower_steps=3), b.step(batch, lower_steps=3)
        assert bool(out_a["converged"]) and bool(out_b["converged"])
        assert float(out_a["f"]) == pytest.approx(float(out_b["f"]), rel=1e-4)
        # faithful quirk: new classifiers, solver state kept
        w = np.random.default_rng(10 + i).normal(0, 0.01, batched.weights.shape).astype(np.float32)
        batched.weights.assign(w)
        for t in range(T):
            per_task.ws[t].assign(w[t])
    _assert_same(batched, per_task)
    assert a.state()["lr_lower"] == pytest.approx([1e-2 * 0.99 ** 3])
    assert any(np.abs(x - v.numpy()).max() > 1e-4 for x, v in zip(before, batched.encoder.trainable_variables))


@pytest.mark.parametrize("correction", ["first", "all"])
def test_batched_approxgrad_equals_per_task_groups(correction):
    """The task-0 mask reproduces the original's indexed correction (upper group 0 <- lower
    group 0 = task 0); "all" equals the core's sum over groups."""
    batched, per_task = _pair("approxgrad")
    a = make_solver("approxgrad", batched, _config("approxgrad"), correction=correction)
    b = ApproxGrad(per_task.upper_loss, per_task.lower_loss, [per_task.encoder.trainable_variables],
                   per_task.groups, upper_optimizer=[1e-2], lower_optimizer=[1e-2] * T,
                   linear_optimizer=[1e-2] * T, sig=1e-3,
                   correction="indexed" if correction == "first" else "all")
    for i in range(2):
        batch = _batch(i)
        out_a = a.step(batch, lower_steps=3, linear_steps=3)
        out_b = b.step(batch, lower_steps=3, linear_steps=3)
        assert float(out_a["h"]) == pytest.approx(float(out_b["h"]), rel=1e-3)
    _assert_same(batched, per_task)


def test_task_zero_mask_changes_the_encoder_update():
    """Control for the test above: "first" and "all" give different encoder directions."""
    batched, _ = _pair("approxgrad")
    solvers = [make_solver("approxgrad", batched, _config("approxgrad"), correction=c)
               for c in ("first", "all")]
    directions = []
    for solver in solvers:
        for p in solver.linear.variables:
            p.assign(tf.random.normal(p.shape, seed=4))
        directions.append(solver._surrogate_gradient(*solver._bind(_batch(0))))
    first, every = directions
    assert max(float(tf.reduce_max(tf.abs(x - y))) for x, y in zip(first, every)) > 1e-4


def test_meta_test_equals_a_per_task_loop():
    """Batched meta-test (features once, 100 functional Adam steps) = per-task Keras Adam
    on the task's classifier variables, with the mean-over-tasks loss."""
    encoder = _encoder(1)
    batch = MetaBatch(*(x.numpy() for x in _batch(5)))
    w0, b0 = m.initial_classifiers(np.random.default_rng(0), T, 12, N)
    tester = MetaTester(encoder, steps=20, lr=1e-2)
    got = tester.accuracies(batch, w0, b0)
    for t in range(T):
        w, b = tf.Variable(w0[t][None]), tf.Variable(b0[t][None])
        opt = tf1_adam(1e-2)
        feats = encoder(batch.support[t])[None]
        for _ in range(20):
            with tf.GradientTape() as tape:
                loss = m.task_losses(m.cosine_logits(feats, w, b), batch.support_labels[t][None])[0] / T
            opt.apply(tape.gradient(loss, [w, b]), [w, b])
        pred = np.argmax(m.cosine_logits(encoder(batch.query[t])[None], w, b).numpy()[0], -1)
        assert got[t] == pytest.approx(np.mean(pred == batch.query_labels[t]))
    # The classifiers really train: evaluated on their own support set, 100 steps (the
    # protocol's count) fit every task, while the untrained ones do not (measured 50 %, 75 %).
    on_support = batch._replace(query=batch.support, query_labels=batch.support_labels)
    trained = MetaTester(encoder, steps=100, lr=1e-2).accuracies(on_support, w0, b0)
    untrained = MetaTester(encoder, steps=0, lr=1e-2).accuracies(on_support, w0, b0)
    np.testing.assert_array_equal(trained, 1.0)
    assert untrained.mean() < 0.8


def test_reset_classifiers_keeps_solver_state():
    batched, _ = _pair("penalty")
    solver = make_solver("penalty", batched, _config("penalty"))
    solver.step(_batch(0), lower_steps=2)
    moments = [v.numpy().copy() for opt in solver.lower.optimizers for v in opt.variables]
    nu = [v.numpy().copy() for v in solver.nu]
    w_before = batched.weights.numpy().copy()
    batched.reset_classifiers(np.random.default_rng(9))
    assert np.abs(batched.weights.numpy() - w_before).max() > 1e-3
    assert np.all(batched.bias.numpy() == np.float32(0.001))
    after = [v.numpy() for opt in solver.lower.optimizers for v in opt.variables]
    assert all(np.array_equal(a, b) for a, b in zip(moments, after))
    assert any(np.abs(a).max() > 0 for a in after[2:])          # moments are non-trivial
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(nu, solver.nu))
    solver.step(_batch(1), lower_steps=2)        # a new meta-batch of the same shapes:
    assert solver.tracing_count() == 1            # the same compiled graph, no retracing
