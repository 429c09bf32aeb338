"""benchmarks.speed at its tiny budget: real tasks in pinned fresh processes, raw values
of every round, medians, the table; bad --trees refused (issue 16)."""

import json

import pytest

from benchmarks import speed
from penalty_tf.paper.experiment import ExperimentError


def test_quick_speed_benchmark_records_every_round_and_the_medians(tmp_path):
    out = tmp_path / "speed"
    result = speed.main(["--quick", "--tasks", "cnn", "--rounds", "2", "--cores", "0",
                         "--trees", "a=.", "b=.", "--out", str(out)])
    metrics = result["metrics"]
    plain = metrics["cnn"]["plain_step_s"]
    for tree in ("a", "b"):
        assert len(plain[tree]["raw"]) == 2 and plain[tree]["min"] <= plain[tree]["median"] <= plain[tree]["max"]
        assert plain[tree]["median"] > 0
        lower = metrics["cnn"]["penalty_lower_step_over_plain"][tree]["median"]
        assert 0.5 < lower < 50          # a Penalty lower step costs some plain steps
    assert 0.2 < plain["ratio"] < 5       # the same tree twice
    raw = json.loads((out / "raw.json").read_text())
    assert [(r["round"], r["tree"]) for r in raw["runs"] if r["task"] == "cnn"] == [(0, "a"), (0, "b"), (1, "b"), (1, "a")]
    assert raw["threads"] == 1 and raw["cores"] == "0"
    table = (out / "table.md").read_text()
    assert "| cnn | plain_step_s |" in table and "ratio" in table


@pytest.mark.parametrize("trees", [["nosep"], ["x=/no/such/dir"]])
def test_bad_trees_are_refused(tmp_path, trees):
    with pytest.raises(ExperimentError, match="--trees"):
        speed.main(["--trees", *trees, "--out", str(tmp_path / "o")])
