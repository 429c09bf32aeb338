"""The solvers under tf.distribute.MultiWorkerMirroredStrategy: two worker processes on
127.0.0.1 (TF_CONFIG with two localhost ports, CPU collectives over gRPC) run the same
`solver.run` as one process on the same global batches, and end at the same iterates
(issue 16 item 5).

Each worker is this file run as a script. It creates the strategy first (TensorFlow
requires that before any other op), runs every solver once outside the strategy's scope
(the single-process reference, on the full global batches) and once inside it (the data
sharded between the workers by `experimental_distribute_dataset`, 8 of every 16 points
per worker), and writes the differences as JSON.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

N, D, H, C, BATCH = 32, 6, 8, 3, 16
SOLVERS = ("penalty", "approxgrad", "bome", "soba", "gd")


def build(name):
    """Per-example weights u of a Keras MLP v (test_distribute's problem)."""
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
        return tf.reduce_mean(tf.sigmoid(tf.gather(u, idx)) * sparse_softmax_cross_entropy(y, model(x)))

    def upper_loss(batch):
        _, _, _, xv, yv = batch
        return tf.reduce_mean(sparse_softmax_cross_entropy(yv, model(xv))) + 1e-3 * tf.reduce_sum(u * u)

    options = {"lr_u": 0.05, "lr_v": 0.02}
    if name == "penalty":       # a large eps0 makes the schedule fire: rho, nu, lrs change
        options.update(eps0=10.0, nu0=1e-3)
    problem = ptf.BilevelProblem(upper_loss, lower_loss, u, model.trainable_variables)
    return ptf.solvers.make(name, problem, **options), u, model


def dataset(shuffle=False):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    data = (np.arange(N, dtype=np.int32), rng.normal(size=(N, D)).astype(np.float32),
            rng.integers(0, C, N).astype(np.int32), rng.normal(size=(N, D)).astype(np.float32),
            rng.integers(0, C, N).astype(np.int32))
    ds = tf.data.Dataset.from_tensor_slices(data)
    if shuffle:            # a new order every epoch: a resumed run must restore the position
        ds = ds.shuffle(N, seed=5, reshuffle_each_iteration=True)
    return ds.batch(BATCH, drop_remainder=True)


EPOCHS = 4


def resumed_worker(out_path, directory, phase):
    """Penalty for EPOCHS epochs with a Checkpoint; in the first phase worker 1 dies after
    the checkpoint of epoch 2 (the test then kills the chief); the second phase restores
    and finishes. Writes where it started and how far it is from one process's
    uninterrupted run."""
    import time

    import keras
    import tensorflow as tf

    from penalty_tf import callbacks as cb

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        dist, u2, m2 = build("penalty")
    ckpt = cb.Checkpoint(dist, directory)
    start = ckpt.restore()
    callbacks = [ckpt]
    if phase == "first" and strategy.cluster_resolver.task_id == 1:
        def die(epoch, logs):
            if epoch == 1:
                time.sleep(2)
                os._exit(3)
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=die))
    dist.run(dataset(shuffle=True), epochs=EPOCHS, lower_steps=3, verbose=0, callbacks=callbacks,
             initial_epoch=start)
    single, u1, m1 = build("penalty")
    single.run(dataset(shuffle=True), epochs=EPOCHS, lower_steps=3, verbose=0)
    report = {"start": start, "iteration": dist.iteration, "epoch": dist.epoch,
              "u": float(np.max(np.abs(u1.numpy() - u2.numpy()))),
              "v": float(max(np.max(np.abs(a - b)) for a, b in zip(m1.get_weights(), m2.get_weights()))),
              "files": sorted(os.listdir(directory))}
    with open(out_path, "w") as f:
        json.dump(report, f)


