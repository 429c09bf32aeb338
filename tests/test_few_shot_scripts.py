"""Both few-shot scripts end to end at a tiny budget on generated files in the real formats,
and a run stopped at a random point then --resumed equal to an uninterrupted run."""

import json

import numpy as np
import pytest

from conftest import build_fake_omniglot
from few_shot import fake_data, miniimagenet, omniglot
from penalty_tf.datasets.lookup import DataError
from penalty_tf.paper.experiment import ExperimentError
from penalty_tf.solvers import ApproxGradConfig, PenaltyConfig, PenaltySchedule

TINY = ["--nway", "3", "--kshot", "1", "--meta-batch", "2", "--test-tasks", "3", "--test-steps", "3",
        "--lower-steps", "2", "--linear-steps", "2", "--query-per-class", "3", "--quiet"]


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory):
    return build_fake_omniglot(tmp_path_factory.mktemp("omniglot"))


def _omniglot(data, out, *extra):
    return omniglot.main(["--data-dir", str(data), "--out", str(out), "--filters", "4",
                          "--train-characters", "4", *TINY, *extra])


@pytest.fixture(scope="module")
def miniimagenet_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("miniimagenet")
    fake_data.write_miniimagenet_pickles(root / "dataset_miniimagenet", images_per_class=16,
                                         classes={"train": 6, "test": 5})
    return root


def _miniimagenet(data, out, *extra):
    return miniimagenet.main(["--data-dir", str(data), "--out", str(out), "--images-per-class", "16",
                              "--filters", "2", "2", "2", "2", "--hidden", "4", "--features", "4",
                              *TINY, "--nway", "5", *extra])


@pytest.mark.parametrize("method", ["penalty", "approxgrad"])
def test_omniglot_end_to_end(omniglot_dir, tmp_path, method):
    result = _omniglot(omniglot_dir, tmp_path, "--method", method, "--iterations", "3", "--eval-every", "2")
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk == result
    evals = result["metrics"]["evaluations"]
    assert [e["iteration"] for e in evals] == [2, 3]                  # every 2 and at the end
    with np.load(tmp_path / "accuracies.npz") as accs:
        per_task = {e["iteration"]: accs[f"iteration_{e['iteration']}"] for e in evals}
    for e in evals:
        accs = per_task[e["iteration"]]
        # each task's accuracy is over its 3 x 3 query images; the summary is of those
        np.testing.assert_allclose(accs * 9, np.round(accs * 9), atol=1e-5)
        assert e["tasks"] == 3 and e["acc_mean"] == pytest.approx(100 * accs.mean())
        assert e["acc_sd"] == pytest.approx(100 * accs.std(ddof=1))
        assert e["acc_ci95"] == pytest.approx(1.96 * e["acc_sd"] / np.sqrt(3))
    assert result["published"] == {}                                  # the paper has no 3-way row
    assert result["config"]["test_lr"] == (1e-3 if method == "penalty" else 1e-2)
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    with np.load(tmp_path / "accuracies.npz") as accs:
        assert sorted(accs.files) == ["iteration_2", "iteration_3"] and accs["iteration_3"].shape == (3,)


def test_omniglot_defaults_follow_the_original():
    s = omniglot.resolve([])
    assert (s.nway, s.kshot, s.iterations, s.meta_batch) == (20, 5, 10000, 15)
    assert (s.solver.lr_u, s.solver.lr_v, s.lower_steps, s.test_tasks, s.test_lr) == (1e-2, 1e-2, 20, 600, 1e-3)
    assert s.solver == PenaltyConfig(lr_u=1e-2, lr_v=1e-2, **vars(PenaltySchedule.multi_group()))
    s = omniglot.resolve(["--nway", "5", "--kshot", "1", "--method", "approxgrad"])
    assert (s.iterations, s.meta_batch, s.test_lr, s.linear_steps) == (5000, 30, 1e-2, 20)
    assert s.solver == ApproxGradConfig(lr_u=1e-2, lr_v=1e-2, lr_p=1e-2, sig=1e-3, correction="all")
    assert omniglot.resolve(["--method", "approxgrad", "--lr-v", "0.5"]).test_lr == 0.5   # lr_v
    s = miniimagenet.resolve(["--method", "approxgrad"])
    assert (s.kshot, s.iterations, s.meta_batch, s.solver.lr_u, s.test_lr) == (1, 20001, 2, 1e-3, 1e-3)
    assert miniimagenet.resolve(["--kshot", "5", "--method", "approxgrad"]).iterations == 10001
    s = miniimagenet.resolve([])
    assert (s.kshot, s.iterations, tuple(s.filters), s.features) == (5, 20001, (64, 96, 128, 256), 384)
    assert s.checkpoint_every == s.eval_every == 1000


