"""Tests of the published numbers in penalty_tf.paper (against docs/original.md §4)."""

import dataclasses
import json
from collections import Counter

import pytest

from penalty_tf.paper import published as paper
from penalty_tf.paper.published import PUBLISHED, lookup, published_dict


def test_row_counts_per_table():
    counts = Counter(row.table for row in PUBLISHED)
    assert counts == {
        "Table 2": 48,   # 4 examples x 3 T x 4 methods
        "Table 3": 30,   # 6 dataset/noise rows x 5 columns
        "Sec. 3.2 (Ren et al.)": 2,
        "Sec. 3.2 (Franceschi et al.)": 2,
        "Table 4": 47,   # 6 settings x 8 methods, minus iMAML Mini-ImageNet 5-shot ("-")
        "Table 5": 46,   # 2 attacks x 6 sizes x 4 methods, minus RMD targeted 5 % and 6 %
        "Sec. 3.4 / App. E.4.1": 3,
    }
    assert len(PUBLISHED) == 178


def test_rows_are_unique_per_experiment_setting_method():
    keys = [(r.experiment, tuple(sorted(r.setting.items())), r.method) for r in PUBLISHED]
    assert len(keys) == len(set(keys))


def test_vocabulary_of_experiments_methods_and_spreads():
    assert {r.experiment for r in PUBLISHED} == {
        "synthetic", "importance_learning.mnist", "importance_learning.cifar10",
        "importance_learning.svhn", "importance_learning.mnist_small",
        "importance_learning.cifar10_wrn", "few_shot.omniglot", "few_shot.miniimagenet",
        "poisoning.untargeted", "poisoning.targeted", "poisoning.clean_label"}
    assert {r.method for r in PUBLISHED} == {
        "penalty", "approxgrad", "rmd", "gd", "label-flip", "oracle", "val-only",
        "train-val", "maml", "imaml", "protonet", "relationnet", "snail", "franceschi",
        "ren", "koh-liang", "shafahi"}
    for row in PUBLISHED:
        assert row.spread in ("sd", "ci95", None)
        assert (row.sd is None) == (row.spread is None)
        assert row.mean > 0 and (row.sd is None or row.sd >= 0)


@pytest.mark.parametrize("query, mean, sd", [
    # Table 2 (corners and the odd cells)
    (dict(experiment="synthetic", method="gd", example="SMD20", lower_steps=1), 7.4, 0.3),
    (dict(experiment="synthetic", method="penalty", example="SMD20", lower_steps=10), 57.0, 1.0),
    (dict(experiment="synthetic", method="rmd", example="SMD24", lower_steps=10), 125.0, 9.3),
    (dict(experiment="synthetic", method="approxgrad", example="SMD23", lower_steps=1), 20.4, 0.0),
    (dict(experiment="synthetic", method="penalty", example="SMD23", lower_steps=10), 58.0, 4.3),
    (dict(experiment="synthetic", method="gd", example="SMD21", lower_steps=10), 22.4, 2.6),
    # Table 3
    (dict(experiment="importance_learning.mnist", method="penalty", noise=0.25), 98.89, 0.04),
    (dict(experiment="importance_learning.cifar10", method="approxgrad", noise=0.5), 68.08, 0.83),
    (dict(experiment="importance_learning.svhn", method="train-val", noise=0.5), 47.9, 1.3),
    (dict(experiment="importance_learning.svhn", method="oracle", noise=0.25), 91.1, 0.5),
    (dict(experiment="importance_learning.cifar10", method="val-only", noise=0.25), 70.3, 1.8),
    # Section 3.2 comparisons
    (dict(experiment="importance_learning.cifar10_wrn", method="penalty"), 87.41, 0.26),
    (dict(experiment="importance_learning.cifar10_wrn", method="ren"), 86.92, 0.19),
    (dict(experiment="importance_learning.mnist_small", method="penalty", noise=0.5), 90.77, None),
    (dict(experiment="importance_learning.mnist_small", method="franceschi"), 90.09, None),
    # Table 4
    (dict(experiment="few_shot.omniglot", method="penalty", nway=20, kshot=1), 94.06, 0.17),
    (dict(experiment="few_shot.omniglot", method="maml", nway=5, kshot=5), 99.9, None),
    (dict(experiment="few_shot.omniglot", method="imaml", nway=20, kshot=5), 99.14, 0.10),
    (dict(experiment="few_shot.miniimagenet", method="approxgrad", nway=5, kshot=1), 43.74, 1.75),
    (dict(experiment="few_shot.miniimagenet", method="penalty", nway=5, kshot=5), 67.74, 0.71),
    # Table 5
    (dict(experiment="poisoning.untargeted", method="penalty", npoison=10), 83.29, 0.43),
    (dict(experiment="poisoning.untargeted", method="rmd", npoison=60), 79.0, None),
    (dict(experiment="poisoning.untargeted", method="label-flip", npoison=20), 86.23, 0.98),
    (dict(experiment="poisoning.targeted", method="approxgrad", npoison=60), 71.48, 4.24),
    (dict(experiment="poisoning.targeted", method="penalty", npoison=20), 41.64, 4.43),
    (dict(experiment="poisoning.targeted", method="rmd", npoison=40), 35.0, None),
    # Clean label
    (dict(experiment="poisoning.clean_label", method="penalty"), 100.0, None),
    (dict(experiment="poisoning.clean_label", method="koh-liang"), 57.0, None),
])
def test_spot_values(query, mean, sd):
    (row,) = lookup(**query)
    assert row.mean == mean
    assert row.sd == sd


