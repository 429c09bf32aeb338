"""Output files and resumes (issue 14, parts 5-7): ``--out`` checked before any work, clean
errors for OS errors, NaN and damaged checkpoints, resume budgets, file modes under the
umask, stale temporary files of killed runs, every writer atomic, and ``--deterministic``.

Most cases run a script's ``main`` in-process on a path that fails before TensorFlow work;
the few that need a run use tiny budgets."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from penalty_tf import files
from penalty_tf.paper import experiment as ex

REPO_ROOT = Path(__file__).resolve().parent.parent


def snapshot(directory: Path) -> dict:
    """Every file under ``directory`` (relative path -> bytes), to show nothing changed."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def error_line(capsys) -> str:
    """stderr of a `run_main` call: exactly one line, which is returned."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.strip()


def exits(main, argv, capsys, status=2) -> str:
    """``run_main(main(argv))`` as a script would run it: its exit status is ``status``;
    returns its one error line."""
    with pytest.raises(SystemExit) as exit_info:
        ex.run_main(lambda: main(argv))
    assert exit_info.value.code == status
    return error_line(capsys)


def cli(module: str, *argv: str, cwd=REPO_ROOT, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


# ------------------------------------------------------------------ file modes and temps


@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_atomic_writers_honour_the_umask(tmp_path, umask):
    assert files.current_umask() == umask
    fig = ex.new_figure(figsize=(1, 1))
    written = [files.write_json_atomic(tmp_path / "a.json", {"x": 1}),
               files.save_npz_atomic(tmp_path / "a.npz", x=np.ones(2)),
               files.save_npy_atomic(tmp_path / "a.npy", np.ones(2)),
               files.write_text_atomic(tmp_path / "a.txt", "text"),
               ex.save_figure_atomic(fig, tmp_path / "a.png")]
    with open(tmp_path / "plain", "w"):
        pass
    expected = 0o666 & ~umask
    assert (tmp_path / "plain").stat().st_mode & 0o777 == expected
    for path in written:
        assert path.stat().st_mode & 0o777 == expected, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npy", "a.npz", "a.png", "a.txt", "plain"]


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_stale_temporaries_are_removed_but_not_those_of_a_live_writer(tmp_path):
    """A killed writer's temporary (no lock held) goes; one whose writer is alive (its
    lock held, here by a child process) stays; a TF ``ckpt-N_temp`` directory goes once
    untouched for a minute; other files stay."""
    dead = tmp_path / ".result.json.abcd1234.tmp"
    dead.write_bytes(b"half")
    _age(dead, 10)
    fresh_tf = tmp_path / "ckpt-3_temp"
    fresh_tf.mkdir()
    (fresh_tf / "part-00000-of-00001.index").write_bytes(b"x")
    old_tf = tmp_path / "ckpt-2_temp"
    old_tf.mkdir()
    (old_tf / "part-00000-of-00001.data-00000-of-00001.tempstate123").write_bytes(b"x")
    for p in (old_tf / "part-00000-of-00001.data-00000-of-00001.tempstate123", old_tf):
        _age(p, 120)
    keep = [tmp_path / "notes.tmp", tmp_path / "result.json", tmp_path / "my_temp"]
    for p in keep:
        p.write_text("the user's")
        _age(p, 1000)
    held = tmp_path / ".big.npz.live5678.tmp"
    held.write_bytes(b"being written")
    _age(held, 1000)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'rb'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(held)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        removed = files.remove_stale_temps(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in removed) == [".result.json.abcd1234.tmp", "ckpt-2_temp"]
    assert held.exists() and fresh_tf.exists() and all(p.exists() for p in keep)
    assert [p.name for p in files.remove_stale_temps(tmp_path)] == [".big.npz.live5678.tmp"]   # writer gone


def test_a_killed_atomic_write_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    """A writer killed mid-write (SIGKILL: no cleanup) leaves ``.NAME.*.tmp``; the next
    run's `check_out_dir` removes it there and in the checkpoint directories."""
    for directory in (tmp_path, tmp_path / "checkpoint", tmp_path / "checkpoints" / "SMD20_gd_T1"):
        directory.mkdir(parents=True, exist_ok=True)
        code = ("import sys, time; from penalty_tf import files\n"
                "with files.atomic_file(sys.argv[1]) as h:\n"
                "    h.write(b'x' * 1000); h.flush(); print('writing', flush=True); time.sleep(60)")
        writer = subprocess.Popen([sys.executable, "-c", code, str(directory / "result.json")],
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "writing"
        writer.kill()
        writer.wait()
    temps = sorted(tmp_path.rglob(".result.json.*.tmp"))
    assert len(temps) == 3 and not any(tmp_path.rglob("result.json"))
    for temp in temps:
        _age(temp, 5)
    ex.check_out_dir(tmp_path)
    assert not any(tmp_path.rglob("*.tmp"))


# ------------------------------------------------------------------ --out checked first


def test_check_out_dir_refuses_unusable_paths_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cases = {blocker: "it is a file, not a directory: " + str(blocker),
             blocker / "sub" / "out": "a part of the path is a file, not a directory: " + str(blocker)}
    if os.geteuid() != 0:          # chmod does not stop root's writes
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases[locked] = "permission denied"
        cases[locked / "new"] = "permission denied"
    before = snapshot(tmp_path)
    for path, reason in cases.items():
        with pytest.raises(ex.ExperimentError) as error:
            ex.check_out_dir(path)
        message = str(error.value)
        assert message.startswith(f"cannot write to --out {path} ") and reason in message, message
        assert "choose another --out" in message
        assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a_file"] + (["locked"] if os.geteuid() else []))
    new = tmp_path / "x" / "y"
    assert ex.check_out_dir(new) == new and new.is_dir() and not any(new.iterdir())


def test_a_full_disk_at_the_probe_is_refused_and_the_new_directories_removed(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(ex.ExperimentError, match="no space left on the device.*free disk space"):
        ex.check_out_dir(tmp_path / "new" / "out")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ run_main: OS errors, NaN


def test_run_main_reports_an_os_error_in_one_line_with_status_1(tmp_path, capsys):
    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "result.json"))

    with pytest.raises(SystemExit) as exit_info:
        ex.run_main(disk_full)
    assert exit_info.value.code == 1
    line = error_line(capsys)
    assert "No space left on device" in line and str(tmp_path / "result.json") in line and "free disk space" in line