def _saved(out):
    """The run's last checkpoint: every saved variable by name (not the object graph, which
    holds the process's variable names), and the sidecar's JSON."""
    import tensorflow as tf

    sidecar = json.loads((out / "checkpoint" / "run.json").read_text())
    reader = tf.train.load_checkpoint(str(out / "checkpoint" / sidecar["checkpoint"]))
    names = [n for n in reader.get_variable_to_shape_map() if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    return {n: reader.get_tensor(n) for n in names}, sidecar


def _without_timings(result):
    strip = ("eval_seconds", "train_seconds")
    return [{k: v for k, v in e.items() if k not in strip} for e in result["metrics"]["evaluations"]]


#: 5 meta-iterations, evaluations at 4 and 5, checkpoints at 2, 4 and 5: a stop at 1 or 3
#: loses the meta-iterations after the last checkpoint, which the resumed run repeats.
KILLED = ["--iterations", "5", "--eval-every", "4", "--checkpoint-every", "2", "--seed", "3"]


def _killed_and_resumed(main, data, tmp_path, random_stop, *flags):
    """Run ``flags`` uninterrupted, then stopped (as if killed) after a random meta-iteration
    and ``--resume``d: the same evaluations, checkpoint tensors and random streams. Returns
    the uninterrupted result."""
    stop = random_stop(1, 5)
    full = main(data, tmp_path / "full", *KILLED, *flags)
    assert main(data, tmp_path / "cut", *KILLED, *flags, "--stop-after", str(stop)) == {}, stop
    resumed = main(data, tmp_path / "cut", *KILLED, *flags, "--resume")
    assert _without_timings(full) == _without_timings(resumed) and len(full["metrics"]["evaluations"]) == 2, stop
    (a, sidecar_a), (b, sidecar_b) = _saved(tmp_path / "full"), _saved(tmp_path / "cut")
    assert sorted(a) == sorted(b) and len(a) > 20, stop
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"{name}, stopped after {stop}")
    assert sidecar_a["rngs"] == sidecar_b["rngs"] and sidecar_a["state"]["done"] == 5, stop
    return full


def test_omniglot_killed_and_resumed_equals_uninterrupted(omniglot_dir, tmp_path, random_stop):
    _killed_and_resumed(_omniglot, omniglot_dir, tmp_path, random_stop, "--method", "approxgrad")


def test_miniimagenet_end_to_end_killed_and_resumed_equals_uninterrupted(miniimagenet_dir, tmp_path, random_stop):
    """Penalty with eps0 = 1e8: its tolerance test passes, so rho, lambda, eps and the
    learning rates change and must come back from the checkpoint."""
    result = _killed_and_resumed(_miniimagenet, miniimagenet_dir, tmp_path, random_stop, "--method", "penalty",
                                 "--eps0", "1e8")
    assert [e["iteration"] for e in result["metrics"]["evaluations"]] == [4, 5]
    assert result["metrics"]["final"]["solver_state"]["lr_lower"][0] < 1e-3     # the schedule fired
    assert result["experiment"] == "few_shot.miniimagenet" and result["config"]["kshot"] == 1
    # Table 4, Mini-ImageNet 5-way 1-shot, Penalty: 53.17 +- 0.96 (95 % CI)
    assert (result["published"]["mean"], result["published"]["spread"]) == (53.17, "ci95")
    assert result["metrics"]["evaluations"][0]["tasks"] == 3


def test_resume_refuses_other_settings_and_a_damaged_checkpoint(omniglot_dir, tmp_path):
    flags = ["--method", "approxgrad", "--eval-every", "2", "--seed", "3"]
    _omniglot(omniglot_dir, tmp_path, *flags, "--iterations", "2")
    with pytest.raises(ExperimentError, match="other settings.*method"):
        _omniglot(omniglot_dir, tmp_path, "--method", "penalty", "--eval-every", "2", "--seed", "3",
                  "--iterations", "5", "--resume")
    sidecar = tmp_path / "checkpoint" / "run.json"
    sidecar.write_text(sidecar.read_text()[:40])                        # truncated
    with pytest.raises(ExperimentError, match="unreadable or truncated"):
        _omniglot(omniglot_dir, tmp_path, *flags, "--iterations", "4", "--resume")


def test_bad_input_is_a_clean_error(omniglot_dir, tmp_path):
    with pytest.raises(ExperimentError, match="--iterations must be >= 1"):
        _omniglot(omniglot_dir, tmp_path, "--iterations", "0")
    with pytest.raises(ExperimentError, match="--train-characters"):
        omniglot.main(["--data-dir", str(omniglot_dir), "--train-characters", "6", *TINY])
    with pytest.raises(DataError, match="not found"):
        omniglot.main(["--data-dir", str(tmp_path / "nothing"), *TINY])
    with pytest.raises(ExperimentError, match="fewer than K"):
        _omniglot(omniglot_dir, tmp_path, "--kshot", "4")
