"""Keras conventions on the library loop: schedules, Keras callbacks, array input, validation
metrics, refit, exact resume with a shuffled pipeline (a kill at a random batch), and the
real-MNIST run that uses them together (issue 14)."""

import csv
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf import callbacks as cb

N, D, C = 48, 4, 3


class Problem:
    """Per-example weights u (sigmoid) of a Keras linear classifier v; f on validation data."""

    def __init__(self, lower_optimizer=0.01, upper_optimizer=0.1, solver_cls=ptf.Penalty, **kwargs):
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(N, D)).astype(np.float32)
        self.y = rng.integers(0, C, N).astype(np.int32)
        self.xv = rng.normal(size=(N, D)).astype(np.float32)
        self.yv = rng.integers(0, C, N).astype(np.int32)
        keras.utils.set_random_seed(1)
        self.model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(C)])
        self.u = tf.Variable(tf.zeros([N]), name="u")
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        self.solver = solver_cls(self.f, self.g, self.u, self.model, upper_optimizer=upper_optimizer,
                                 lower_optimizer=lower_optimizer, **kwargs)

    def g(self, batch):
        i, x, y, _, _ = batch
        return tf.reduce_mean(tf.sigmoid(tf.gather(self.u, i)) * self.ce(y, self.model(x)))

    def f(self, batch):
        _, _, _, xv, yv = batch
        return tf.reduce_mean(self.ce(yv, self.model(xv)))

    def arrays(self):
        return (np.arange(N, dtype=np.int32), self.x, self.y, self.xv, self.yv)

    def dataset(self, batch_size=16):
        return tf.data.Dataset.from_tensor_slices(self.arrays()).batch(batch_size)


# ------------------------------------------------------------------ learning rates

def test_a_keras_schedule_drives_a_user_optimizer_and_penalty_leaves_it_alone():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    p = Problem(lower_optimizer=keras.optimizers.SGD(schedule), schedule=ptf.PenaltySchedule(eps0=1e6))
    history = p.solver.run(p.dataset(), epochs=2, lower_steps=2, verbose=0)
    # Every tolerance test passes (eps0 huge): rho x1.1 six times; u's optimizer (made from a
    # float) decays x0.9 each time, v's follows its schedule only: 0.1 * 0.5^(2 x 6 lower steps).
    assert history.history["rho"][-1] == pytest.approx(1e-2 * 1.1 ** 6, rel=1e-5)
    assert history.history["lr_upper"][-1] == pytest.approx(0.1 * 0.9 ** 6, rel=1e-5)
    assert history.history["lr_lower"][-1] == pytest.approx(0.1 * 0.5 ** 12, rel=1e-5)
    with pytest.raises(TypeError, match="follows a Keras ExponentialDecay, so it cannot be set or scaled"):
        p.solver.scale_learning_rates(0.5, ["lower"])


def test_sgd_with_momentum_keeps_its_learning_rate_unless_marked_schedule_owned():
    plain = Problem(lower_optimizer=keras.optimizers.SGD(0.05, momentum=0.9), schedule=ptf.PenaltySchedule(eps0=1e6))
    plain.solver.run(plain.dataset(), epochs=1, lower_steps=1, verbose=0)
    assert plain.solver.rho.numpy() > 1e-2                       # the tests passed, rho rose ...
    assert plain.solver.learning_rates()["lower"] == [pytest.approx(0.05)]   # ... the user's lr did not move
    marked = Problem(lower_optimizer=ptf.optimizers.schedule_owned(keras.optimizers.SGD(0.05, momentum=0.9)),
                     schedule=ptf.PenaltySchedule(eps0=1e6))
    marked.solver.run(marked.dataset(), epochs=1, lower_steps=1, verbose=0)
    assert marked.solver.learning_rates()["lower"] == [pytest.approx(0.05 * 0.9 ** 3, rel=1e-5)]


