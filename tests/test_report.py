"""penalty_tf.paper.report: grouping, aggregation, spread difference, verdicts, budget, bad files."""

import json
import math

import pytest

from penalty_tf.paper import published as paper, report

UNT1 = paper.published_dict(experiment="poisoning.untargeted", method="penalty", npoison=10)
TGT2 = paper.published_dict(experiment="poisoning.targeted", method="penalty", npoison=20)
FRANCESCHI = paper.published_dict(experiment="importance_learning.mnist_small", method="penalty")


def _write(root, name, experiment, method, metrics, published, **config):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "experiment": experiment, "method": method, "config": config, "metrics": metrics,
        "published": published, "wall_time_s": 12.0, "versions": {}}))


def test_seeds_are_grouped_to_mean_and_sample_sd(tmp_path):
    for seed, acc in enumerate([83.0, 83.4, 83.8]):
        _write(tmp_path, f"unt1/seed{seed}", "poisoning.untargeted", "penalty",
               {"poisoned_test_accuracy": acc}, UNT1, seed=seed, epochs=5000, npoison=10)
    _write(tmp_path, "tgt2/seed0", "poisoning.targeted", "penalty",
           {"attack_success_rate": 40.8}, TGT2, seed=0, epochs=5001, npoison=20)
    groups, other = report.aggregate(report.load_runs(tmp_path))
    assert other == []
    assert [g.n for g in groups] == [3, 1]          # registry order: untargeted first
    assert groups[0].mean == pytest.approx(83.4)
    assert groups[0].sd == pytest.approx(0.4)       # ddof = 1
    assert groups[1].sd is None
    rows = report.rows(groups)
    assert rows[0]["ours"] == "83.40 ± 0.40" and rows[0]["published"] == "83.29 ± 0.43"
    assert rows[0]["diff (spread units)"] == "+0.26"


def test_difference_and_verdict_respect_direction():
    assert report.difference(84.15, UNT1) == pytest.approx(2.0)
    assert report.verdict(84.1, UNT1, "full") == "within 2 sd"
    assert report.verdict(84.2, UNT1, "full") == "worse"    # untargeted: lower is better
    assert report.verdict(82.3, UNT1, "full") == "better"
    assert report.verdict(60.0, TGT2, "full") == "better"   # targeted: higher is better
    assert report.verdict(30.0, TGT2, "full") == "worse"
    assert report.verdict(83.3, UNT1, "reduced") == "not comparable (reduced)"
    assert report.difference(90.0, FRANCESCHI) is None
    assert report.verdict(90.68, FRANCESCHI, "full") == "worse (no sd)"
    assert report.verdict(None, UNT1, "full") == "no value"


def _run(experiment, method, **config):
    return report.Run(path=None, experiment=experiment, method=method, config=config,
                      published={}, value=1.0, wall_time_s=None)


def test_budget_rule():
    assert report.budget(_run("poisoning.untargeted", "penalty", epochs=5000, retrain_steps=10001)) == "full"
    assert report.budget(_run("poisoning.untargeted", "penalty", epochs=1000)) == "reduced"
    assert report.budget(_run("poisoning.targeted", "penalty", epochs=5000)) == "reduced"
    assert report.budget(_run("poisoning.targeted", "approxgrad", epochs=5000)) == "full"
    assert report.budget(_run("poisoning.untargeted", "label-flip", epochs=1)) == "full"
    assert report.budget(_run("importance_learning.mnist", "penalty", epochs=101)) == "full"
    assert report.budget(_run("importance_learning.mnist", "penalty", epochs=101,
                              train_size=4000)) == "reduced"
    assert report.budget(_run("importance_learning.mnist", "penalty", epochs=10)) == "reduced"
    assert report.budget(_run("importance_learning.mnist", "train-val", epochs=1)) == "full"
    assert report.budget(_run("importance_learning.mnist", "train-val", pretrain_epochs=10)) == "reduced"
    assert report.budget(_run("importance_learning.mnist", "penalty", lower_steps=5)) == "reduced"
    assert report.budget(_run("importance_learning.cifar10", "approxgrad", lower_steps=1)) == "full"
    assert report.budget(_run("poisoning.untargeted", "label-flip", retrain_steps=100)) == "reduced"
    assert report.budget(_run("importance_learning.mnist_small", "penalty", epochs=None)) == "full"
    assert report.budget(_run("few_shot.omniglot", "penalty", nway=5, iterations=5000)) == "full"
    assert report.budget(_run("few_shot.omniglot", "penalty", nway=20, iterations=5000)) == "reduced"
    assert report.budget(_run("few_shot.miniimagenet", "approxgrad", kshot=5,
                              iterations=10001, test_tasks=600)) == "full"
    assert report.budget(_run("few_shot.miniimagenet", "penalty", kshot=5,
                              iterations=20001, test_tasks=100)) == "reduced"