def worker(out_path):
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    report = {"replicas": strategy.num_replicas_in_sync, "chief": strategy.cluster_resolver.task_id == 0}
    first = next(iter(strategy.experimental_distribute_dataset(dataset())))
    report["first_batch_here"] = strategy.experimental_local_results(first)[0][0].numpy().tolist()
    for name in SOLVERS:
        single, u1, m1 = build(name)
        h1 = single.run(dataset(), epochs=2, lower_steps=3, verbose=0)
        with strategy.scope():
            dist, u2, m2 = build(name)
        h2 = dist.run(dataset(), epochs=2, lower_steps=3, verbose=0)
        start = build(name)[1].numpy()
        report[name] = {
            "u": float(np.max(np.abs(u1.numpy() - u2.numpy()))),
            "v": float(max(np.max(np.abs(a - b)) for a, b in zip(m1.get_weights(), m2.get_weights()))),
            "u_moved": float(np.max(np.abs(u1.numpy() - start))),
            "logs": {k: [h1.history[k], h2.history[k]] for k in h1.history},
            "iterations": [single.iteration, dist.iteration], "kind": type(u2).__name__}
    with open(out_path, "w") as f:
        json.dump(report, f)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(tmp, *args):
    """Two worker processes of this script (``args`` after the output file) on free
    localhost ports; returns them with their output files."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs, outs = [], []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        outs.append(tmp / f"{args[0] if args else 'run'}-worker{index}.json")
        procs.append(subprocess.Popen([sys.executable, __file__, str(outs[-1]), *map(str, args)], env=env,
                                      cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs, outs


def finish(procs, outs, timeout=300):
    """Wait for both workers; their reports."""
    errors = []
    for p in procs:
        try:
            errors.append(p.communicate(timeout=timeout)[1])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a worker did not finish within {timeout} s")
    for p, err in zip(procs, errors):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out.read_text()) for out in outs]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return finish(*launch(tmp_path_factory.mktemp("workers")))


@pytest.mark.parametrize("name", SOLVERS)
def test_two_workers_end_where_one_process_does(reports, name):
    for report in reports:
        assert report["replicas"] == 2
        r = report[name]
        assert r["kind"] in ("DistributedVariable", "MirroredVariable"), r["kind"]
        assert r["iterations"] == [4, 4]
        if name != "gd":
            assert r["u_moved"] > 1e-3                   # the runs did something
        assert r["u"] < 1e-5 and r["v"] < 1e-5, (name, r["u"], r["v"])
        for key, (single, dist) in r["logs"].items():
            np.testing.assert_allclose(dist, single, rtol=1e-5, atol=1e-6, err_msg=key)
    assert [r["chief"] for r in reports] == [True, False]


def test_each_worker_holds_its_half_of_every_global_batch(reports):
    halves = [r["first_batch_here"] for r in reports]
    assert [len(h) for h in halves] == [BATCH // 2] * 2
    assert sorted(halves[0] + halves[1]) == list(range(BATCH))


def test_a_killed_worker_restarted_with_the_job_ends_where_the_uninterrupted_run_does(tmp_path):
    directory = tmp_path / "ckpt"
    procs, _ = launch(tmp_path, "first", directory)
    try:
        assert procs[1].wait(timeout=300) == 3          # worker 1 died after epoch 2's checkpoint
        time.sleep(3)
    finally:
        procs[0].kill()                                 # the chief hangs in a collective: the job is restarted
        procs[0].wait()
    assert tf_latest(directory).endswith("ckpt-2")
    reports = finish(*launch(tmp_path, "second", directory))
    for r in reports:
        assert r["start"] == 2 and r["epoch"] == EPOCHS and r["iteration"] == 2 * EPOCHS
        assert r["u"] < 1e-5 and r["v"] < 1e-5, r
        assert not [f for f in r["files"] if f.startswith(".worker")]     # scratch folders deleted


def tf_latest(directory):
    """The checkpoint the state file in ``directory`` names (read without TensorFlow)."""
    text = (directory / "checkpoint").read_text()
    return text.splitlines()[0].split(":", 1)[1].strip().strip('"')


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    if len(sys.argv) > 2:
        resumed_worker(sys.argv[1], sys.argv[3], sys.argv[2])
    else:
        worker(sys.argv[1])