def test_reduce_lr_on_plateau_and_learning_rate_scheduler_act_on_the_chosen_level():
    p = Problem(schedule=ptf.PenaltySchedule(eps0=0.0 + 1e-30))   # the test never passes: no decay
    plateau = keras.callbacks.ReduceLROnPlateau("f", factor=0.5, patience=0, mode="max", min_delta=1e9)
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 / (epoch + 1))
    history = p.solver.run(p.dataset(), epochs=3, lower_steps=1, verbose=0,
                           callbacks=[cb.OnLevel(plateau, "upper"), cb.OnLevel(scheduler, "lower")])
    # Epoch 0 sets the best f; then "no improvement" (min_delta 1e9): the upper lr halves
    # after epochs 1 and 2; the lower one follows the scheduler.
    assert p.solver.learning_rates()["upper"] == [pytest.approx(0.1 * 0.5 ** 2)]
    assert history.history["lr_lower"] == pytest.approx([0.01, 0.005, 0.01 / 3])
    with pytest.raises(ValueError, match=r"no optimizer level 'linear'; choose from \['upper', 'lower'\]"):
        p.solver.run(p.dataset(), epochs=1, verbose=0, callbacks=[cb.OnLevel(plateau, "linear")])


@pytest.mark.parametrize("callback,instead", [
    (lambda d: keras.callbacks.ModelCheckpoint(os.path.join(d, "m.keras")), "penalty_tf.callbacks.Checkpoint"),
    (lambda d: keras.callbacks.TensorBoard(d), "penalty_tf.callbacks.TensorBoard"),
    (lambda d: keras.callbacks.BackupAndRestore(d), "penalty_tf.callbacks.Checkpoint"),
    (lambda d: keras.callbacks.ReduceLROnPlateau(), "penalty_tf.callbacks.OnLevel(ReduceLROnPlateau"),
    (lambda d: keras.callbacks.LearningRateScheduler(lambda e, lr: lr), "penalty_tf.callbacks.OnLevel("),
    (lambda d: keras.callbacks.TerminateOnNaN(), "check_finite=True"),
])
def test_a_keras_callback_that_cannot_work_is_refused_before_any_step(tmp_path, callback, instead):
    p = Problem()
    with pytest.raises(TypeError, match="does not work on a bilevel solver; use .*" + re.escape(instead)):
        p.solver.run(p.dataset(), epochs=1, verbose=0, callbacks=[callback(str(tmp_path))])
    assert p.solver.iteration == 0 and p.solver.tracing_count() == 0


def test_early_stopping_restores_the_best_weights():
    p = Problem(upper_optimizer=0.1, lower_optimizer=0.05)
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(p.solver.get_weights()))
    stop = keras.callbacks.EarlyStopping("f", patience=1, mode="max", restore_best_weights=True)
    history = p.solver.run(p.dataset(), epochs=6, lower_steps=2, verbose=0, callbacks=[record, stop])
    # f (the validation loss) falls every epoch: "max" sees no improvement after epoch 0.
    assert history.epoch == [0, 1] and np.argmax(history.history["f"]) == 0
    for now, best in zip(p.solver.get_weights(), seen[0]):
        np.testing.assert_array_equal(now, best)


# ------------------------------------------------------------------ data input

def test_arrays_with_batch_size_are_shuffled_minibatches_and_a_bare_tuple_is_refused():
    p, q = Problem(), Problem()
    history = p.solver.run(p.arrays(), epochs=2, batch_size=16, seed=3, verbose=0)
    assert p.solver.iteration == 6 and len(history.history["f"]) == 2
    ds = tf.data.Dataset.from_tensor_slices(q.arrays()).shuffle(N, seed=3, reshuffle_each_iteration=True).batch(16)
    q.solver.run(ds, epochs=2, verbose=0)
    np.testing.assert_array_equal(p.u.numpy(), q.u.numpy())      # the same pipeline
    with pytest.raises(TypeError, match="pass batch_size=N to slice it into minibatches"):
        p.solver.run(p.arrays(), verbose=0)
    with pytest.raises(ValueError, match=r"different lengths \[10, 48\]"):
        p.solver.run((p.x, p.y[:10]), batch_size=8, verbose=0)
    with pytest.raises(TypeError, match="one-pass iterator"):
        p.solver.run(iter(list(p.dataset())), epochs=2, verbose=0)
    with pytest.raises(ValueError, match="the dataset is empty"):
        p.solver.run(p.dataset().take(0), verbose=0)
    with pytest.raises(ValueError, match="repeats forever: pass steps_per_epoch="):
        p.solver.run(p.dataset().repeat(), verbose=0)
    p.solver.run(p.dataset().repeat(), epochs=2, steps_per_epoch=5, verbose=0)
    assert p.solver.iteration == 16


