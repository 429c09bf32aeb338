"""Strict mode of tests/conftest.py (what `.ci/run` uses): missing data and unlisted skips fail."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

NEEDS_DATA = """
def test_needs_data(shared_data_dir):
    assert (shared_data_dir / "mnist.npz").is_file()
"""

SKIPS = """
import pytest

def test_unlisted_skip():
    pytest.skip("{reason}")

def test_passes():
    assert 1 + 1 == 2
"""


def run_pytest(tmp_path, source, *, strict, data_dir):
    """Run pytest on one test file beside a copy of our conftest; return (status, output)."""
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_case.py").write_text(source)
    env = dict(os.environ, PENALTY_TF_DATA=str(data_dir), PENALTY_TF_STRICT="1" if strict else "0")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path)
    return done.returncode, done.stdout + done.stderr


def test_missing_data_fails_in_strict_mode_and_names_the_file(tmp_path):
    missing = tmp_path / "no_data_here"
    status, out = run_pytest(tmp_path, NEEDS_DATA, strict=True, data_dir=missing)
    assert status != 0, out
    assert str(missing / "mnist.npz") in out, out


def test_missing_data_skips_outside_strict_mode(tmp_path):
    status, out = run_pytest(tmp_path, NEEDS_DATA, strict=False, data_dir=tmp_path / "none")
    assert status == 0, out
    assert "1 skipped" in out, out


def test_present_data_passes_in_strict_mode(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "mnist.npz").write_bytes(b"")
    status, out = run_pytest(tmp_path, NEEDS_DATA, strict=True, data_dir=data)
    assert status == 0, out


@pytest.mark.parametrize("reason, strict, expected", [
    ("no GPU here", True, 1),                           # not on the allow list
    ("machine short of memory: probe failed", True, 0),  # on the allow list
    ("no GPU here", False, 0),                          # outside strict mode skips are fine
])
def test_skips_not_on_the_allow_list_fail_the_session(tmp_path, reason, strict, expected):
    status, out = run_pytest(tmp_path, SKIPS.format(reason=reason), strict=strict,
                             data_dir=tmp_path)
    assert status == expected, out
    assert ("not on the allow list" in out) == (expected == 1), out
