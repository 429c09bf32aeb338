"""Tests of the shared run plumbing in penalty_tf.paper.experiment."""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from penalty_tf import files
from penalty_tf.paper import experiment as ex

REPO_ROOT = Path(__file__).resolve().parent.parent


def _leftovers(directory: Path, final_names: set) -> list:
    """Files in ``directory`` other than the expected final files (i.e. temp files)."""
    return sorted(p.name for p in directory.iterdir() if p.name not in final_names)


# ------------------------------------------------------------------ to_jsonable


def test_to_jsonable_converts_nan_inf_and_numpy_types():
    import tensorflow as tf

    obj = {
        "nan": float("nan"),
        "inf": np.inf,
        "-inf": -math.inf,
        "f32": np.float32(1.5),
        "i64": np.int64(7),
        "bool": np.bool_(True),
        "array": np.array([[1.0, np.nan], [np.inf, 2.5]]),
        "tuple": (1, np.float64(2.0)),
        "path": Path("runs") / "x",
        "tensor": tf.constant([0.5, 1.5]),
        3: "int key",
    }
    out = ex.to_jsonable(obj)
    assert out == {
        "nan": None, "inf": None, "-inf": None, "f32": 1.5, "i64": 7, "bool": True,
        "array": [[1.0, None], [None, 2.5]], "tuple": [1, 2.0],
        "path": os.path.join("runs", "x"), "tensor": [0.5, 1.5], "3": "int key",
    }
    assert type(out["f32"]) is float and type(out["i64"]) is int and type(out["bool"]) is bool
    # The result is strict JSON.
    json.dumps(out, allow_nan=False)


def test_to_jsonable_rejects_unknown_objects():
    with pytest.raises(TypeError, match="object"):
        ex.to_jsonable({"x": object()})


# ------------------------------------------------------------------ atomic writes


def test_write_json_atomic_roundtrip_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "result.json"  # parent directory is created
    ex.write_json_atomic(path, {"a": [1, 2, np.float64("nan")], "b": "x"})
    assert json.loads(path.read_text()) == {"a": [1, 2, None], "b": "x"}
    assert _leftovers(path.parent, {"result.json"}) == []


def test_write_json_atomic_keeps_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "result.json"
    ex.write_json_atomic(path, {"version": 1})
    old = path.read_bytes()
    with pytest.raises(TypeError):
        ex.write_json_atomic(path, {"version": 2, "bad": object()})
    assert path.read_bytes() == old
    assert _leftovers(tmp_path, {"result.json"}) == []


def test_write_json_atomic_keeps_old_file_when_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    ex.write_json_atomic(path, {"version": 1})
    old = path.read_bytes()
    seen = {}

    def failing_replace(src, dst):
        seen["src"] = Path(src)
        # The complete new content is in the temp file, in the same directory.
        assert json.loads(Path(src).read_text()) == {"version": 2}
        raise OSError("disk went away")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk went away"):
        ex.write_json_atomic(path, {"version": 2})
    assert seen["src"].parent == tmp_path
    assert path.read_bytes() == old
    assert _leftovers(tmp_path, {"result.json"}) == []


def test_write_json_atomic_fsyncs_before_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(files.os, "replace",
                        lambda a, b: (calls.append("replace"), real_replace(a, b)))
    ex.write_json_atomic(tmp_path / "r.json", {"x": 1})
    assert calls == ["fsync", "replace"]