def test_progress_bar_prints_one_final_line_per_epoch_with_the_epoch_means(capsys):
    p = Problem()
    gen = tf.data.Dataset.from_generator(lambda: iter(p.dataset()), output_signature=p.dataset().element_spec)
    history = p.solver.run(gen, epochs=2, lower_steps=1, callbacks=[ptf.training.ProgressBar(("f",))])
    text = re.sub(r"\x1b\[[0-9;]*m|\x08", "", capsys.readouterr().out)
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    assert text.count("Epoch 1/2") == 1 and text.count("Epoch 2/2") == 1
    # One final line per epoch, with the epoch mean History has; the second epoch knows its 3 steps.
    finals = [line for line in lines if line.startswith("3/3")]
    assert len(finals) == 2, lines
    for line, mean in zip(finals, history.history["f"]):
        assert line.endswith(f"f: {mean:.4f}"), (line, mean)
    assert "Unknown" not in text.split("Epoch 2/2")[1]


# ------------------------------------------------------------------ validation, refit, reset

def test_validation_metrics_are_in_history_and_equal_a_direct_evaluation(tmp_path):
    p = Problem()
    log = tmp_path / "log.csv"
    history = p.solver.run(p.dataset(), epochs=2, verbose=0, validation_data=(p.xv, p.yv),
                           validation_model=p.model, metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(2)],
                           callbacks=[keras.callbacks.CSVLogger(str(log))])
    predicted = np.argmax(p.model(p.xv).numpy(), axis=1)
    assert history.history["val_accuracy"][-1] == pytest.approx(np.mean(predicted == p.yv))
    assert 0 <= history.history["val_sparse_top_k_categorical_accuracy"][-1] <= 1
    rows = list(csv.DictReader(log.open()))
    assert len(rows) == 2 and float(rows[1]["val_accuracy"]) == pytest.approx(history.history["val_accuracy"][1])
    with pytest.raises(ValueError, match="pass validation_model=model"):
        p.solver.run(p.dataset(), verbose=0, validation_data=(p.xv, p.yv), metrics=["accuracy"])
    with pytest.raises(ValueError, match="metrics= are evaluated on validation_data="):
        p.solver.run(p.dataset(), verbose=0, metrics=["accuracy"])


def test_refit_trains_a_fresh_lower_level_with_u_fixed_and_reset_lower_optimizers():
    p = Problem()
    initial = [w.numpy().copy() for w in p.model.weights]      # v when the solver was built
    p.solver.run(p.dataset(), epochs=2, lower_steps=2, verbose=0)
    u = p.u.numpy().copy()
    upper_moments = [v.numpy().copy() for v in p.solver.upper.optimizers[0].variables]
    p.solver.reset_lower_optimizers()
    lower = p.solver.lower.optimizers[0]
    assert all(not np.any(v.numpy()) for v in lower.variables if v is not lower._learning_rate)
    for before, v in zip(upper_moments, p.solver.upper.optimizers[0].variables):
        np.testing.assert_array_equal(before, v.numpy())
    result = p.solver.refit(p.dataset(), epochs=30, optimizer=0.05)
    g = result["g"]
    assert len(g) == 30 and g[-1] < 0.8 * g[0]
    np.testing.assert_array_equal(p.u.numpy(), u)                 # u fixed
    # A fresh start: reinitialize=True restored v's initial values first (reset_lower).
    trained = [w.numpy().copy() for w in p.model.weights]
    again = p.solver.refit(p.dataset(), epochs=30, optimizer=0.05)
    assert again["g"] == pytest.approx(g)          # the same fresh start, the same run
    p.solver.reset_lower()
    for w, w0, w1 in zip(p.model.weights, initial, trained):
        np.testing.assert_array_equal(w.numpy(), w0)
        assert np.abs(w1 - w0).max() > 1e-3


# ------------------------------------------------------------------ checkpoints

def test_checkpoint_arguments_are_checked_and_a_nan_in_the_first_epoch_rolls_back_to_the_start(tmp_path, capsys):
    p = Problem()
    for bad in ({"every": 0}, {"every": 1.5}, {"max_to_keep": 0}):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            cb.Checkpoint(p.solver, str(tmp_path / "x"), **bad)
    start = [w.numpy().copy() for w in p.model.weights]
    scale = tf.Variable(1.0)
    solver = ptf.Penalty(lambda b: p.f(b) * scale, p.g, p.u, p.model, upper_optimizer=0.1, lower_optimizer=0.01)
    poison = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: scale.assign(np.nan))
    history = solver.run(p.dataset(), epochs=2, verbose=0,
                         callbacks=[cb.Checkpoint(solver, str(tmp_path / "c")), poison])
    err = capsys.readouterr().err
    assert isinstance(history.error, ptf.NonFiniteError) and "run stopped at epoch 0" in err
    assert "rolled u, v and the solver state back to" in err and "ckpt-0" in err
    for before, w in zip(start, p.model.weights):
        np.testing.assert_array_equal(before, w.numpy())