def test_runs_at_different_budgets_are_separate_rows(tmp_path):
    _write(tmp_path, "a", "poisoning.untargeted", "penalty", {"poisoned_test_accuracy": 83.0},
           UNT1, epochs=5000)
    _write(tmp_path, "b", "poisoning.untargeted", "penalty", {"poisoned_test_accuracy": 85.0},
           UNT1, epochs=100, seed=1)
    _write(tmp_path, "c", "poisoning.untargeted", "penalty", {"poisoned_test_accuracy": 87.0},
           UNT1, epochs=100, seed=2)
    _write(tmp_path, "d", "poisoning.untargeted", "penalty", {"poisoned_test_accuracy": 80.0},
           UNT1, epochs=1000, seed=3)
    groups, _ = report.aggregate(report.load_runs(tmp_path))
    by_budget = {r["budget"]: r for r in report.rows(groups)}
    assert set(by_budget) == {"full", "reduced (epochs=100)", "reduced (epochs=1000)"}
    assert by_budget["full"]["ours"] == "83.00" and by_budget["full"]["verdict"] == "within 2 sd"
    assert by_budget["reduced (epochs=100)"]["ours"] == "86.00 ± 1.41"
    assert by_budget["reduced (epochs=100)"]["n"] == "2"
    assert by_budget["reduced (epochs=1000)"]["verdict"] == "not comparable (reduced)"
    subset = report.Run(path=None, experiment="importance_learning.mnist", method="penalty",
                        config={"epochs": 10, "train_size": 4000}, published={}, value=1.0,
                        wall_time_s=None)
    assert report.budget_text(subset) == "reduced (epochs=10, train_size=4000)"
    baseline = report.Run(path=None, experiment="importance_learning.mnist", method="train-val",
                          config={"epochs": 110, "train_size": 4000}, published={}, value=1.0,
                          wall_time_s=None)
    assert report.budget_text(baseline) == "reduced (train_size=4000); 110 training epochs"


def test_repeated_seed_is_named(tmp_path):
    for name in ("a", "b"):
        _write(tmp_path, name, "poisoning.targeted", "penalty", {"attack_success_rate": 40.8},
               TGT2, seed=0, epochs=5001)
    (group,), _ = report.aggregate(report.load_runs(tmp_path))
    assert report.rows([group])[0]["n"] == "2 (seeds 0)"


def test_malformed_and_unpublished_runs_do_not_crash(tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text("{not json")
    (tmp_path / "nokeys").mkdir()
    (tmp_path / "nokeys" / "result.json").write_text(json.dumps({"experiment": "x"}))
    _write(tmp_path, "speed", "importance_learning.speed", "penalty", {"ms": 3.0}, {})
    _write(tmp_path, "synth", "synthetic", "all", {"SMD20/penalty/T10": {}},
           {"SMD20/penalty/T10": {"mean": 57.0}})
    _write(tmp_path, "few", "few_shot.omniglot", "penalty",
           {"final": {"acc_mean": 97.9, "acc_ci95": 0.3}},
           paper.published_dict(experiment="few_shot.omniglot", method="penalty", nway=5, kshot=1),
           nway=5, kshot=1, iterations=5000, test_tasks=600)
    with pytest.warns(UserWarning) as caught:
        runs = report.load_runs(tmp_path)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "broken" in messages[0] and "cannot read JSON" in messages[0]
    assert "nokeys" in messages[1] and "missing key" in messages[1]
    groups, other = report.aggregate(runs)
    assert [g.mean for g in groups] == [97.9]
    assert sorted(r.experiment for r in other) == ["importance_learning.speed", "synthetic"]
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "### Table 4" in out.out and "Other runs" in out.out
    assert "97.90" in out.out and "within 2 sd" in out.out       # (97.9-97.83)/0.35 = 0.2
    assert "skipping malformed" in out.err


def test_csv_and_png_outputs(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "a", "poisoning.untargeted", "penalty", {"poisoned_test_accuracy": 83.1}, UNT1,
           epochs=5000)
    out = tmp_path / "rep" / "report.csv"
    assert report.main([str(runs), "--format", "csv", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].split(",")[0] == "table" and len(lines) == 2
    assert "83.10" in lines[1] and "-0.44" in lines[1]
    assert (tmp_path / "rep" / "table_5.png").stat().st_size > 1000
    assert math.isclose(report.difference(83.1, UNT1), -0.19 / 0.43)