def test_a_write_that_fails_midway_is_a_clean_error_and_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "result.json"
    files.write_json_atomic(path, {"old": 1})

    def enospc(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", enospc)
    with pytest.raises(SystemExit) as exit_info:
        ex.run_main(lambda: files.write_json_atomic(path, {"new": 2}))
    assert exit_info.value.code == 1 and "No space left on device" in error_line(capsys)
    assert json.loads(path.read_text()) == {"old": 1} and sorted(tmp_path.iterdir()) == [path]


def test_run_main_turns_a_nonfinite_error_into_advice(capsys):
    from penalty_tf.solvers import NonFiniteError

    def diverged():
        raise NonFiniteError("the gradient of h_lower w.r.t. the lower variables is not finite")

    with pytest.raises(SystemExit) as exit_info:
        ex.run_main(diverged)
    assert exit_info.value.code == 2
    line = error_line(capsys)
    assert "not finite" in line and "smaller learning rates (--lr-u, --lr-v" in line and "without --resume" in line


# ------------------------------------------------------------------ damaged checkpoints


def _saved_checkpoint(directory):
    import tensorflow as tf

    from penalty_tf.checkpoints import RunCheckpoint

    rng = np.random.default_rng(0)
    RunCheckpoint(directory, {"lr": 0.1}, rngs={"data": rng}, w=tf.Variable([1.0, 2.0])).save(epoch=3)
    return lambda: RunCheckpoint(directory, {"lr": 0.1}, rngs={"data": rng}, w=tf.Variable([0.0, 0.0]))


@pytest.mark.parametrize("cut", ["empty", "half"])
def test_every_truncated_checkpoint_file_is_a_clean_error_that_keeps_the_files(tmp_path, cut):
    from penalty_tf.checkpoints import CheckpointError

    directory = tmp_path / "checkpoint"
    fresh = _saved_checkpoint(directory)
    good = snapshot(directory)
    assert sorted(good) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index", "run.json"]
    for name, data in good.items():
        (directory / name).write_bytes(b"" if cut == "empty" else data[:len(data) // 2])
        damaged = snapshot(directory)
        with pytest.raises(CheckpointError) as error:
            fresh().restore()
        message = str(error.value)
        assert f"delete {directory} to start afresh" in message, message
        assert (str(directory / name) in message if name == "run.json"
                else str(directory / "ckpt-1") + ".index" in message), message
        assert snapshot(directory) == damaged                  # nothing deleted or rewritten
        (directory / name).write_bytes(data)
    assert fresh().restore() == {"epoch": 3}


def test_a_save_never_overwrites_checkpoint_files(tmp_path):
    """Numbers continue after the highest TF files present, even without a (readable)
    sidecar: a fresh run over a damaged checkpoint replaces it instead of failing."""
    directory = tmp_path / "checkpoint"
    fresh = _saved_checkpoint(directory)
    (directory / "run.json").write_text("{trunc")
    fresh().save(epoch=1)
    (directory / "run.json").unlink()
    fresh().save(epoch=2)
    assert sorted(p.name for p in directory.iterdir()) == [
        "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-3.data-00000-of-00001", "ckpt-3.index", "run.json"]
    assert fresh().restore() == {"epoch": 2}


def test_orphan_checkpoint_files_are_refused_on_resume(tmp_path):
    directory = tmp_path / "checkpoint"
    fresh = _saved_checkpoint(directory)
    (directory / "run.json").unlink()
    before = snapshot(directory)
    with pytest.raises(ex.ExperimentError, match=r"holds checkpoint files but no run\.json.*delete .*"
                                                 r"or run without --resume"):
        ex.restore_checkpoint(fresh())
    assert snapshot(directory) == before


def test_a_checkpoint_write_that_fails_is_an_os_error(tmp_path, monkeypatch):
    import tensorflow as tf

    from penalty_tf.checkpoints import RunCheckpoint

    checkpoint = RunCheckpoint(tmp_path, {"lr": 0.1}, w=tf.Variable(1.0))

    def full(prefix):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(checkpoint.checkpoint, "write", full)
    with pytest.raises(OSError, match="cannot write the checkpoint .*ckpt-1: No space left"):
        checkpoint.save(epoch=1)


# ------------------------------------------------------------------ every script checks --out first


def _module(name):
    import importlib

    return importlib.import_module(name)


#: Every script that writes into a directory: (module, flags that let it reach the check, the
#: flag naming the directory). None of them loads data or builds a model before the check.
OUT_SCRIPTS = [
    ("importance_learning.mnist_small", [], "--out"),
    ("importance_learning.mnist", ["--method", "approxgrad"], "--out"),
    ("importance_learning.speed", [], "--out"),
    ("importance_learning.svhn_preprocess", ["--data-dir", "{missing}"], "--out-dir"),
    ("few_shot.omniglot", [], "--out"),
    ("few_shot.miniimagenet", [], "--out"),
    ("few_shot.omniglot_build", ["--images", "{missing}"], "--out"),
    ("few_shot.timing", [], "--out"),
    ("synthetic.run", [], "--out"),
    ("poisoning.untargeted", [], "--out"),
    ("poisoning.targeted", ["--method", "label-flip"], "--out"),
    ("poisoning.clean_label", [], "--out"),
    ("poisoning.extract_features", ["--data-dir", "{dogfish}"], "--out"),
    ("benchmarks.synthetic_timing", [], "--out"),
    ("benchmarks.compare_trees", ["--trees", "a={missing}", "b={missing}"], "--out"),
]


def _dogfish(directory: Path) -> Path:
    """A tiny file in the dog-fish .npz format (the loader's checks pass)."""
    from penalty_tf.datasets import dogfish

    rng = np.random.default_rng(0)
    y = np.arange(4) % 2
    x = np.clip(rng.uniform(-0.3, 0.3, (4, 75, 75, 3)) + np.where(y == 1, 0.5, -0.5)[:, None, None, None], -1, 1)
    directory.mkdir()
    np.savez(directory / dogfish.DOGFISH_FILE, X_train=x.astype(np.float32), Y_train=y,
             X_test=x.astype(np.float32), Y_test=y)
    return directory


@pytest.mark.parametrize("module, flags, flag", OUT_SCRIPTS, ids=[s[0] for s in OUT_SCRIPTS])
def test_every_script_refuses_an_unusable_out_before_any_work(module, flags, flag, tmp_path, capsys):
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file where the output directory should be")
    names = {"missing": str(tmp_path / "missing"),
             "dogfish": str(_dogfish(tmp_path / "dogfish")) if "{dogfish}" in flags else ""}
    argv = [f.format(**names) for f in flags]
    main = _module(module).main
    for out, reason in ((blocker, "it is a file, not a directory"),
                        (blocker / "run", "a part of the path is a file, not a directory")):
        before = snapshot(tmp_path)
        start = time.perf_counter()
        line = exits(main, argv + [flag, str(out)], capsys)
        assert line.startswith(f"error: cannot write to {flag} {out} ({reason}: {blocker})"), line
        assert "choose another" in line
        assert snapshot(tmp_path) == before
        assert time.perf_counter() - start < 10          # refused before the work


# ------------------------------------------------------------------ a real (tiny) run: synthetic


SYNTHETIC = ["--example", "SMD20", "--method", "penalty", "--lower-steps", "1", "--epochs", "11",
             "--trials", "2", "--record-every", "10", "--no-xla", "--quiet"]


def _synthetic(out, *extra):
    from synthetic import run

    return run.main(SYNTHETIC + ["--out", str(out), *extra])


def _synthetic_main(argv):
    """``synthetic.run.main`` of the tiny run with more flags (``exits``' convention)."""
    from synthetic import run

    return run.main(SYNTHETIC + [str(a) for a in argv])


def test_a_run_writes_files_with_the_umask_mode_and_clears_the_temporaries_of_a_killed_one(tmp_path, umask):
    out = tmp_path / "run"
    setting = out / "checkpoints" / "SMD20_penalty_T1"
    setting.mkdir(parents=True)
    stale = [out / ".curves.npz.k1ll3d00.tmp", setting / ".run.json.k1ll3d00.tmp", setting / "ckpt-2_temp"]
    stale[-1].mkdir()
    for path in stale[:-1]:
        path.write_bytes(b"half a file")
    for path in stale:
        _age(path, 300)
    result = _synthetic(out)
    assert result["config"]["deterministic"] is False
    assert not any(p.exists() for p in stale) and not list(out.rglob("*.tmp"))
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"result.json", "curves.npz", "err_SMD20.png", "run.json",
                                         "ckpt-2.index", "ckpt-2.data-00000-of-00001"}
    for path in written:                               # ours and TensorFlow's checkpoint files
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_a_disk_that_fills_during_a_run_is_one_line_with_status_1(tmp_path, monkeypatch, capsys):
    calls, real_fsync = [], os.fsync

    def fills_after_the_probe(fd):
        calls.append(fd)
        if len(calls) > 1:                             # the --out probe passes; the first write fails
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fills_after_the_probe)
    line = exits(_synthetic_main, ["--out", tmp_path], capsys, status=1)
    assert "No space left on device" in line and "free disk space" in line and "--resume" in line
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "result.json").exists()