KILLED_RUN = textwrap.dedent('''
    import os, sys
    import numpy as np, tensorflow as tf, keras
    import penalty_tf as ptf
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    out, kill_at = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    n, d, c = 60, 4, 3
    x, xv = (rng.normal(size=(n, d)).astype(np.float32) for _ in range(2))
    y, yv = (rng.integers(0, c, n).astype(np.int32) for _ in range(2))
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(c)])
    u = tf.Variable(tf.zeros([n]), name="u")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    g = lambda b: tf.reduce_mean(tf.sigmoid(tf.gather(u, b[0])) * ce(b[2], model(b[1])))
    f = lambda b: tf.reduce_mean(ce(b[4], model(b[3])))
    solver = ptf.Penalty(f, g, u, model, upper_optimizer=0.1, lower_optimizer=0.01)
    # The pipeline of docs/using_the_solver.md: shuffled with a seed, reshuffled every epoch.
    ds = tf.data.Dataset.from_tensor_slices((np.arange(n, dtype=np.int32), x, y, xv, yv))
    ds = ds.shuffle(n, seed=0).batch(16).prefetch(2)
    ckpt = ptf.callbacks.Checkpoint(solver, os.path.join(out, "ckpt"))
    start = ckpt.restore()
    kill = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: os._exit(3) if solver.iteration == kill_at else None)
    solver.run(ds, epochs=5, lower_steps=2, callbacks=[ckpt, kill], initial_epoch=start, verbose=0)
    np.savez(os.path.join(out, "final.npz"), u=u.numpy(), *[w.numpy() for w in model.weights])
''')


def _killed_run(out, kill_at):
    return subprocess.run([sys.executable, "-c", KILLED_RUN, str(out), str(kill_at)], capture_output=True,
                          text=True, timeout=300)


def test_a_run_killed_at_a_random_batch_resumes_to_the_bitwise_equal_result(tmp_path, random_stop):
    kill_at = random_stop(1, 20)          # 5 epochs x 4 batches: any batch but the last
    full = _killed_run(tmp_path / "full", 0)
    assert full.returncode == 0, full.stderr
    killed = _killed_run(tmp_path / "cut", kill_at)
    assert killed.returncode == 3, killed.stderr
    assert not (tmp_path / "cut" / "final.npz").exists()
    resumed = _killed_run(tmp_path / "cut", 0)
    assert resumed.returncode == 0, resumed.stderr
    with np.load(tmp_path / "full" / "final.npz") as a, np.load(tmp_path / "cut" / "final.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{name}, killed after iteration {kill_at}")


# ------------------------------------------------------------------ real MNIST, all together

