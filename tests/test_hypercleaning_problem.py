"""The hyper-cleaning problem of `benchmarks.compare` (benchmarks/hypercleaning.py) at a tiny
budget: the mnist_small split and noise, the slot bookkeeping over epochs, a solver step, the
retrained accuracy and its extras through `compare.run_one`, and the Spec's settings."""

import dataclasses

import numpy as np
import pytest

from benchmarks import compare, hypercleaning, problems
from benchmarks.problems import SPECS

#: 400 training points (2 upper iterations per epoch), short pre-training and retraining.
TINY = {"train_size": 400, "pretrain_epochs": 1, "retrain_epochs": 1, "test_size": 1000}


@pytest.fixture(scope="module")
def tiny(shared_data_dir):
    return hypercleaning.build(0, str(shared_data_dir), **TINY)


def test_the_split_and_the_noise_are_mnist_small_s(tiny):
    split = tiny.split
    assert (len(split.x_train), len(split.x_val), len(split.x_test)) == (400, 5000, 1000)
    assert split.x_train.shape[1] == 784 and 0.0 <= split.x_train.min() and split.x_train.max() <= 1.0
    # 50 % noise: exactly the first 200 labels differ from the clean ones, each to another class
    wrong = split.y_train != tiny.clean_labels
    assert tiny.corrupt == 200 and wrong[:200].all() and not wrong[200:].any()
    assert tiny.s.seed == 0 and tiny.s.noise == 0.5 and tiny.s.select_threshold == 0.9


def test_the_20000_point_variant_does_not_overlap_its_validation_set(shared_data_dir):
    s = hypercleaning.settings(0, str(shared_data_dir), train_size=20000)
    split = hypercleaning.load_split(20000)(s)
    from penalty_tf.datasets import load_mnist

    x = load_mnist(str(shared_data_dir)).x_train.reshape(-1, 784)
    assert (len(split.x_train), len(split.x_val), len(split.x_test)) == (20000, 5000, 10000)
    assert np.array_equal(split.x_val[0] * 255.0, x[20000].astype(np.float32))
    assert np.array_equal(split.x_train[-1] * 255.0, x[19999].astype(np.float32))
    with pytest.raises(ValueError, match="exceed"):
        hypercleaning.load_split(56000)
    with pytest.raises(ValueError, match="no option"):
        hypercleaning.settings(0, None, lr_u=1.0)


def test_steps_read_the_slot_back_and_renormalise_after_each_epoch(tiny):
    from penalty_tf import solvers

    solver = solvers.make("penalty", tiny.problem, **hypercleaning.original_solver_settings())
    start = tiny.importances().copy()
    for _ in range(2):                                  # one epoch: 400 / 200 iterations
        solver.step(tiny.next_batch(), 2)
    a = tiny.importances()
    assert tiny.epochs_done == 1 and tiny.served == 0
    assert np.mean(a) == pytest.approx(0.5, abs=1e-6) and not np.allclose(a, start)
    weights = [w.copy() for w in tiny.run.clf.model.get_weights()]
    quality = tiny.quality()
    assert 0.0 <= quality <= 100.0
    extras = tiny.extras()
    assert 0 <= extras["selected_corrupted"] <= extras["selected_points"] <= 400
    assert extras["selected_points"] == int(np.sum(a > 0.9)) and extras["epochs_done"] == 1
    # the retraining does not change the solver's classifier
    assert all(np.array_equal(w, x) for w, x in zip(weights, tiny.run.clf.model.get_weights()))


def test_run_one_records_the_extras_at_every_measurement(shared_data_dir):
    run = compare.run_one(SPECS["hypercleaning"], "soba", 0, iterations=3, eval_every=2, check_every=1, sets={},
                          data_dir=str(shared_data_dir), options=TINY)
    curve = run["curve"]
    assert curve["iteration"] == [0, 2, 3] and len(curve["extras"]) == 3
    assert curve["cosine"] == []          # --check-every skips it: no unique lower minimiser
    assert all(0.0 <= q <= 100.0 for q in curve["quality"])
    assert curve["extras"][0]["selected_points"] == 0           # a = 0.4 / 0.6 at the start
    assert "selected_corrupted" in compare._extras_text(run)
    summary = compare.summarise(SPECS["hypercleaning"], [run, run])
    kept = curve["extras"][-1]["selected_corrupted"]
    assert summary["extras_median"]["selected_corrupted"] == kept
    row = compare.table({"hypercleaning": {"soba": {"runs": [run], "summary": summary}}}).splitlines()[-1]
    assert row.endswith(f"selected_corrupted {kept:.4g} |")


def test_the_spec_gives_penalty_the_original_s_settings():
    from penalty_tf import solvers

    spec = SPECS["hypercleaning"]
    fields = {f.name for f in dataclasses.fields(solvers.PenaltyConfig)}
    assert set(problems._PENALTY_CONFIG_FIELDS) == fields
    assert spec.settings("penalty", fields) == hypercleaning.original_solver_settings()
    original = hypercleaning.settings(0, None).solver
    assert solvers.PenaltyConfig(**spec.settings("penalty", fields)) == original
    assert (spec.iterations, spec.lower_steps) == (100 * 5000 // 200, original_lower_steps())
    assert spec.iterations % spec.eval_every == 0 and spec.eval_every % 25 == 0   # measured at epoch ends


def original_lower_steps() -> int:
    from penalty_tf.paper import defaults

    return defaults.defaults("importance_learning.mnist_small", "penalty")["lower_steps"]
