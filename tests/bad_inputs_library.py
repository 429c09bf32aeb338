"""The bad-input catalogue's cases for the library loop, callbacks and solver settings
(`tests/bad_inputs.py` adds them to its `LIBRARY_CASES`): each call must raise the
exception named, with a message that names the fix."""

from __future__ import annotations

import tempfile
from typing import Any, Callable


def _problem(**options):
    """A Penalty on u (2,), v (2,) with quadratic f and g, its data as a tf.data.Dataset."""
    import numpy as np
    import tensorflow as tf

    import penalty_tf as ptf

    u, v = tf.Variable([1.0, -1.0], name="u"), tf.Variable([0.5, 0.5], name="v")

    def f(batch):
        return tf.reduce_sum(tf.square(v - 1.0)) + 0.1 * tf.reduce_sum(tf.square(u)) + 0.0 * tf.reduce_sum(batch)

    def g(batch):
        return tf.reduce_sum(tf.square(v - u))

    f_, g_ = options.pop("f", f), options.pop("g", g)
    solver = ptf.Penalty(f_, g_, options.pop("upper_vars", [u]), options.pop("lower_vars", [v]), **options)
    data = tf.data.Dataset.from_tensor_slices(np.zeros((8, 2), np.float32)).batch(4)
    return solver, data, u, v


def _run(**kwargs):
    solver, data, _, _ = _problem()
    kwargs.setdefault("verbose", 0)
    return solver.run(kwargs.pop("dataset", data), **kwargs)


def _run_on(make_data: Callable[[Any], Any], **kwargs):
    solver, data, _, _ = _problem()
    return solver.run(make_data(data), verbose=0, **kwargs)


def _config(**fields):
    import penalty_tf as ptf

    return ptf.solvers.PenaltyConfig(**fields)


def _keras_callback(name: str, *args):
    import keras

    folder = tempfile.mkdtemp(prefix="bad_inputs_cb_")
    made = {"ModelCheckpoint": lambda: keras.callbacks.ModelCheckpoint(folder + "/m.keras"),
            "TensorBoard": lambda: keras.callbacks.TensorBoard(folder),
            "BackupAndRestore": lambda: keras.callbacks.BackupAndRestore(folder),
            "ReduceLROnPlateau": lambda: keras.callbacks.ReduceLROnPlateau(),
            "LearningRateScheduler": lambda: keras.callbacks.LearningRateScheduler(lambda e, lr: lr),
            "TerminateOnNaN": lambda: keras.callbacks.TerminateOnNaN()}[name]()
    return _run(callbacks=[made])


def _scheduled_lr_scaled():
    import keras

    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    solver, _, _, _ = _problem(lower_optimizer=keras.optimizers.SGD(schedule))
    solver.scale_learning_rates(0.5, ["lower"])


def _on_level(level: str):
    import keras

    import penalty_tf as ptf

    return _run(callbacks=[ptf.callbacks.OnLevel(keras.callbacks.ReduceLROnPlateau("f"), level)])


def _checkpoint(**kwargs):
    import penalty_tf as ptf

    solver, _, _, _ = _problem()
    return ptf.callbacks.Checkpoint(solver, tempfile.mkdtemp(prefix="bad_inputs_ck_"), **kwargs)


def _damaged_checkpoint():
    from pathlib import Path

    import penalty_tf as ptf

    solver, data, _, _ = _problem()
    folder = tempfile.mkdtemp(prefix="bad_inputs_ck_")
    solver.run(data, verbose=0, callbacks=[ptf.callbacks.Checkpoint(solver, folder)])
    for path in Path(folder).glob("ckpt-1.data-*"):
        path.write_bytes(path.read_bytes()[:50])
    ptf.callbacks.Checkpoint(_problem()[0], folder).restore()


def _unreached_upper():
    import tensorflow as tf

    solver, data, _, _ = _problem(upper_vars=[tf.Variable([0.0], name="unused")])
    solver.step(next(iter(data)), 1)


def _validation(**kwargs):
    import numpy as np

    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int32)
    return _run(validation_data=(x, y), **kwargs)