def test_spreads_and_directions():
    (mini,) = lookup(experiment="few_shot.miniimagenet", method="penalty", nway=5, kshot=1)
    (omni,) = lookup(experiment="few_shot.omniglot", method="penalty", nway=5, kshot=1)
    assert (mini.spread, omni.spread) == ("ci95", "sd")
    assert all(not r.higher_is_better for r in lookup(table="Table 2"))
    assert all(not r.higher_is_better for r in lookup(experiment="poisoning.untargeted"))
    assert all(r.higher_is_better for r in lookup(experiment="poisoning.targeted"))
    assert all(r.higher_is_better for r in lookup(table="Table 3"))


def test_missing_cells_are_absent():
    assert lookup(experiment="poisoning.targeted", method="rmd", npoison=50) == []
    assert lookup(experiment="poisoning.targeted", method="rmd", npoison=60) == []
    assert lookup(experiment="few_shot.miniimagenet", method="imaml", kshot=5) == []
    assert len(lookup(experiment="poisoning.targeted", method="rmd")) == 4


def test_lookup_filters_combine():
    assert len(lookup(experiment="synthetic")) == 48
    assert len(lookup(experiment="synthetic", method="penalty")) == 12
    assert len(lookup(experiment="synthetic", example="SMD24")) == 12
    assert len(lookup(experiment="synthetic", lower_steps=5, method="rmd")) == 4
    assert len(lookup(table="Table 3", method="penalty")) == 6
    assert len(lookup(table="Table 3", noise=0.5)) == 15
    # float settings match up to rounding; unknown keys or values match nothing
    assert len(lookup(experiment="importance_learning.mnist", noise=0.25 + 1e-12)) == 5
    assert lookup(experiment="synthetic", noise=0.25) == []
    assert lookup(experiment="synthetic", example="SMD99") == []
    assert lookup(method="no-such-method") == []


def test_published_dict_is_json_ready_and_strict():
    d = published_dict(experiment="synthetic", method="penalty", example="SMD20", lower_steps=10)
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["table"] == "Table 2"
    assert d["setting"] == {"example": "SMD20", "lower_steps": 10}
    assert (d["mean"], d["sd"], d["spread"]) == (57.0, 1.0, "sd")
    assert d["higher_is_better"] is False
    assert "inferred" in d["note"]
    assert set(d) == {f.name for f in dataclasses.fields(paper.PublishedNumber)}

    assert published_dict(experiment="synthetic", method="penalty", example="SMD25",
                          lower_steps=10) == {}
    with pytest.raises(ValueError, match="48 published numbers match"):
        published_dict(experiment="synthetic")


def test_published_numbers_are_read_only():
    row = PUBLISHED[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.mean = 0.0
    with pytest.raises(TypeError):
        row.setting["example"] = "SMD99"
    assert hash(row) == hash(dataclasses.replace(row))
    with pytest.raises(ValueError, match="spread"):
        paper.PublishedNumber("T", "e", {}, "m", 1.0, 0.1, "stderr", True, "%")