def test_a_diverged_run_is_one_line_whose_advice_works(tmp_path, capsys):
    line = exits(_synthetic_main, ["--out", tmp_path, "--rho0", "1e38"], capsys)
    assert "not finite" in line and "rerun without --resume" in line and "smaller learning rates" in line
    assert not (tmp_path / "result.json").exists()
    assert _synthetic(tmp_path)["metrics"]["SMD20/penalty/T1"]["trials"] == 2      # the advice: a fresh run


def test_synthetic_damaged_checkpoints_are_refused_keeping_every_file_and_a_fresh_run_replaces_them(tmp_path,
                                                                                                       capsys):
    assert _synthetic(tmp_path, "--stop-after", "1") == {}
    folder = tmp_path / "checkpoints" / "SMD20_penalty_T1"
    good = snapshot(folder)
    for name, data in good.items():
        (folder / name).write_bytes(data[:len(data) // 2])
        before = snapshot(tmp_path)
        line = exits(_synthetic_main, ["--out", tmp_path, "--resume"], capsys)
        assert line.startswith(f"error: cannot resume from {folder}") and f"delete {folder}" in line, line
        assert "run without --resume" in line and (name in line or "ckpt-1.index" in line), line
        assert snapshot(tmp_path) == before
        (folder / name).write_bytes(data)
    line = exits(_synthetic_main, ["--out", tmp_path, "--resume", "--epochs", "21"], capsys)
    assert "epochs: checkpoint 11, now 21" in line                   # another budget: refused, both named
    (folder / "run.json").write_text("{trunc")
    assert _synthetic(tmp_path)["metrics"]["SMD20/penalty/T1"]["trials"] == 2      # the fix named: works


# ------------------------------------------------------------------ few-shot, poisoning, importance resumes


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory):
    from conftest import build_fake_omniglot

    return build_fake_omniglot(tmp_path_factory.mktemp("omniglot"))


def test_few_shot_resume_refuses_a_smaller_budget_and_a_fresh_run_replaces_a_damaged_checkpoint(
        omniglot_dir, tmp_path, capsys):
    from few_shot import omniglot

    flags = ["--data-dir", str(omniglot_dir), "--out", str(tmp_path), "--filters", "4", "--train-characters", "4",
             "--nway", "3", "--kshot", "1", "--meta-batch", "2", "--test-tasks", "3", "--test-steps", "3",
             "--lower-steps", "2", "--linear-steps", "2", "--query-per-class", "3", "--quiet", "--eval-every", "2"]
    assert omniglot.main(flags + ["--iterations", "4", "--stop-after", "3"]) == {}
    before = snapshot(tmp_path)
    line = exits(omniglot.main, flags + ["--iterations", "1", "--resume"], capsys)
    assert "with --iterations 1: its checkpoint has already done 2 meta-iterations" in line
    assert "resume with --iterations 2 or more" in line and snapshot(tmp_path) == before
    (tmp_path / "checkpoint" / "run.json").write_text('{"format": 1, "num')
    line = exits(omniglot.main, flags + ["--iterations", "4", "--resume"], capsys)
    assert "unreadable or truncated" in line and "run without --resume" in line
    result = omniglot.main(flags + ["--iterations", "2"])           # the fix it names
    assert result["metrics"]["iterations_done"] == 2 and result["config"]["iterations"] == 2


def test_a_diverged_few_shot_run_is_one_line_naming_the_fix(omniglot_dir, tmp_path, capsys):
    from few_shot import omniglot

    line = exits(omniglot.main, ["--data-dir", str(omniglot_dir), "--out", str(tmp_path), "--filters", "4",
                                 "--train-characters", "4", "--nway", "3", "--kshot", "1", "--meta-batch", "2",
                                 "--test-tasks", "3", "--test-steps", "3", "--lower-steps", "2", "--quiet",
                                 "--query-per-class", "3", "--iterations", "2", "--rho0", "1e38"], capsys)
    assert "not finite" in line and "rerun without --resume" in line and "smaller learning rates" in line


def test_poisoning_resume_refuses_another_budget_and_a_fresh_run_replaces_a_damaged_checkpoint(
        shared_data_dir, tmp_path, capsys):
    from poisoning import untargeted

    argv = ["--npoison", "10", "--epochs", "6", "--lower-steps", "1", "--retrain-steps", "10", "--checkpoint-every",
            "2", "--quiet", "--data-dir", str(shared_data_dir), "--out", str(tmp_path)]
    assert untargeted.main(argv + ["--stop-after", "3"]) == {}
    before = snapshot(tmp_path)
    line = exits(untargeted.main, argv + ["--resume", "--epochs", "4"], capsys)
    assert "other settings (epochs: checkpoint 6, now 4)" in line and snapshot(tmp_path) == before
    (tmp_path / "checkpoint" / "run.json").write_text("")
    line = exits(untargeted.main, argv + ["--resume"], capsys)
    assert "run.json is unreadable or truncated" in line and "run without --resume" in line
    assert snapshot(tmp_path) == before | {"checkpoint/run.json": b""}
    assert untargeted.main(argv)["config"]["epochs"] == 6                    # the fix it names


MNIST_SMALL = ["--train-size", "200", "--retrain-epochs", "1", "--batch-size", "100", "--pretrain-epochs", "1",
               "--lower-steps", "1", "--quiet"]


def test_importance_resume_extends_a_finished_run_and_refuses_a_shorter_one(shared_data_dir, tmp_path, capsys):
    """A larger --epochs continues the checkpoint (config and metrics agree; that a resume
    equals an uninterrupted run is test_importance_scripts' kill-and-resume tests); a smaller
    one than done is refused, naming both."""
    from importance_learning import mnist_small

    flags = ["--data-dir", str(shared_data_dir), *MNIST_SMALL]
    short = mnist_small.main(flags + ["--epochs", "2", "--out", str(tmp_path / "cut")])
    assert short["config"]["epochs"] == 2 and len(short["metrics"]["epochs"]) == 2
    extended = mnist_small.main(flags + ["--epochs", "3", "--out", str(tmp_path / "cut"), "--resume"])
    assert extended["config"]["epochs"] == 3 and [e["epoch"] for e in extended["metrics"]["epochs"]] == [0, 1, 2]
    assert extended["metrics"]["epochs"][:2] == short["metrics"]["epochs"]        # continued, not redone
    before = snapshot(tmp_path / "cut")
    line = exits(mnist_small.main, flags + ["--epochs", "1", "--out", str(tmp_path / "cut"), "--resume"], capsys)
    assert "with --epochs 1: its checkpoint has already done 3 epochs; resume with --epochs 3 or more" in line
    assert snapshot(tmp_path / "cut") == before


def test_importance_nan_advice_is_one_that_works(shared_data_dir, tmp_path, capsys):
    from importance_learning import mnist_small

    flags = ["--data-dir", str(shared_data_dir), *MNIST_SMALL, "--epochs", "2", "--out", str(tmp_path)]
    line = exits(mnist_small.main, flags + ["--lr-v", "1e38"], capsys)
    assert "not finite" in line and "(epoch 0, minibatch" in line
    assert "rerun without --resume (a fresh run replaces the checkpoint) with smaller learning rates" in line
    line = exits(mnist_small.main, flags + ["--lr-v", "1e-3", "--resume"], capsys)      # not this
    assert "other settings" in line and "lr_v" in line
    result = mnist_small.main(flags + ["--lr-v", "1e-3"])                                 # but this
    assert result["config"]["lr_v"] == 1e-3 and len(result["metrics"]["epochs"]) == 2


# ------------------------------------------------------------------ --deterministic


MNIST_CNN_TINY = ["--train-size", "200", "--test-size", "100", "--batch-size", "100", "--epochs", "2",
                  "--pretrain-epochs", "1", "--lower-steps", "1", "--quiet"]


def _without_timings(x):
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items()
                if not k.endswith("time_s") and k != "seconds_per_upper_iteration"}
    return [_without_timings(v) for v in x] if isinstance(x, list) else x