def _cases(LibraryCase: type) -> list:
    """The cases, made with the catalogue's `LibraryCase` class."""
    import numpy as np

    arrays = (np.zeros((8, 2), np.float32), np.zeros(8, np.int32))
    return [
        LibraryCase("settings/rho0-negative", lambda: _config(rho0=-1.0), ValueError, "rho0 must be > 0"),
        LibraryCase("settings/c_rho-below-1", lambda: _config(c_rho=0.9), ValueError, "c_rho must be >= 1"),
        LibraryCase("settings/eps0-zero", lambda: _config(eps0=0.0), ValueError, "eps0 must be > 0"),
        LibraryCase("settings/lr_u-negative", lambda: _config(lr_u=-1e-3), ValueError, "lr_u must be >= 0"),
        LibraryCase("settings/lr_v-nan", lambda: _config(lr_v=float("nan")), ValueError, "must be a finite number"),
        LibraryCase("settings/lr_decay-above-1", lambda: _config(lr_decay=1.5), ValueError,
                    "lr_decay must be in (0, 1]"),
        LibraryCase("solver/negative-learning-rate", lambda: _problem(upper_optimizer=-0.1), ValueError,
                    "learning rate must be >= 0"),
        LibraryCase("solver/schedule-not-a-schedule", lambda: _problem(schedule={"rho0": 1.0}), TypeError,
                    "schedule must be a PenaltySchedule"),
        LibraryCase("solver/scheduled-lr-scaled", _scheduled_lr_scaled, TypeError,
                    "give the optimizer a float learning rate"),
        LibraryCase("solver/upper-level-unreached", _unreached_upper, ValueError, "the losses must use them"),
        LibraryCase("run/bare-tuple-of-arrays", lambda: _run(dataset=arrays), TypeError, "pass batch_size=N"),
        LibraryCase("run/arrays-of-other-lengths", lambda: _run(dataset=(arrays[0], arrays[1][:3]), batch_size=4),
                    ValueError, "build the batches yourself"),
        LibraryCase("run/batch-size-on-a-dataset", lambda: _run(batch_size=4), TypeError, "batch it there"),
        LibraryCase("run/one-pass-iterator", lambda: _run_on(lambda d: iter(list(d)), epochs=2), TypeError,
                    "pass a re-iterable"),
        LibraryCase("run/empty-dataset", lambda: _run_on(lambda d: d.take(0)), ValueError, "the dataset is empty"),
        LibraryCase("run/infinite-dataset", lambda: _run_on(lambda d: d.repeat()), ValueError,
                    "pass steps_per_epoch="),
        LibraryCase("run/steps-per-epoch-0", lambda: _run(steps_per_epoch=0), ValueError,
                    "steps_per_epoch must be >= 1"),
        LibraryCase("run/initial-epoch-after-epochs", lambda: _run(epochs=2, initial_epoch=3), ValueError,
                    "0 <= initial_epoch <= epochs"),
        LibraryCase("run/on-nonfinite-unknown", lambda: _run(on_nonfinite="ignore"), ValueError,
                    "on_nonfinite must be 'stop' or 'raise'"),
        LibraryCase("run/not-a-callback", lambda: _run(callbacks=[print]), TypeError,
                    "keras.callbacks.Callback instances"),
        LibraryCase("run/metrics-without-validation-data", lambda: _run(metrics=["accuracy"]), ValueError,
                    "give both"),
        LibraryCase("run/keras-metric-without-model", lambda: _validation(metrics=["accuracy"]), ValueError,
                    "pass validation_model=model"),
        *[LibraryCase(f"callbacks/keras-{name}", lambda name=name: _keras_callback(name), TypeError, instead)
          for name, instead in [("ModelCheckpoint", "penalty_tf.callbacks.Checkpoint"),
                                ("TensorBoard", "penalty_tf.callbacks.TensorBoard"),
                                ("BackupAndRestore", "penalty_tf.callbacks.Checkpoint"),
                                ("ReduceLROnPlateau", "penalty_tf.callbacks.OnLevel"),
                                ("LearningRateScheduler", "penalty_tf.callbacks.OnLevel"),
                                ("TerminateOnNaN", "check_finite=True")]],
        LibraryCase("callbacks/on-level-unknown", lambda: _on_level("middle"), ValueError,
                    "choose from ['upper', 'lower']"),
        LibraryCase("callbacks/checkpoint-every-0", lambda: _checkpoint(every=0), ValueError,
                    "every must be an integer >= 1"),
        LibraryCase("callbacks/checkpoint-damaged", _damaged_checkpoint, ValueError, "use another directory"),
        LibraryCase("callbacks/tensorboard-update-freq", lambda: __import__("penalty_tf").callbacks.TensorBoard(
            "logs", update_freq=-2), ValueError, "update_freq must be an integer >= 0"),
        LibraryCase("callbacks/scale-factor-negative", lambda: __import__("penalty_tf").callbacks.ScaleLearningRates(
            -1.0, when=lambda e: True), ValueError, "factor must be > 0"),
    ]
