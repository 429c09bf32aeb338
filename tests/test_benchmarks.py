"""End to end test of the Table 2 benchmark (`benchmarks.synthetic_timing`) and its
memory probe, on the --quick timing settings and a small memory probe."""

import argparse
import json
import math
import types

import numpy as np
import pytest

from benchmarks import memory_probe, synthetic_timing
from penalty_tf.paper import experiment, published as paper

METHODS = ("gd", "rmd", "approxgrad", "penalty")
MODES = ("step", "steps")
XLAS = ("no_xla", "xla")
TS = ("T1", "T5")
# Memory: u and v of 2 * 200,000 float32 entries (1.6 MB each), so that the 18 extra
# iterates RMD stores at T = 20 compared with T = 2 (~29 MB) stand well above the few MB
# by which the RSS of two identical processes differ.
MEMORY_DIM = 200_000
MEMORY_TS = (2, 20)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    returned = synthetic_timing.main(
        ["--quick", "--memory-steps", *map(str, MEMORY_TS), "--memory-dim", str(MEMORY_DIM),
         "--out", str(out), "--quiet"])
    with open(out / "result.json") as handle:
        written = json.load(handle)
    return out, returned, written


def _positive_finite(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_result_json_structure(run):
    out, returned, result = run
    assert result == returned
    assert tuple(result) == experiment.RESULT_KEYS
    assert result["experiment"] == "benchmarks.synthetic_timing"
    assert result["method"] == "gd,rmd,approxgrad,penalty"
    config = result["config"]
    assert config["examples"] == ["SMD20"] and config["lower_steps"] == [1, 5]
    assert config["iterations"] == 50 and config["repeats"] == 1
    assert result["wall_time_s"] > 0
    report = (out / "report.md").read_text()
    assert "### mode `step` (" in report and "### mode `steps` (" in report
    assert "| SMD20 | 5 |" in report and "### memory: SMD20, dim 200000" in report


def test_every_timing_is_positive_and_finite(run):
    metrics = run[2]["metrics"]
    assert metrics["units"] == "seconds per 1000 upper-level iterations"
    for mode in MODES:
        for xla in XLAS:
            by_t = metrics["timing"][mode][xla]["SMD20"]
            assert set(by_t) == set(TS)
            for t in TS:
                assert set(by_t[t]) == set(METHODS)
                for cell in by_t[t].values():
                    assert len(cell["runs"]) == 1
                    assert all(_positive_finite(x) for x in cell["runs"])
                    runs = cell["runs"]
                    assert (cell["median"], cell["min"], cell["max"]) == (np.median(runs), min(runs), max(runs))
            for method in METHODS:
                assert _positive_finite(metrics["first_call_s"][mode][xla]["SMD20"][method])


def test_no_retracing_across_lower_steps_and_calls(run):
    # One trace for step() and one for steps(), whatever T and however many calls.
    for xla in XLAS:
        assert run[2]["metrics"]["tracing_count"][xla]["SMD20"] == {m: 2 for m in METHODS}


def test_ratios_are_quotients_of_the_stored_timings(run):
    metrics = run[2]["metrics"]
    for mode in MODES:
        for xla in XLAS:
            for t in TS:
                cells = metrics["timing"][mode][xla]["SMD20"][t]
                ratios = metrics["ratios"][mode][xla]["SMD20"][t]
                pen = cells["penalty"]["median"]
                assert ratios["rmd/penalty"] == pytest.approx(cells["rmd"]["median"] / pen, rel=1e-12)
                assert ratios["approxgrad/penalty"] == pytest.approx(
                    cells["approxgrad"]["median"] / pen, rel=1e-12)
                low = metrics["ratios_of_min"][mode][xla]["SMD20"][t]
                assert low["rmd/penalty"] == pytest.approx(
                    cells["rmd"]["min"] / cells["penalty"]["min"], rel=1e-12)
                tf1 = metrics["tf1_original_penalty"]["SMD20"][t]
                assert metrics["speedup_vs_tf1_penalty"][mode][xla]["SMD20"][t] == \
                    pytest.approx(tf1 / pen, rel=1e-12)


def _report_rows(report):
    """The SMD20 rows of report.md's timing tables: {(mode, xla key, "T<t>"): cells}."""
    rows, section = {}, None
    for line in report.splitlines():
        if line.startswith("###"):
            section = None
            if line.startswith("### mode `"):
                section = (line.split("`")[1], "xla" if "jit_compile=True" in line else "no_xla")
        elif section and line.startswith("| SMD20 |"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[section + ("T" + cells[1],)] = cells
    return rows


def test_report_tables_show_the_numbers_of_result_json(run):
    out, _, result = run
    metrics = result["metrics"]
    rows = _report_rows((out / "report.md").read_text())
    assert set(rows) == {(mode, xla, t) for mode in MODES for xla in XLAS for t in TS}
    for (mode, xla, t), cells in rows.items():
        timing = metrics["timing"][mode][xla]["SMD20"][t]
        ratios, paper_ratios = metrics["ratios"][mode][xla]["SMD20"][t], metrics["paper_ratios"]["SMD20"][t]
        assert cells[2:6] == [f"{timing[m]['median']:.3f}" for m in METHODS]   # GD RMD AG Penalty
        assert cells[6:10] == [f"{ratios['rmd/penalty']:.2f}", f"{paper_ratios['rmd/penalty']:.2f}",
                               f"{ratios['approxgrad/penalty']:.2f}",
                               f"{paper_ratios['approxgrad/penalty']:.2f}"]
        assert cells[10] == f"{metrics['tf1_original_penalty']['SMD20'][t]:.2f}"
        assert cells[11] == f"{metrics['speedup_vs_tf1_penalty'][mode][xla]['SMD20'][t]:.1f}×"


def test_a_timed_run_is_seconds_per_1000_iterations(monkeypatch):
    """With a fake clock on which every lower step takes 2 ms, 25 iterations at T = 5 take
    0.25 s: 10 s per 1000 iterations, in both modes; "steps" calls chunks of 10, 10, 5."""
    subject = synthetic_timing.Subject("SMD20", "penalty", False, 0)
    clock, calls = [0.0], []
    monkeypatch.setattr(synthetic_timing, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def steps(batch, iterations, lower_steps):
        clock[0] += 0.002 * lower_steps * iterations
        calls.append(iterations)

    monkeypatch.setattr(subject.solver, "step", lambda batch, lower_steps: steps(batch, 1, lower_steps))
    monkeypatch.setattr(subject.solver, "steps", steps)
    assert subject.time("step", 5, 25, 10) == pytest.approx(10.0, rel=1e-12)
    assert calls == [1] * 25
    calls.clear()
    assert subject.time("steps", 5, 25, 10) == pytest.approx(10.0, rel=1e-12)
    assert calls == [10, 10, 5]


def test_published_rows_and_paper_ratios(run):
    result = run[2]
    assert set(result["published"]) == {f"SMD20/{m}/{t}" for m in METHODS for t in TS}
    for t, steps in (("T1", 1), ("T5", 5)):
        means = {}
        for m in METHODS:
            (row,) = paper.lookup(table="Table 2", experiment="synthetic", method=m,
                                  example="SMD20", lower_steps=steps)
            assert result["published"][f"SMD20/{m}/{t}"] == row.to_dict()
            means[m] = row.mean
        ratios = result["metrics"]["paper_ratios"]["SMD20"][t]
        assert ratios["rmd/penalty"] == pytest.approx(means["rmd"] / means["penalty"])
        assert ratios["approxgrad/penalty"] == pytest.approx(means["approxgrad"] / means["penalty"])
    # Table 2, SMD20, T = 5: 51.4 / 34.3 and 39.3 / 34.3.
    assert result["metrics"]["paper_ratios"]["SMD20"]["T5"]["rmd/penalty"] == pytest.approx(1.4985, abs=1e-4)


def test_rmd_memory_grows_with_the_stored_iterates(run):
    memory = run[2]["metrics"]["memory"]
    assert memory["dim"] == MEMORY_DIM and memory["entries_per_level"] == 2 * MEMORY_DIM
    iterate_mb = memory["iterate_mb"]
    assert iterate_mb == pytest.approx(1.6)
    for method in ("rmd", "penalty"):
        for t in MEMORY_TS:
            entry = memory[method][f"T{t}"]
            if not entry["ok"] and entry["error"].startswith("MemoryError: refused"):
                pytest.skip(f"machine short of memory: {entry['error']}")
            assert entry["ok"], entry
            assert entry["raw"]["peak_source"] == "VmHWM"  # not the parent's ru_maxrss
            assert entry["extra_mb"] > 0
            assert entry["peak_mb"] == pytest.approx(entry["baseline_mb"] + entry["extra_mb"])
    rmd = memory["rmd"]
    stored = (MEMORY_TS[1] - MEMORY_TS[0]) * iterate_mb  # 18 more iterates of v: 28.8 MB
    assert rmd["T20"]["extra_mb"] - rmd["T2"]["extra_mb"] > 0.5 * stored
    # Without the one-off tracing cost, RMD at T = 20 needs at least its 21 iterates.
    if rmd["T20"]["run_extra_mb"] is not None:
        assert rmd["T20"]["run_extra_mb"] > 0.8 * 21 * iterate_mb
        assert rmd["T20"]["run_extra_mb"] > memory["penalty"]["T20"]["run_extra_mb"] + 0.5 * stored
    for t in MEMORY_TS:
        assert memory["ratio_rmd_penalty_extra_mb"][f"T{t}"] == pytest.approx(
            rmd[f"T{t}"]["extra_mb"] / memory["penalty"][f"T{t}"]["extra_mb"], rel=1e-12)


def test_memory_failure_is_reported_not_raised(tmp_path):
    # T = 10**9 at this dim would need petabytes: the probe refuses before importing TF.
    args = argparse.Namespace(memory_dim=MEMORY_DIM, memory_steps=[10 ** 9], memory_methods=["rmd"],
                              memory_iterations=1, memory_xla=False, memory_timeout=120.0,
                              memory_jobs=1, seed=0, quiet=True)
    memory = synthetic_timing.run_memory(args)
    entry = memory["rmd"]["T1000000000"]
    assert entry["ok"] is False and "refused" in entry["error"]
    assert memory["ratio_rmd_penalty_extra_mb"] == {"T1000000000": None}


def test_probe_reports_failure_as_json(capsys):
    status = memory_probe.main(["--method", "rmd", "--lower-steps", str(10 ** 9),
                                "--dim", str(MEMORY_DIM)])
    assert status == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is False and "refused" in printed["error"]


@pytest.mark.parametrize("flags", [["--iterations", "0"], ["--lower-steps", "0"],
                                   ["--memory-dim", "0"]])
def test_bad_flags_are_rejected(flags, tmp_path):
    with pytest.raises(experiment.ExperimentError):
        synthetic_timing.main(flags + ["--out", str(tmp_path)])
