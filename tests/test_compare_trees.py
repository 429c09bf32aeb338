"""benchmarks.compare_trees: interleaved runs of two trees, raw values, medians and ratios."""

import json

from benchmarks import compare_trees


def _tree(path, seconds_per_call):
    """A fake source tree whose benchmark reports ``seconds_per_call`` and the process's
    PYTHONPATH and CPU affinity (what the comparison promises to set)."""
    path.mkdir()
    (path / "fake_bench.py").write_text(
        "import os\n"
        "def main(argv):\n"
        "    env = os.environ\n"
        "    return {'metrics': {'step_s': %r, 'n': len(argv), 'cores': len(os.sched_getaffinity(0)),\n"
        "                        'threads': float(env['TF_NUM_INTRAOP_THREADS']),\n"
        "                        'own_tree': float(env['PYTHONPATH'] == os.getcwd())}}\n" % seconds_per_call)
    return path


def test_two_trees_are_interleaved_and_compared(tmp_path, monkeypatch):
    monkeypatch.setitem(compare_trees.TASKS, "fake",
                        ("fake_bench", lambda data, out: ["a", "b"], compare_trees._all))
    before, after = _tree(tmp_path / "before", 2.0), _tree(tmp_path / "after", 1.5)
    out = tmp_path / "out"
    record = compare_trees.main(["--trees", f"before={before}", f"after={after}", "--tasks", "fake",
                                 "--rounds", "3", "--core", "0", "--data-dir", str(tmp_path), "--out", str(out)])
    # the order of the trees alternates from round to round
    assert [(r["round"], r["tree"]) for r in record["runs"]] == [
        (0, "before"), (0, "after"), (1, "after"), (1, "before"), (2, "before"), (2, "after")]
    raw = record["raw"]["fake"]
    assert raw["before"]["step_s"] == [2.0] * 3 and raw["after"]["step_s"] == [1.5] * 3
    # one core, one thread, the tree's own code, the task's argv
    for tree in ("before", "after"):
        assert raw[tree]["cores"] == [1.0] * 3 and raw[tree]["threads"] == [1.0] * 3
        assert raw[tree]["own_tree"] == [1.0] * 3 and raw[tree]["n"] == [2.0] * 3
    assert record["summary"]["fake"]["step_s"] == {"before": 2.0, "after": 1.5, "ratio": 0.75}
    saved = json.loads((out / "raw.json").read_text())
    assert saved["raw"] == record["raw"] and saved["finished"] >= saved["started"]
    result = json.loads((out / "result.json").read_text())
    assert result["metrics"]["fake"]["step_s"]["ratio"] == 0.75


def test_synthetic_figures_are_the_medians():
    result = {"metrics": {"timing": {"step": {"no_xla": {"SMD20": {"T1": {
        "penalty": {"median": 3.0, "min": 2.5, "max": 4.0}}}}}}}}
    assert compare_trees._synthetic(result) == {"step/no_xla/SMD20/T1/penalty": 3.0}
