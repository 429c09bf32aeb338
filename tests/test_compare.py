"""`benchmarks.compare` end to end on a reduced budget (the --quick setting, fewer iterations),
and its summary maths on hand-made curves."""

import json

import pytest

from benchmarks import compare
from benchmarks.problems import SPECS


@pytest.fixture(scope="module")
def quick(tmp_path_factory, shared_data_dir):
    out = tmp_path_factory.mktemp("compare")
    summary = compare.main(["--quick", "--methods", "penalty", "soba", "--iterations", "8",
                            "--data-dir", str(shared_data_dir), "--out", str(out)])
    return out, summary


def test_every_problem_and_method_ran_and_is_written_out(quick):
    out, summary = quick
    assert set(summary) == {"smd20", "distillation"} and all(set(s) == {"penalty", "soba"} for s in summary.values())
    result = json.loads((out / "result.json").read_text())
    for name in ("smd20", "distillation"):
        assert (out / f"{name}.png").stat().st_size > 1000
        for method in ("penalty", "soba"):
            run = result["metrics"]["runs"][name][method]["runs"][0]
            assert "error" not in run, run
            curve = run["curve"]
            assert curve["iteration"] == [0, 2, 4, 6, 8]           # --quick: 4 measurements
            assert curve["seconds"] == sorted(curve["seconds"]) and curve["seconds"][-1] > 0
            assert run["peak_memory_mib"] > 100 and run["seconds_per_iteration"] > 0
    # SMD20 from Uniform[-5, 5]: err is far above the target after 8 iterations
    assert summary["smd20"]["penalty"]["final_quality_median"] > 1.0
    assert 0.0 <= summary["distillation"]["soba"]["final_quality_median"] <= 1.0
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + 4 and "| distillation | soba |" in table


def test_a_run_checks_the_hypergradient_when_asked():
    """In-process `run_one` on SMD20 (the check on distillation's 7,850 lower parameters takes
    tens of seconds). AID's direction is evaluated at its current v: with v's step 1e-4 it
    is still far from v*(u) after 40 iterations (measured cosine 0.79), with 1e-2 closer
    (0.95)."""
    spec = SPECS["smd20"]
    cosines = {}
    for lr_v in (1e-4, 1e-2):
        run = compare.run_one(spec, "aid", 0, iterations=40, eval_every=20, check_every=40, sets={"lr_v": lr_v},
                              data_dir=None)
        assert run["curve"]["iteration"] == [0, 20, 40] and run["settings"]["lr_v"] == lr_v
        (iteration, cosine, relative_error), = run["curve"]["cosine"]
        assert iteration == 40 and relative_error > 0
        cosines[lr_v] = cosine
    assert 0.5 < cosines[1e-4] < 0.9 < cosines[1e-2] <= 1.0


def test_time_to_target_is_the_first_measurement_that_reaches_it():
    spec = SPECS["distillation"]               # higher is better, target 0.8
    curve = {"seconds": [0.0, 1.0, 2.0, 3.0], "iteration": [0, 10, 20, 30], "quality": [0.1, 0.5, 0.85, 0.9]}
    assert compare.time_to_target(spec, curve) == (2.0, 20)
    assert compare.time_to_target(SPECS["smd20"], curve) == (None, None)    # err <= 0.01 never
    runs = [{"curve": curve, "seconds_per_iteration": 0.1, "peak_memory_mib": 500.0},
            {"curve": dict(curve, quality=[0.1, 0.2, 0.3, 0.4]), "seconds_per_iteration": 0.3,
             "peak_memory_mib": 700.0}]
    s = compare.summarise(spec, runs)
    assert s["seeds_reaching_target"] == 1 and s["seconds_to_target_median"] is None   # one seed never did
    assert s["final_quality_median"] == pytest.approx(0.65) and s["seconds_per_iteration_median"] == pytest.approx(0.2)


def test_bad_flags_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit):
        compare.main(["--problems", "smd99", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        compare.main(["--problems", "smd20", "--eval-every", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="NAME.FIELD=VALUE"):
        compare.parse_sets(["penalty-rho0=1"])
    assert compare.parse_sets(["penalty.rho0=1", "penalty.init=real"]) == {"penalty": {"rho0": 1, "init": "real"}}


def test_smd_problems_give_every_method_its_synthetic_runner_config():
    """The SMD problems run each solver as ``python -m synthetic.run`` does (e.g. Penalty's
    synthetic schedule: nu_0 = 0, c_lamb = 1 / c_rho), with ``--set`` still on top."""
    import dataclasses

    from penalty_tf import solvers
    from synthetic import run

    spec = SPECS["smd22"]
    for method in ("penalty", "approxgrad", "soba"):
        fields = {f.name for f in dataclasses.fields(solvers.config_class(method))}
        assert spec.settings(method, fields) == dataclasses.asdict(run.solver_config(method))
    penalty = spec.settings("penalty", {f.name for f in dataclasses.fields(solvers.PenaltyConfig)})
    assert penalty["nu0"] == 0.0 and penalty["c_lamb"] == pytest.approx(1 / 1.1) and penalty["lamb0"] == 10.0