def test_real_mnist_reweighting_with_keras_schedule_plateau_early_stopping_csv_and_validation(shared_data_dir, tmp_path):
    """Noisy-label reweighting (40 % of 2,000 MNIST labels wrong, 200 clean validation
    points): a Keras ExponentialDecay on the user's lower Adam, ReduceLROnPlateau on u's
    learning rate, EarlyStopping on val_accuracy restoring the best weights, CSVLogger and
    test accuracy as the validation metric, all in one `run`."""
    from penalty_tf.datasets.mnist import load_mnist

    m, rng = load_mnist(str(shared_data_dir), download=False), np.random.default_rng(0)
    n, nv, nt = 2000, 200, 2000
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0
    x, y = flat(m.x_train[:n]), m.y_train[:n].astype(np.int32)
    noisy = rng.random(n) < 0.4
    y_noisy = np.where(noisy, (y + rng.integers(1, 10, n)) % 10, y).astype(np.int32)
    xv, yv = flat(m.x_train[n:n + nv]), m.y_train[n:n + nv].astype(np.int32)
    xt, yt = flat(m.x_test[:nt]), m.y_test[:nt].astype(np.int32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    u = tf.Variable(tf.zeros(n), name="importance_logits")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def g(batch):
        (i, xb, yb), _ = batch
        return tf.reduce_mean(tf.sigmoid(tf.gather(u, i)) * ce(yb, model(xb)))

    def f(batch):
        _, (xvb, yvb) = batch
        return tf.reduce_mean(ce(yvb, model(xvb)))

    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=100, decay_rate=0.8)
    solver = ptf.Penalty(f, g, u, model, upper_optimizer=1.0, lower_optimizer=keras.optimizers.Adam(schedule),
                         schedule=ptf.PenaltySchedule(rho0=1.0, lamb0=1.0, eps0=1e-2, nu0=0.0))
    train = tf.data.Dataset.from_tensor_slices((np.arange(n, dtype=np.int32), x, y_noisy)).shuffle(n, seed=0).batch(100)
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).shuffle(nv, seed=1).repeat().batch(100)
    best_weights = {}
    keep = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: best_weights.update({e: solver.get_weights()}))
    history = solver.run(
        tf.data.Dataset.zip((train, val)), epochs=10, lower_steps=5, verbose=0,
        validation_data=(xt, yt), validation_model=model, metrics=["accuracy"],
        callbacks=[cb.OnLevel(keras.callbacks.ReduceLROnPlateau("val_accuracy", mode="max", patience=1, factor=0.5),
                              "upper"),
                   keras.callbacks.EarlyStopping("val_accuracy", mode="max", patience=3, restore_best_weights=True),
                   keras.callbacks.CSVLogger(str(tmp_path / "log.csv")), keep])
    acc, epochs = history.history["val_accuracy"], history.epoch
    # The schedule: 20 batches x 5 lower steps = 100 optimizer steps per epoch.
    assert history.history["lr_lower"] == pytest.approx([1e-3 * 0.8 ** (k + 1) for k in epochs], rel=1e-5)
    # ReduceLROnPlateau's rule (min_delta 1e-4, patience 1), replayed on the logged accuracies.
    lr, best, wait, expected = 1.0, -np.inf, 0, []
    for a in acc:
        best, wait = (a, 0) if a - 1e-4 > best else (best, wait + 1)
        if wait >= 1:
            lr, wait = lr * 0.5, 0
        expected.append(lr)
    assert solver.learning_rates()["upper"] == [pytest.approx(expected[-1])]
    # EarlyStopping: stopped 3 epochs after the best one (or ran out), weights of the best epoch.
    top = int(np.argmax(acc))
    assert len(epochs) == 10 or len(epochs) == top + 4
    for now, then in zip(solver.get_weights(), best_weights[top]):
        np.testing.assert_array_equal(now, then)
    assert np.mean(np.argmax(model(xt).numpy(), 1) == yt) == pytest.approx(max(acc))
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [float(r["val_accuracy"]) for r in rows] == pytest.approx(acc)
    # The learning itself: a useful classifier from noisy labels, and the clean points weighted up.
    importance = tf.sigmoid(u).numpy()
    assert max(acc) > 0.78
    assert importance[~noisy].mean() > 2 * importance[noisy].mean()


def test_a_damaged_checkpoint_is_one_clear_error_naming_it(tmp_path):
    p = Problem()
    ckpt = cb.Checkpoint(p.solver, str(tmp_path / "c"))
    p.solver.run(p.dataset(), epochs=1, verbose=0, callbacks=[ckpt])
    data = sorted((tmp_path / "c").glob("ckpt-1.data-*"))[0]
    data.write_bytes(data.read_bytes()[:100])                  # truncated, as by a full disk
    with pytest.raises(cb.CheckpointError, match=r"cannot restore .*ckpt-1: .*use another directory"):
        cb.Checkpoint(Problem().solver, str(tmp_path / "c")).restore()


def test_callback_arguments_are_checked_where_they_are_made():
    with pytest.raises(ValueError, match="update_freq must be an integer >= 0"):
        cb.TensorBoard("logs", update_freq=-1)
    with pytest.raises(ValueError, match="factor must be > 0"):
        cb.ScaleLearningRates(-0.5, when=lambda e: True)
    with pytest.raises(TypeError, match="when must be a function"):
        cb.ScaleLearningRates(0.5, when=3)
    p = Problem()
    with pytest.raises(ValueError, match=r"has no level \['linear'\]"):
        p.solver.run(p.dataset(), verbose=0, callbacks=[cb.ScaleLearningRates(0.5, lambda e: True, ["linear"])])
    with pytest.raises(ValueError, match="every must be >= 1"):
        cb.Validation((p.xv, p.yv), ["accuracy"], model=p.model, every=0)
