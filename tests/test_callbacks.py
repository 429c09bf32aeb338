"""tf.data input without retracing, the run() loop, its callbacks, state and checkpoints."""

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf import callbacks as cb
from penalty_tf import training
from penalty_tf.losses import sparse_softmax_cross_entropy

N, D, C = 40, 5, 3


class Reweighting:
    """Learn per-example weights u of a linear classifier v trained on (x, y); f on (xv, yv)."""

    def __init__(self, solver_cls=ptf.Penalty, **kwargs):
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(N, D)).astype(np.float32)
        self.y = rng.integers(0, C, N).astype(np.int32)
        self.xv = rng.normal(size=(N, D)).astype(np.float32)
        self.yv = rng.integers(0, C, N).astype(np.int32)
        self.w = tf.Variable(rng.normal(size=(D, C)).astype(np.float32) * 0.1, name="w")
        self.u = tf.Variable(tf.zeros([N]), name="u")
        kwargs.setdefault("upper_optimizer", 0.1)
        kwargs.setdefault("lower_optimizer", 0.01)
        self.solver = solver_cls(self.f, self.g, [self.u], [self.w], **kwargs)

    def g(self, batch):
        idx, x, y, _, _ = batch
        a = tf.sigmoid(tf.gather(self.u, idx))
        return tf.reduce_mean(a * sparse_softmax_cross_entropy(y, x @ self.w))

    def f(self, batch):
        _, _, _, xv, yv = batch
        return tf.reduce_mean(sparse_softmax_cross_entropy(yv, xv @ self.w))

    def dataset(self, batch_size=16):
        return tf.data.Dataset.from_tensor_slices(
            (np.arange(N, dtype=np.int32), self.x, self.y, self.xv, self.yv)).batch(batch_size)


def test_step_on_dataset_batches_traces_once_including_the_smaller_last_batch():
    p = Reweighting()
    ds = p.dataset(16)                                  # batches of 16, 16, 8
    p.solver.trace(ds.element_spec)
    for _ in range(2):
        for batch in ds:
            p.solver.step(batch, lower_steps=2)
    assert p.solver.tracing_count() == 1
    assert p.solver.iteration == 6


def test_run_equals_the_same_steps_called_by_hand_and_returns_epoch_means():
    a, b = Reweighting(), Reweighting()
    seen = []
    for _ in range(2):
        for batch in a.dataset():
            seen.append(training.batch_logs(a.solver, a.solver.step(batch, lower_steps=3)))
    history = b.solver.run(b.dataset(), epochs=2, lower_steps=3, verbose=0)
    np.testing.assert_allclose(b.u.numpy(), a.u.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b.w.numpy(), a.w.numpy(), rtol=1e-6, atol=1e-7)
    assert history.epoch == [0, 1] and b.solver.epoch == 2 and b.solver.iteration == 6
    np.testing.assert_allclose(history.history["f"][1], np.mean([s["f"] for s in seen[3:]]), rtol=1e-6)
    assert history.history["rho"][1] == seen[-1]["rho"]          # state: last value
    assert history.history["lr_lower"][1] == pytest.approx(seen[-1]["lr_lower"])
    assert history.error is None


def test_state_variables_hold_optimizer_moments_and_penalty_state():
    p = Reweighting()
    state = p.solver.state_variables()
    ids = {id(v) for v in state}
    for v in [p.solver.rho, p.solver.lamb, p.solver.eps, *p.solver.nu]:
        assert id(v) in ids
    for opt in p.solver.upper.optimizers + p.solver.lower.optimizers:
        assert len(opt.variables) == 4          # iterations, lr, m, v of one variable
        for v in opt.variables:
            assert id(v.value) in ids
    assert all(isinstance(v, tf.Variable) for v in state)
    assert id(p.u) not in ids and [id(v) for v in p.solver.variables()] == [id(p.u), id(p.w)]
    approx = Reweighting(ptf.ApproxGrad)
    assert {id(x) for x in approx.solver.linear.variables} <= {id(v) for v in approx.solver.state_variables()}


def test_rmd_state_variables_are_its_step_sizes():
    rng = np.random.default_rng(1)
    u, v = tf.Variable(rng.normal(size=3).astype(np.float32)), tf.Variable(tf.zeros(3))
    solver = ptf.RMD(lambda b: tf.reduce_sum(v ** 2), lambda b: tf.reduce_sum((v - u) ** 2), u, v)
    assert solver.state_variables() == [solver.upper_lr, solver.lower_lr]