def test_deterministic_makes_two_cnn_runs_bitwise_equal(shared_data_dir, tmp_path):
    """Two processes of the MNIST-CNN importance script with --deterministic (started
    together) give the same bits: importances.npz and every metric but the timings. Without
    it they differ at round-off from the first upper iteration (Grappler; the measurements
    are in test_importance_scripts.py)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen([sys.executable, "-m", "importance_learning.mnist", "--data-dir", str(shared_data_dir),
                               *MNIST_CNN_TINY, "--deterministic", "--out", str(out)], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for out in outs]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    a, b = (json.loads((out / "result.json").read_text()) for out in outs)
    assert a["config"]["deterministic"] is True
    assert _without_timings(a["metrics"]) == _without_timings(b["metrics"])
    with np.load(outs[0] / "importances.npz") as x, np.load(outs[1] / "importances.npz") as y:
        assert x.files == y.files and all(x[k].tobytes() == y[k].tobytes() for k in x.files)


# ------------------------------------------------------------------ the tools write atomically too


def _tree(directory: Path) -> dict:
    """Every entry under ``directory``: relative path -> permission bits."""
    return {str(p.relative_to(directory)): p.stat().st_mode & 0o777 for p in sorted(directory.rglob("*"))}


def test_report_writes_its_table_and_plots_atomically_with_the_umask_mode(tmp_path, umask):
    from penalty_tf.paper import published as paper, report

    runs = tmp_path / "runs" / "a"
    runs.mkdir(parents=True)
    files.write_json_atomic(runs / "result.json", {
        "experiment": "poisoning.untargeted", "method": "penalty", "config": {"epochs": 5000},
        "metrics": {"poisoned_test_accuracy": 83.1}, "wall_time_s": 1.0, "versions": {},
        "published": paper.published_dict(experiment="poisoning.untargeted", method="penalty", npoison=10)})
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "rep" / "report.md")]) == 0
    mode = 0o666 & ~umask
    assert _tree(tmp_path / "rep") == {"report.md": mode, "table_5.png": mode}


@pytest.fixture(scope="module")
def svhn_mat_dir(tmp_path_factory):
    from scipy import io

    root = tmp_path_factory.mktemp("svhn_mat")
    rng = np.random.default_rng(1)
    for name, y in (("train_32x32.mat", np.repeat(np.arange(1, 11), 6)), ("test_32x32.mat", np.arange(1, 11))):
        io.savemat(root / name, {"X": rng.integers(0, 256, (32, 32, 3, len(y))).astype(np.uint8),
                                 "y": y.reshape(-1, 1).astype(np.uint8)})
    return root


def test_svhn_preprocess_publishes_complete_files_only(svhn_mat_dir, tmp_path, monkeypatch, umask):
    """The HDF5 files appear under their names complete, with the umask's mode; a failure
    midway leaves the directory as it was; the fixed ``NAME.tmp`` of older versions goes."""
    from importance_learning import svhn_preprocess
    from penalty_tf.datasets import svhn

    out = tmp_path / "out"
    out.mkdir()
    legacy = out / (svhn.GREY_FILE + ".tmp")
    legacy.write_bytes(b"half an HDF5 file of a killed run")
    _age(legacy, 300)
    argv = ["--data-dir", str(svhn_mat_dir), "--out-dir", str(out), "--val-per-class", "2"]
    svhn_preprocess.main(argv)
    mode = 0o666 & ~umask
    assert _tree(out) == {svhn.COLOUR_FILE: mode, svhn.GREY_FILE: mode}
    svhn.load_svhn_grey(str(out))
    before = snapshot(out)
    real = svhn.preprocess_svhn

    def dies_after_the_first_file(mat_dir, out_dir, rng, val_per_class):
        real(mat_dir, out_dir, rng, val_per_class)
        (Path(out_dir) / svhn.GREY_FILE).unlink()
        raise KeyboardInterrupt                       # killed while writing the second file

    monkeypatch.setattr(svhn, "preprocess_svhn", dies_after_the_first_file)
    with pytest.raises(KeyboardInterrupt):
        svhn_preprocess.main(argv + ["--seed", "5"])
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)


def test_omniglot_build_writes_with_the_umask_mode(tmp_path, umask):
    from few_shot import fake_data, omniglot_build

    fake_data.write_omniglot_tree(tmp_path / "png", alphabets=1, characters=2, images=2)
    omniglot_build.main(["--images", str(tmp_path / "png"), "--out", str(tmp_path / "data"), "--quiet"])
    mode = 0o666 & ~umask
    assert _tree(tmp_path / "data") == {"x_omniglot_1.npy": mode, "y_omniglot_1.npy": mode}
    assert {m for name, m in _tree(tmp_path / "png").items() if name.endswith(".png")} == {mode}


DETERMINISTIC_SCRIPTS = ["importance_learning.mnist_small", "importance_learning.mnist", "importance_learning.cifar10",
                         "importance_learning.cifar10_wrn", "importance_learning.svhn", "few_shot.omniglot",
                         "few_shot.miniimagenet", "synthetic.run", "poisoning.untargeted", "poisoning.targeted",
                         "poisoning.clean_label"]


@pytest.mark.parametrize("module", DETERMINISTIC_SCRIPTS)
def test_every_experiment_script_has_the_deterministic_flag(module):
    import importlib

    mod = importlib.import_module(module)
    from importance_learning import driver

    parser = driver.build_parser(mod.SPEC) if hasattr(mod, "SPEC") else mod.build_parser()
    assert parser.parse_args(["--deterministic"]).deterministic is True
    assert parser.parse_args([]).deterministic in (False, None)