def test_save_npz_atomic_roundtrip_and_partial_write_is_never_visible(tmp_path, monkeypatch):
    path = tmp_path / "errs.npz"
    errs = np.arange(12, dtype=np.float32).reshape(3, 4)
    ex.save_npz_atomic(path, errs=errs, ts=[1.0, 2.0])
    with np.load(path) as data:
        np.testing.assert_array_equal(data["errs"], errs)
        np.testing.assert_array_equal(data["ts"], [1.0, 2.0])
    old = path.read_bytes()

    def savez_that_dies_halfway(handle, **arrays):
        handle.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt  # as if the run was killed mid-write

    monkeypatch.setattr(files.np, "savez", savez_that_dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ex.save_npz_atomic(path, errs=errs * 2)
    assert path.read_bytes() == old
    assert _leftovers(tmp_path, {"errs.npz"}) == []


def test_save_npz_atomic_does_not_rename_the_file(tmp_path):
    path = tmp_path / "arrays.data"
    ex.save_npz_atomic(path, x=np.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.data"]
    with np.load(path) as data:
        assert data["x"].sum() == 3.0


def test_save_figure_atomic_writes_png_of_the_right_size(tmp_path):
    fig = ex.new_figure(figsize=(4, 3))
    ax = fig.add_subplot()
    ax.semilogy([1, 2, 3], [1.0, 0.1, 0.01])
    path = ex.save_figure_atomic(fig, tmp_path / "plots" / "err.png", dpi=50)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (200, 150)
    assert _leftovers(path.parent, {"err.png"}) == []


def test_save_figure_atomic_failure_keeps_old_png(tmp_path, monkeypatch):
    fig = ex.new_figure(figsize=(2, 2))
    path = ex.save_figure_atomic(fig, tmp_path / "err.png", dpi=20)
    old = path.read_bytes()

    def broken_savefig(handle, **kwargs):
        handle.write(b"\x89PNG partial")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(fig, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        ex.save_figure_atomic(fig, path)
    assert path.read_bytes() == old
    assert _leftovers(tmp_path, {"err.png"}) == []


def test_importing_experiment_does_not_import_pyplot_or_tensorflow():
    code = ("import sys, penalty_tf.paper.experiment; "
            "print('matplotlib.pyplot' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------- result.json


def test_write_result_schema_and_content(tmp_path):
    parser = argparse.ArgumentParser()
    ex.add_common_flags(parser, methods=["penalty", "approxgrad"], default_method="penalty",
                        epochs=3, lower_steps=2)
    args = parser.parse_args(["--seed", "5"])
    out_dir = tmp_path / "runs" / "demo"  # does not exist yet
    result = ex.write_result(out_dir, experiment="synthetic", method=args.method,
                             config=vars(args),
                             metrics={"err": np.float32(0.25), "loss": float("nan")},
                             published={"mean": 57.0, "sd": 1.0}, wall_time_s=np.float64(1.5))
    on_disk = json.loads((out_dir / "result.json").read_text())
    assert on_disk == result
    assert list(on_disk) == ["experiment", "method", "config", "metrics", "published",
                             "wall_time_s", "versions"]
    assert on_disk["experiment"] == "synthetic"
    assert on_disk["method"] == "penalty"
    assert on_disk["config"]["seed"] == 5 and on_disk["config"]["epochs"] == 3
    assert on_disk["metrics"] == {"err": 0.25, "loss": None}
    assert on_disk["published"] == {"mean": 57.0, "sd": 1.0}
    assert on_disk["wall_time_s"] == 1.5
    assert set(on_disk["versions"]) == {"tensorflow", "keras", "penalty_tf", "numpy", "python"}
    assert _leftovers(out_dir, {"result.json"}) == []


def test_versions_reports_installed_packages():
    import keras
    import tensorflow as tf

    import penalty_tf

    v = ex.versions()
    assert v["tensorflow"] == tf.__version__
    assert v["keras"] == keras.__version__
    assert v["penalty_tf"] == penalty_tf.__version__
    assert v["numpy"] == np.__version__
    assert v["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")


# ------------------------------------------------------------------------- flags


def _parser(**kwargs):
    parser = argparse.ArgumentParser(prog="demo")
    options = dict(methods=["penalty", "approxgrad"], default_method="penalty", epochs=100,
                   lower_steps=20)
    options.update(kwargs)
    ex.add_common_flags(parser, **options)
    return parser


def test_common_flags_defaults_and_out_dir():
    args = _parser().parse_args([])
    assert (args.seed, args.data_dir, args.out, args.epochs, args.lower_steps, args.method,
            args.quiet) == (0, None, None, 100, 20, "penalty", False)
    assert not hasattr(args, "resume")
    assert ex.resolve_out_dir(args, "poisoning.targeted") == Path("runs/poisoning.targeted")
    assert args.out == str(Path("runs/poisoning.targeted"))

    args = _parser(resume=True).parse_args(
        ["--method", "approxgrad", "--lower-steps", "5", "--epochs", "7", "--out", "o",
         "--data-dir", "d", "--seed", "3", "--quiet", "--resume"])
    assert (args.method, args.lower_steps, args.epochs, args.data_dir, args.seed, args.quiet,
            args.resume) == ("approxgrad", 5, 7, "d", 3, True, True)
    assert ex.resolve_out_dir(args, "x") == Path("o")


@pytest.mark.parametrize("argv, message", [
    (["--method", "rmd"], "invalid choice: 'rmd'"),
    (["--lower-steps", "0"], "expected a positive integer, got 0"),
    (["--epochs", "ten"], "expected a positive integer, got 'ten'"),
    (["--seed", "1.5"], "invalid int value"),
    (["--resume"], "unrecognized arguments: --resume"),
])
def test_bad_flags_exit_2_with_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_default_method_must_be_a_choice():
    with pytest.raises(ValueError, match="default_method"):
        _parser(default_method="gd")


# ------------------------------------------------------------------------ seeding


def _draws(seed):
    """Draws from every random source that seed_everything is meant to seed."""
    import keras
    import tensorflow as tf

    rng = ex.seed_everything(seed)
    return (random.random(), np.random.rand(3), tf.random.uniform([3]).numpy(),
            np.asarray(keras.initializers.GlorotUniform()((2, 2))),
            rng.normal(size=3))


def test_seed_everything_reproduces_python_numpy_tf_and_generator_draws():
    first, again, other = _draws(123), _draws(123), _draws(124)
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    # The returned generator is the same stream as default_rng(seed).
    np.testing.assert_array_equal(first[-1], np.random.default_rng(123).normal(size=3))


# ----------------------------------------------------------- progress and timing


def test_progress_quiet_prints_nothing_and_loud_is_a_keras_progbar(capsys):
    import keras

    bar = ex.progress(5, quiet=True)
    for i in range(5):
        bar.update(i + 1, values=[("loss", 1.0)])
    bar.add(1)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""

    bar = ex.progress(5, quiet=False, unit_name="epoch")
    assert isinstance(bar, keras.utils.Progbar)
    assert bar.target == 5 and bar.unit_name == "epoch"


def test_timer_measures_wall_seconds_and_freezes_on_exit():
    with ex.Timer() as timer:
        time.sleep(0.05)
        inside = timer.elapsed
    assert 0.04 <= inside < 2.0
    final = timer.elapsed
    assert final >= inside
    time.sleep(0.02)
    assert timer.elapsed == final
    assert ex.Timer().elapsed == 0.0


# ------------------------------------------------------------------------ run_main


def test_run_main_turns_experiment_error_into_exit_2(capsys):
    def main():
        raise ex.ExperimentError("mnist.npz not found in /nowhere")

    with pytest.raises(SystemExit) as exit_info:
        ex.run_main(main)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: mnist.npz not found in /nowhere\n"


def test_run_main_reports_a_damaged_checkpoint_and_keeps_it(tmp_path, capsys):
    import tensorflow as tf

    from penalty_tf.checkpoints import RunCheckpoint

    directory = tmp_path / "checkpoint"
    RunCheckpoint(directory, {"lr": 0.1}, w=tf.Variable(1.0)).save(epoch=3)
    sidecar = directory / "run.json"
    sidecar.write_text(sidecar.read_text()[:20])          # truncated, as by a full disk
    with pytest.raises(SystemExit) as exit_info:
        ex.run_main(lambda: ex.restore_checkpoint(RunCheckpoint(directory, {"lr": 0.1}, w=tf.Variable(2.0)),
                                                    "; drop --resume"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot resume") and "run.json" in err and err.strip().endswith("drop --resume")
    assert sidecar.read_text() and sorted(p.name for p in directory.iterdir())  # nothing deleted


def test_run_main_passes_return_status_and_other_errors():
    with pytest.raises(SystemExit) as exit_info:
        ex.run_main(lambda: 3)
    assert exit_info.value.code == 3
    assert ex.run_main(lambda: {"result": 1}) is None  # non-int results: normal return
    with pytest.raises(ZeroDivisionError):
        ex.run_main(lambda: 1 / 0)


def test_run_main_in_a_real_process_has_no_traceback(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        from penalty_tf.paper.experiment import ExperimentError, run_main

        def main():
            raise ExperimentError("bad --npoison: -1 (must be >= 1)")

        if __name__ == "__main__":
            run_main(main)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=REPO_ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: bad --npoison: -1 (must be >= 1)"
    assert "Traceback" not in proc.stderr
