"""Regression tests against the paper's published numbers, on real MNIST (``pytest -m paper``).

Each test runs an experiment script as a user would (``python -m ...`` in a subprocess,
seed 0) and compares the metric that the published mean measures with the published
number; the tolerance and its reason are written next to each test.

Single-seed tolerance at the full budget: the published sd is the spread over 5 runs of
the same setting, i.e. the seed-to-seed spread, so one seed of a faithful port lies within
2 published sd of the published mean with about 95 % probability (if ours and theirs
have the same distribution); seed 0 was measured before the tolerances were fixed.

All of them run in CI (``bash .ci/run``, budget 30 min on 2 cores): measured on the idle
2-core machine, Table 5 untargeted 1 % and targeted 2 % Penalty ~3 min each, the two
label-flip rows ~1 min each, Franceschi small scale 60 s, the reduced MNIST ordering test
216 s. Each asserts its budget (`run_script`).
``pytest -m paper`` runs just these; ``pytest -m "not paper"`` skips them.
"""

import json
import subprocess
import sys

import pytest

from penalty_tf.paper import published as paper, report

pytestmark = pytest.mark.paper



def run_script(module, out, data_dir, *flags, timeout=1800, reduced=None):
    """Run ``python -m module flags`` (seed 0) and return its result.json as a dict.

    Asserts the run's budget by the rule of `penalty_tf.paper.report`: full (no budget flag below
    the original's value) unless ``reduced`` names the exact reduced flags expected, so a
    default changed to a smaller budget fails here instead of passing a weaker test.
    """
    cmd = [sys.executable, "-m", module, *flags, "--seed", "0", "--data-dir", str(data_dir),
           "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}"
    [run] = report.load_runs(out)
    assert report.reduced_flags(run) == (reduced or {}), report.budget_text(run)
    return json.loads((out / "result.json").read_text())


#: The attack must achieve at least this fraction of the paper's effect (its drop of test
#: accuracy, its rise of the success rate) measured from our own clean classifier. The
#: paper prints no clean accuracy; ours is the original's setting (seed 0: 86.96 % vs the
#: original's 86.95 %). With 0.8 an attack weakened by a quarter fails (1 %: measured drop
#: 3.86 points, a quarter less is 2.90 < 0.8 x 3.67).
MIN_EFFECT = 0.8


def value_and_published(result):
    """The compared metric of a result.json and its published row."""
    return report.metric_value(result["experiment"], result["metrics"]), result["published"]


def check_table5_row(result, mean, sd, *, effect=True):
    """The run's Table 5 metric is within 2 published sd of the published (mean, sd), which
    is the row its result.json names; with ``effect``, the attack's effect measured from our
    own clean classifier (untargeted: drop of test accuracy; targeted: rise of the success
    rate) is at least MIN_EFFECT of the paper's."""
    ours, pub = value_and_published(result)
    assert (pub["mean"], pub["sd"]) == (mean, sd)
    assert abs(ours - mean) <= 2 * sd, ours
    if effect:
        metrics = result["metrics"]
        if result["experiment"] == "poisoning.untargeted":
            clean = metrics["clean_test_accuracy"]
            ours_effect, paper_effect = clean - ours, clean - mean
        else:
            clean = metrics["clean_success_rate"]
            ours_effect, paper_effect = ours - clean, mean - clean
        assert ours_effect >= MIN_EFFECT * paper_effect, (clean, ours)


def test_table5_untargeted_1pct_penalty_full_budget(tmp_path, shared_data_dir):
    # Full budget (5,000 updates, T = 20): ~3.5 min on 2 cores. Seed 0 measured 83.10
    # (clean 86.96). Tolerance: 2 published sd = 0.86 points (single seed, see the module
    # docstring), and the drop from clean must be MIN_EFFECT of the paper's.
    result = run_script("poisoning.untargeted", tmp_path, shared_data_dir,
                        "--method", "penalty", "--npoison", "10")
    assert result["published"] == paper.published_dict(experiment="poisoning.untargeted",
                                                       method="penalty", npoison=10)
    check_table5_row(result, 83.29, 0.43)


def test_table5_untargeted_1pct_label_flip(tmp_path, shared_data_dir):
    # Label-flip baseline (no bilevel phase, well under a minute). Seed 0 measured 86.61
    # and 86.59 (after the log-softmax cross-entropy change).
    # Tolerance: 2 published sd = 0.64 points. No effect bound: ten flipped labels move the
    # accuracy by less than the seed-to-seed spread of the clean model (poisoning/README.md).
    result = run_script("poisoning.untargeted", tmp_path, shared_data_dir,
                        "--method", "label-flip", "--npoison", "10")
    check_table5_row(result, 86.71, 0.32, effect=False)


def test_table5_targeted_6pct_label_flip(tmp_path, shared_data_dir):
    # Label-flip baseline, targeted, 60 validation eights labelled 3 (the default reading,
    # poisoning/targeted.py; about a minute). Seed 0 measured 36.4; seeds 0-4 33.20 ± 3.88.
    # Tolerance: 2 published sd = 6.94 points. (Not 2 %: there seed 0 gives 18.0, 2.8 sd
    # above 12.08, although the five-seed mean 12.76 ± 3.76 matches.) The attack must also
    # reach MIN_EFFECT of the paper's rise over our clean classifier.
    result = run_script("poisoning.targeted", tmp_path, shared_data_dir,
                        "--method", "label-flip", "--npoison", "60")
    check_table5_row(result, 32.88, 3.47)


def test_table5_targeted_2pct_penalty_full_budget(tmp_path, shared_data_dir):
    # Full budget (5,001 updates, T = 20): ~4 min on 2 cores. Seed 0 measured 40.8.
    # Tolerance: 2 published sd = 8.86 points (attack success on the 500 test eights varies
    # a lot between seeds: the published sd is 4.43), and the rise of the success rate over
    # the clean classifier's must be MIN_EFFECT of the paper's.
    result = run_script("poisoning.targeted", tmp_path, shared_data_dir,
                        "--method", "penalty", "--npoison", "20")
    check_table5_row(result, 41.64, 4.43)


def test_franceschi_mnist_small_penalty_full_budget(tmp_path, shared_data_dir):
    # Full budget (100 epochs x 25 upper iterations, T = 20, 500 retraining epochs).
    # Seed 0 measured 90.54 (results/franceschi.mnist_small.penalty). The paper gives no
    # spread for 90.77; the claim the number supports is "Penalty beats Franceschi et al.'s
    # 90.09". Tolerance: the gap between
    # the two published numbers, 0.68 points, on either side of 90.77 (so the lower end
    # is exactly the claim).
    result = run_script("importance_learning.mnist_small", tmp_path, shared_data_dir,
                        "--method", "penalty", "--noise", "0.5")
    ours, pub = value_and_published(result)
    assert pub["mean"] == 90.77
    assert 90.09 <= ours <= 90.77 + 0.68, ours


MARGIN = 5.0  # points; seed 0 measured Penalty 85.65 vs train-val 67.9 (101 epochs)
REDUCED_MNIST = ("--noise", "0.5", "--train-size", "1000", "--test-size", "2000")


def test_table3_mnist_noise50_reduced_penalty_beats_train_val_and_val_only(tmp_path, shared_data_dir):
    # Reduced budget (1,000 noisy training points, 1 epoch = 5 upper iterations with T = 20,
    # 2,000 test points; pre-training as the original): not comparable with 97.51, so the
    # test checks the table's ordering instead (published at 50 % noise: Train+Val
    # 60.8 ± 2.5, Val-only 90.5 ± 0.3, Penalty 97.51 ± 0.07). Train+Val gets as many epochs
    # as the bilevel network is trained for (100 of pre-training + 1 bilevel epoch) and must
    # end MARGIN points below Penalty; Val-only is the bilevel run's own pre-trained network
    # (measured 83.55), which Penalty must improve on.
    subset = {"train_size": 1000, "test_size": 2000}
    penalty = run_script("importance_learning.mnist", tmp_path / "penalty", shared_data_dir,
                         "--method", "penalty", "--epochs", "1", *REDUCED_MNIST,
                         reduced={**subset, "epochs": 1})
    train_val = run_script("importance_learning.mnist", tmp_path / "train_val", shared_data_dir,
                           "--method", "train-val", "--epochs", "101", *REDUCED_MNIST,
                           reduced=subset)
    ours, pub = value_and_published(penalty)
    baseline, _ = value_and_published(train_val)
    assert pub["mean"] == 97.51
    assert ours >= baseline + MARGIN, (ours, baseline)
    assert ours > penalty["metrics"]["val_only_test_accuracy"], ours
