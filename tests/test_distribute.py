"""The solvers under tf.distribute.MirroredStrategy on 2 logical CPU devices equal the
single-device solvers on the same global batches.

Logical devices must be configured before TensorFlow initialises its devices, which the
other tests have done long before, so the comparison runs in a fresh Python process
(this file run as a script) and the test checks what it prints.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

N, D, H, C, BATCH = 32, 6, 8, 3, 16


def build(solver_name, strategy=None):
    """A reweighting problem with a Keras MLP: u per-example weights, v the MLP."""
    import keras
    import tensorflow as tf

    import penalty_tf as ptf
    from penalty_tf.losses import sparse_softmax_cross_entropy

    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(H, activation="tanh"),
                              keras.layers.Dense(C)])
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5 for w in model.weights])
    u = tf.Variable(rng.normal(size=N).astype(np.float32) * 0.1, name="u")

    def lower_loss(batch):
        idx, x, y, _, _ = batch
        a = tf.sigmoid(tf.gather(u, idx))
        return tf.reduce_mean(a * sparse_softmax_cross_entropy(y, model(x)))

    def upper_loss(batch):
        _, _, _, xv, yv = batch
        return tf.reduce_mean(sparse_softmax_cross_entropy(yv, model(xv))) + 1e-3 * tf.reduce_sum(u * u)

    kwargs = dict(upper_optimizer=0.05, lower_optimizer=0.02)
    if solver_name == "penalty":   # a large eps0 makes the schedule fire: rho, nu, lrs change
        solver = ptf.Penalty(upper_loss, lower_loss, u, model.trainable_variables,
                             schedule=ptf.PenaltySchedule(eps0=10.0, nu0=1e-3), **kwargs)
    elif solver_name == "approxgrad":
        solver = ptf.ApproxGrad(upper_loss, lower_loss, u, model.trainable_variables, **kwargs)
    elif solver_name == "gd":
        solver = ptf.GD(upper_loss, lower_loss, u, model.trainable_variables, **kwargs)
    else:
        solver = ptf.RMD(upper_loss, lower_loss, u, model.trainable_variables, upper_lr=1.0,
                         lower_lr=0.05, exact=True)
    return solver, u, model


def dataset():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    data = (np.arange(N, dtype=np.int32), rng.normal(size=(N, D)).astype(np.float32),
            rng.integers(0, C, N).astype(np.int32), rng.normal(size=(N, D)).astype(np.float32),
            rng.integers(0, C, N).astype(np.int32))
    return tf.data.Dataset.from_tensor_slices(data).batch(BATCH, drop_remainder=True)


def compare():
    """Run each solver for 2 epochs (4 steps, T = 3) both ways; print JSON of differences."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    report = {"replicas": strategy.num_replicas_in_sync}
    for name in ("penalty", "approxgrad", "gd", "rmd"):
        single, u1, m1 = build(name)
        h1 = single.run(dataset(), epochs=2, lower_steps=3, verbose=0)
        with strategy.scope():
            dist, u2, m2 = build(name)
        h2 = dist.run(dataset(), epochs=2, lower_steps=3, verbose=0)
        weights = [np.max(np.abs(a - b)) for a, b in zip(m1.get_weights(), m2.get_weights())]
        entry = {"u": float(np.max(np.abs(u1.numpy() - u2.numpy()))), "v": float(max(weights)),
                 "u_moved": float(np.max(np.abs(u1.numpy() - build(name)[1].numpy()))),
                 "logs": {k: [h1.history[k], h2.history[k]] for k in h1.history},
                 "traces": dist.tracing_count(), "mirrored": type(u2).__name__}
        if name == "penalty":
            entry["nu"] = float(max(np.max(np.abs(a.numpy() - b.numpy()))
                                    for a, b in zip(single.nu, dist.nu)))
            entry["nu_moved"] = float(np.max(np.abs(single.nu[0].numpy() - 1e-3)))
            # A checkpoint written under the strategy restores into a single-device solver.
            dist.sync_counters_to_checkpoint()
            path = dist.checkpoint().save(os.path.join(tempfile.mkdtemp(), "ckpt"))
            fresh, _, _ = build(name)
            fresh.checkpoint().restore(path).assert_existing_objects_matched()
            fresh.sync_counters_from_checkpoint()
            entry["restored_state"] = float(max(np.max(np.abs(a.numpy() - b.numpy())) for a, b in
                                                zip(fresh.state_variables() + fresh.variables(),
                                                    dist.state_variables() + dist.variables())))
            entry["restored_iteration"] = fresh.iteration
        report[name] = entry
    print("RESULT " + json.dumps(report))


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env,
                          timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("name", ["penalty", "approxgrad", "gd", "rmd"])
def test_mirrored_strategy_step_equals_the_single_device_step(report, name):
    assert report["replicas"] == 2
    r = report[name]
    assert r["mirrored"] == "MirroredVariable"
    assert r["u_moved"] > 1e-3                       # the runs did something
    assert r["u"] < 1e-5 and r["v"] < 1e-5, r
    for key, (single, dist) in r["logs"].items():
        np.testing.assert_allclose(dist, single, rtol=1e-5, atol=1e-6, err_msg=key)
    assert r["traces"] == 1


def test_penalty_state_is_consistent_under_the_strategy(report):
    r = report["penalty"]
    assert r["logs"]["rho"][0][-1] > 0.0101        # the schedule fired (rho0 = 0.01)
    assert r["nu_moved"] > 1e-6 and r["nu"] < 1e-6
    assert r["restored_state"] == 0.0 and r["restored_iteration"] == 4


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    compare()
