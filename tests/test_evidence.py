"""Every number in the READMEs is backed by a committed result file (penalty_tf.paper.evidence).

The first tests check the repository itself: the claims of results/claims.json against
their result files and the READMEs, no measured-looking README number without evidence,
the README's report block equal to the report over results/, and complete evidence.json
files. The others check the tool on a scratch folder.
"""

import json
import re
import sys
from pathlib import Path

import pytest

from penalty_tf.paper import evidence

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"


def test_every_claim_shows_its_result_file_value():
    problems = evidence.check_claims(RESULTS, REPO)
    assert not problems, "\n".join(map(str, problems))


def test_no_readme_number_without_evidence():
    problems = evidence.unbacked_numbers(RESULTS, REPO)
    assert not problems, "\n".join(map(str, problems))


def test_every_claim_names_a_recorded_run():
    names = {name for claim in evidence.load_claims(RESULTS)["claims"] for spec in claim["values"]
             for name in spec.get("results", [spec.get("result")])}
    missing = sorted(n for n in names if not (RESULTS / n / "evidence.json").is_file())
    assert not missing, missing


def test_readme_report_blocks_equal_the_report_of_their_results():
    problems = evidence.check_report_blocks(REPO)
    assert not problems, "\n".join(map(str, problems))
    assert "<!-- report: results -->" in (REPO / "README.md").read_text()


def test_evidence_files_are_complete():
    records = sorted(RESULTS.glob("*/evidence.json"))
    assert records, "no recorded run in results/"
    for path in records:
        ev = json.loads(path.read_text())
        name = path.parent.name
        assert ev["name"] == name
        assert f"results/{name}" in ev["command"], ev["command"]
        assert re.fullmatch(r"[0-9a-f]{40}", ev["git_commit"]), path
        assert ev["versions"]["tensorflow"] and ev["versions"]["penalty_tf"], path
        assert len(ev["machine_before"]["load_average"]) == 3, path
        assert ev["started"] <= ev["finished"], path
        if "--seed" in ev["command"]:
            assert ev["seed"] is not None, path


# --------------------------------------------------------------------- the tool itself

WRITER = ("import json, sys, pathlib; out = pathlib.Path(sys.argv[sys.argv.index('--out') + 1]); "
          "out.mkdir(parents=True, exist_ok=True); (out / 'result.json').write_text(json.dumps("
          "{'experiment': 'x', 'method': 'm', 'metrics': {'acc': float(sys.argv[1])}})); "
          "(out / 'big.bin').write_bytes(bytes(3_000_000))")


def record_value(results, name, value):
    return evidence.record(name, [sys.executable, "-c", WRITER, str(value), "--seed", "3"],
                           results=results, note="test")


def test_record_keeps_outputs_and_evidence_and_omits_big_files(tmp_path):
    folder = record_value(tmp_path, "row.a", 0.5)
    assert json.loads((folder / "result.json").read_text())["metrics"]["acc"] == 0.5
    ev = json.loads((folder / "evidence.json").read_text())
    assert ev["seed"] == 3 and ev["note"] == "test" and ev["wall_time_s"] > 0
    assert not (folder / "big.bin").exists()
    assert ev["omitted_files"] == ["big.bin (3000000 bytes)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["row.a"]   # no temporary left


def test_a_failed_command_leaves_the_old_record(tmp_path):
    record_value(tmp_path, "row.a", 0.5)
    with pytest.raises(SystemExit, match="exit status 3"):
        evidence.record("row.a", [sys.executable, "-c", "import sys; sys.exit(3)"], results=tmp_path)
    assert json.loads((tmp_path / "row.a" / "result.json").read_text())["metrics"]["acc"] == 0.5
    record_value(tmp_path, "row.a", 0.75)   # a new successful run replaces it
    assert json.loads((tmp_path / "row.a" / "result.json").read_text())["metrics"]["acc"] == 0.75


def test_check_claims_catches_a_number_that_drifted_from_its_evidence(tmp_path):
    record_value(tmp_path, "row.a", 0.123456)
    (tmp_path / "README.md").write_text("| row | 0.1235 |\nmeasured 7.777 in prose\n")
    claim = {"file": "README.md", "text": "| row | 0.1235 |",
             "values": [{"result": "row.a", "key": "metrics.acc", "format": ".4f"}]}
    (tmp_path / "claims.json").write_text(json.dumps({"claims": [claim], "allowed": {}}))
    assert evidence.check_claims(tmp_path, tmp_path) == []
    unbacked = evidence.unbacked_numbers(tmp_path, tmp_path)
    assert [p.message.split()[0] for p in unbacked] == ["7.777"]
    record_value(tmp_path, "row.a", 0.2)     # the evidence changes, the README does not
    [problem] = evidence.check_claims(tmp_path, tmp_path)
    assert "does not show 0.2000" in problem.message


def test_measured_numbers_skip_code_and_comments():
    text = "a 1.5 b\n```\n2.5\n```\n<!-- 3.5 -->`4.5` and 12 ms, 40,001 steps, 3 min\n"
    assert evidence.measured_numbers(text) == ["1.5", "12ms", "3min"]


def test_claims_over_several_records_print_their_mean_and_sample_sd(tmp_path):
    for i, value in enumerate([1.0, 2.0, 4.0]):
        record_value(tmp_path, f"row.seed{i}", value)
    names = [f"row.seed{i}" for i in range(3)]
    spec = {"results": names, "key": "metrics.acc", "format": ".3f"}
    assert evidence.formatted_value({**spec, "stat": "mean"}, tmp_path) == "2.333"
    assert evidence.formatted_value({**spec, "stat": "sd"}, tmp_path) == "1.528"
