"""penalty_tf.paper.reproduce: row ids from the registry, --list, --dry-run commands."""

import sys

import pytest

from penalty_tf.paper import published as paper, reproduce


def test_one_unique_row_id_per_published_number():
    ids = [r.row_id for r in reproduce.rows()]
    assert len(ids) == len(paper.PUBLISHED) == len(set(ids))
    for expected in ("table5.untargeted.1pct.penalty", "table5.targeted.2pct.label-flip",
                     "table3.mnist.noise25.penalty", "table4.omniglot.20way5shot.penalty",
                     "franceschi.mnist_small.penalty", "ren.cifar10_wrn.penalty",
                     "table2.smd20.t10.rmd", "cleanlabel.dogfish.penalty"):
        assert expected in ids


def test_literature_rows_are_not_reproducible():
    by_id = {r.row_id: r for r in reproduce.rows()}
    assert not by_id["table4.omniglot.5way1shot.maml"].reproducible
    assert not by_id["table5.untargeted.1pct.rmd"].reproducible
    assert not by_id["ren.cifar10_wrn.ren"].reproducible
    assert by_id["table2.smd20.t10.rmd"].reproducible      # our synthetic runner has RMD
    n_repro = sum(r.reproducible for r in by_id.values())
    # Table 4: 6 settings x 6 literature columns - 1 empty cell = 35; Table 5 RMD: 6 + 4;
    # ren, franceschi, koh-liang, shafahi: 4.
    assert n_repro == len(by_id) - 49

def test_list_prints_every_row_and_command(capsys):
    assert reproduce.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(paper.PUBLISHED)
    table = dict(line.split("\t") for line in lines)
    assert table["table5.untargeted.1pct.penalty"] == \
        "python -m poisoning.untargeted --npoison 10 --method penalty --quiet"
    assert table["table4.omniglot.5way1shot.maml"] == "(not reproducible: literature value)"


def test_reduced_list_uses_reduced_flags(capsys):
    reproduce.main(["--list", "--budget", "reduced"])
    table = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert table["table3.mnist.noise25.penalty"].endswith(
        "--noise 0.25 --method penalty --train-size 4000 --epochs 10 --quiet")
    assert "--epochs 1000" in table["table5.targeted.2pct.penalty"]
    assert "--iterations 500 --test-tasks 100" in table["table4.omniglot.20way5shot.penalty"]


def test_dry_run_prints_one_command_per_seed(tmp_path, capsys):
    assert reproduce.main(["table5.untargeted.1pct.penalty", "franceschi.mnist_small.penalty",
                           "--seeds", "2", "--out", str(tmp_path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"python -m poisoning.untargeted --npoison 10 --method penalty --seed {s} "
        f"--out {tmp_path}/table5.untargeted.1pct.penalty/seed{s} --quiet" for s in (0, 1)] + [
        f"python -m importance_learning.mnist_small --noise 0.5 --method penalty --seed {s} "
        f"--out {tmp_path}/franceschi.mnist_small.penalty/seed{s} --quiet" for s in (0, 1)]
    assert not any(tmp_path.iterdir())          # nothing was run


def test_unknown_and_literature_ids_are_refused():
    with pytest.raises(SystemExit, match="unknown row id.*table9"):
        reproduce.main(["table9.x", "--dry-run"])
    with pytest.raises(SystemExit, match="literature"):
        reproduce.main(["table4.omniglot.5way1shot.maml", "--dry-run"])


def test_command_uses_this_interpreter():
    row = next(r for r in reproduce.rows() if r.row_id == "table5.targeted.2pct.penalty")
    cmd = reproduce.command(row, "full", seed=3, data_dir="../shared/data")
    assert cmd[0] == sys.executable
    assert cmd[1:] == ["-m", "poisoning.targeted", "--npoison", "20", "--method", "penalty",
                       "--seed", "3", "--data-dir", "../shared/data", "--quiet"]
