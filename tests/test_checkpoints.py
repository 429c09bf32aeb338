"""RunCheckpoint: exact resume (variables, solver state, NumPy generators, JSON state), the
resume key derived from the config, clear errors for bad files, kill-safe write order; and
the loop's EvaluateEvery / ScaleLearningRates callbacks."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf.checkpoints import CheckpointError, RunCheckpoint, resume_key


@dataclasses.dataclass(frozen=True)
class Settings:
    lr: float = 0.1
    epochs: int = dataclasses.field(default=5, metadata={"resume": False})
    solver: ptf.PenaltyConfig = ptf.PenaltyConfig()


def problem():
    u, v = tf.Variable([0.2]), tf.Variable([1.0, -1.0])
    return ptf.BilevelProblem(lambda b: tf.reduce_sum((v - b) ** 2) + tf.reduce_sum(u ** 2),
                              lambda b: tf.reduce_sum((v - u) ** 2), [u], [v]), u, v


def train(solver, rng, epochs, ckpt=None, start=0, history=None):
    """A toy run: per epoch a random batch from ``rng``, one step, a history entry."""
    history = [] if history is None else history
    for epoch in range(start, epochs):
        out = solver.step(tf.constant(rng.normal(size=2), tf.float32), lower_steps=2)
        history.append(float(out["f"]))
        if ckpt is not None:
            ckpt.save(epoch=epoch + 1, history=history)
    return history


def test_resume_continues_exactly(tmp_path):
    p, u, v = problem()
    full = train(ptf.make("penalty", p, lr_u=0.1), np.random.default_rng(0), 6)
    full_u = u.numpy().copy()

    p, u, v = problem()
    solver, rng = ptf.make("penalty", p, lr_u=0.1), np.random.default_rng(0)
    ckpt = RunCheckpoint(tmp_path, Settings(), rngs={"data": rng}, solver=solver)
    assert ckpt.restore() is None
    train(solver, rng, 3, ckpt)
    train(solver, rng, 5)                        # work after the last save: lost on "kill"

    p, u, v = problem()                          # a new process: fresh objects
    solver, rng = ptf.make("penalty", p, lr_u=0.1), np.random.default_rng(123)
    ckpt = RunCheckpoint(tmp_path, Settings(epochs=6), rngs={"data": rng}, solver=solver)
    state = ckpt.restore()
    assert state["epoch"] == 3 and solver.iteration == 3
    resumed = train(solver, rng, 6, ckpt, start=state["epoch"], history=state["history"])
    assert resumed == full
    np.testing.assert_array_equal(u.numpy(), full_u)


def test_only_the_last_two_checkpoints_are_kept(tmp_path):
    p, _, _ = problem()
    solver = ptf.make("gd", p)
    ckpt = RunCheckpoint(tmp_path, {"a": 1}, solver=solver)
    for k in range(4):
        ckpt.save(k=k)
    names = sorted(x.name for x in tmp_path.iterdir())
    assert names == ["ckpt-3.data-00000-of-00001", "ckpt-3.index",
                     "ckpt-4.data-00000-of-00001", "ckpt-4.index", "run.json"]


def test_a_kill_between_the_checkpoint_and_the_sidecar_leaves_the_previous_save(tmp_path, monkeypatch):
    p, u, _ = problem()
    solver = ptf.make("gd", p)
    ckpt = RunCheckpoint(tmp_path, {"a": 1}, solver=solver)
    ckpt.save(k=1)
    saved_u = u.numpy().copy()
    solver.step(tf.constant([0.0, 0.0]), lower_steps=1)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("penalty_tf.checkpoints.write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(k=2)
    monkeypatch.undo()
    assert ckpt.restore() == {"k": 1}
    np.testing.assert_array_equal(u.numpy(), saved_u)


def test_the_resume_key_comes_from_the_config():
    key = resume_key(Settings())
    assert "epochs" not in key and key["lr"] == 0.1
    assert key["solver"]["type"] == "PenaltyConfig" and key["solver"]["rho0"] == 0.01
    assert "quiet" not in resume_key({"quiet": True, "x": 1}, ignore=("quiet",))


def test_other_settings_are_refused_naming_the_difference(tmp_path):
    p, _, _ = problem()
    solver = ptf.make("gd", p)
    RunCheckpoint(tmp_path, Settings(), solver=solver).save()
    with pytest.raises(CheckpointError, match=r"other settings \(lr: checkpoint 0.1, now 0.2\)"):
        RunCheckpoint(tmp_path, Settings(lr=0.2), solver=solver).restore()
    RunCheckpoint(tmp_path, Settings(epochs=9), solver=solver).restore()   # epochs may differ


@pytest.mark.parametrize("damage", ["sidecar", "data", "json-format"])
def test_damaged_files_give_a_clear_error(tmp_path, damage):
    p, _, _ = problem()
    solver = ptf.make("gd", p)
    RunCheckpoint(tmp_path, {"a": 1}, solver=solver).save()
    if damage == "sidecar":
        text = (tmp_path / "run.json").read_text()
        (tmp_path / "run.json").write_text(text[:len(text) // 2])
        match = "run.json is unreadable or truncated"
    elif damage == "data":
        data = next(tmp_path.glob("ckpt-1.data-*"))
        data.write_bytes(data.read_bytes()[:10])
        match = "checkpoint ckpt-1 is unreadable"
    else:
        sidecar = json.loads((tmp_path / "run.json").read_text())
        sidecar["format"] = 99
        (tmp_path / "run.json").write_text(json.dumps(sidecar))
        match = "format 99"
    with pytest.raises(CheckpointError, match=match):
        RunCheckpoint(tmp_path, {"a": 1}, solver=solver).restore()


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    p, _, _ = problem()
    RunCheckpoint(tmp_path, {"a": 1}, solver=ptf.make("gd", p)).save()
    other = tf.Variable(tf.zeros([3, 3]))
    with pytest.raises(CheckpointError, match="does not match"):
        RunCheckpoint(tmp_path, {"a": 1}, solver=ptf.make("gd", p), extra=other).restore()


def test_evaluate_every_and_scale_learning_rates_in_the_loop():
    p, u, v = problem()
    solver = ptf.make("gd", p, lr_u=0.1, lr_v=0.2)
    calls = []

    def evaluate():
        calls.append(solver.epoch)
        return {"val": float(tf.reduce_sum(v))}

    callbacks = [ptf.callbacks.EvaluateEvery(evaluate, every=2),
                 ptf.callbacks.ScaleLearningRates(0.5, when=lambda epoch: epoch in (1, 3))]
    data = [tf.constant([0.0, 1.0])] * 2
    history = solver.run(data, epochs=5, lower_steps=1, callbacks=callbacks, verbose=0)
    assert calls == [2, 4, 5]          # solver.epoch = epochs done: after epochs 1, 3 and the last
    assert len(history.history["val"]) == 3
    assert solver.learning_rates()["upper"] == pytest.approx([0.025])
    assert history.history["lr_lower"] == pytest.approx([0.2, 0.2, 0.1, 0.1, 0.05])