def test_checkpoint_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    full = Reweighting()
    full.solver.run(full.dataset(), epochs=3, lower_steps=3, verbose=0)

    first = Reweighting()
    first.solver.run(first.dataset(), epochs=2, lower_steps=3, verbose=0,
                     callbacks=[cb.Checkpoint(first.solver, tmp_path)])
    # A fresh process would build a fresh problem: different weights, fresh optimizers.
    second = Reweighting()
    second.w.assign(tf.zeros_like(second.w))
    ckpt = cb.Checkpoint(second.solver, tmp_path)
    start = ckpt.restore()
    assert start == 2 and second.solver.iteration == 6
    assert int(second.solver.lower.optimizers[0].iterations.numpy()) == 6 * 3
    np.testing.assert_array_equal(second.solver.nu[0].numpy(), first.solver.nu[0].numpy())
    second.solver.run(second.dataset(), epochs=3, lower_steps=3, verbose=0, callbacks=[ckpt],
                      initial_epoch=start)
    np.testing.assert_allclose(second.u.numpy(), full.u.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(second.w.numpy(), full.w.numpy(), rtol=1e-6, atol=1e-7)
    assert float(second.solver.rho.numpy()) == float(full.solver.rho.numpy())
    assert sorted(ckpt.manager.checkpoints)[-1].endswith("ckpt-3")


def test_nan_stops_the_run_tells_callbacks_and_rolls_back_to_the_last_checkpoint(tmp_path):
    p = Reweighting()
    poison = tf.Variable(0.0)
    g = p.solver.lower_loss
    p.solver.lower_loss = lambda batch: g(batch) / (1.0 - poison)   # Inf when poison = 1

    class PoisonAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            poison.assign(1.0)

        def on_nonfinite(self, error):
            self.error = error

    watcher = PoisonAfterFirstEpoch()
    ckpt = cb.Checkpoint(p.solver, tmp_path)
    history = p.solver.run(p.dataset(), epochs=4, lower_steps=2, verbose=0, callbacks=[ckpt, watcher])
    assert isinstance(history.error, ptf.NonFiniteError) and watcher.error is history.error
    assert "is not finite" in str(history.error)
    assert history.epoch == [0]
    assert np.all(np.isfinite(p.w.numpy())) and np.all(np.isfinite(p.u.numpy()))
    assert p.solver.epoch == 1 and p.solver.iteration == 3
    with pytest.raises(ptf.NonFiniteError):
        p.solver.run(p.dataset(), epochs=2, verbose=0, on_nonfinite="raise")


def read_scalars(log_dir):
    values = {}
    for path in glob.glob(f"{log_dir}/events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for v in event.summary.value:
                values.setdefault(v.tag, []).append(
                    (event.step, float(tf.make_ndarray(v.tensor))))
    return values


def test_tensorboard_writes_losses_penalty_terms_and_schedule(tmp_path):
    p = Reweighting()
    history = p.solver.run(p.dataset(), epochs=2, lower_steps=2, verbose=0,
                           callbacks=[cb.TensorBoard(tmp_path, update_freq=2)])
    scalars = read_scalars(tmp_path)
    for tag in ("f", "g", "penalty", "nu_term", "lamb_g", "rho", "lamb", "eps", "lr_upper"):
        assert [s for s, _ in scalars[tag]] == [0, 2, 4], tag
        assert [s for s, _ in scalars["epoch_" + tag]] == [0, 1], tag
    np.testing.assert_allclose([v for _, v in scalars["epoch_f"]], history.history["f"], rtol=1e-6)


def test_progress_bar_prints_epochs_and_keras_early_stopping_works(capsys):
    p = Reweighting()
    stop = keras.callbacks.EarlyStopping(monitor="f", mode="min", patience=0, min_delta=10.0)
    history = p.solver.run(p.dataset(), epochs=5, lower_steps=1, verbose=1, callbacks=[stop])
    out = capsys.readouterr().out
    assert "Epoch 1/5" in out and "Epoch 2/5" in out and "Epoch 3/5" not in out
    assert history.epoch == [0, 1]     # stopped: f did not improve by 10


def test_run_accepts_any_iterable_of_batches():
    a, b = Reweighting(), Reweighting()
    batches = [tuple(t.numpy() for t in batch) for batch in a.dataset()]
    a.solver.run(batches, epochs=2, lower_steps=2, verbose=0)
    b.solver.run(b.dataset(), epochs=2, lower_steps=2, verbose=0)
    np.testing.assert_allclose(a.u.numpy(), b.u.numpy(), rtol=1e-6, atol=1e-7)
    assert a.solver.iteration == 6
