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
