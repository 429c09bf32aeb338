"""The worked examples in examples/, each run as a script at a tiny budget on real MNIST.

Each runs in its own process (the examples seed Keras' global random state), writes its
JSON and is checked for numbers that show the method did its job, at that budget.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


def run_example(name, tmp_path, data_dir, *flags):
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / f"{name}.py"), "--quiet",
                           "--data-dir", str(data_dir), "--out", str(out), *flags],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_hyperparameter_tuning_learns_decays_and_reports_the_grid(tmp_path, shared_data_dir):
    r, stdout = run_example("hyperparameter_tuning", tmp_path, shared_data_dir,
                            "--n-train", "300", "--n-val", "300", "--n-test", "1000",
                            "--iterations", "40", "--lower-steps", "5", "--grid", "0", "1e-2")
    p, g = r["penalty"], r["grid_search"]
    low, *_, high = p["decay_quantiles"]
    assert high / low > 1.5                         # per-feature decays moved apart from 1e-4
    assert p["test_acc"] > 0.6 and p["val_acc"] > 0.6
    assert [c["decay"] for c in g["candidates"]] == [0.0, 1e-2]
    assert g["best"]["val_acc"] == max(c["val_acc"] for c in g["candidates"])
    assert "Penalty (per-feature decay)" in stdout and "Grid search" in stdout


def test_reweighting_down_weights_noisy_labels(tmp_path, shared_data_dir):
    r, _ = run_example("reweighting_noisy_labels", tmp_path, shared_data_dir,
                       "--n-train", "2000", "--n-val", "300", "--n-test", "2000",
                       "--epochs", "4")          # measured: 80.9 % noisy, 0.837 vs 0.788 and 0.790
    p = r["penalty"]
    assert p["mean_weight_noisy"] < p["mean_weight_clean"] - 0.05
    assert p["noisy_among_lowest_weights"] > 0.65    # chance: 0.4
    assert p["test_acc"] > r["noisy_plus_clean"]["test_acc"] + 0.01
    assert p["test_acc"] > r["clean_only"]["test_acc"] + 0.01


def test_data_poisoning_keeps_the_box_and_lowers_test_accuracy(tmp_path, shared_data_dir):
    r, _ = run_example("data_poisoning", tmp_path, shared_data_dir,
                       "--npoison", "60", "--n-test", "2000", "--iterations", "60",
                       "--lower-steps", "10", "--fit-steps", "500")
    acc = r["test_acc"]
    assert r["in_box"] and r["mean_pixel_change"] > 0.01
    assert acc["penalty_poisons"] < acc["label_flip"] - 0.02
    assert acc["label_flip"] <= acc["clean"] + 0.01


@pytest.mark.parametrize("name", ["hyperparameter_tuning", "reweighting_noisy_labels", "data_poisoning"])
def test_an_unusable_out_file_is_refused_before_any_work(tmp_path, name):
    (tmp_path / "a_file").write_text("x")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / f"{name}.py"), "--quiet",
                           "--out", str(tmp_path / "a_file" / "result.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "argument --out:" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
