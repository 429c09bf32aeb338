"""Shared pytest configuration and fixtures.

Strict mode (``PENALTY_TF_STRICT=1``, set by ``.ci/run``): a test that needs the real data
fails instead of skipping when ``mnist.npz`` is missing, and the session fails when any test
was skipped for a reason that is not on `ALLOWED_SKIPS`. So CI cannot pass with the paper
tests silently gone.
"""

import os
import re
from pathlib import Path

# Quieten TensorFlow's C++ logging before any test imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
STRICT = os.environ.get("PENALTY_TF_STRICT") == "1"

#: Skips that strict mode accepts: (regular expression on the skip reason, why it is allowed).
ALLOWED_SKIPS = [
    # tests/test_benchmarks.py: the memory probe of RMD at large T needs several GB; on a
    # machine that has less free memory the probe reports an error instead of a number,
    # which says nothing about the code.
    (r"^machine short of memory", "RMD memory probe needs more free memory than the machine has"),
]


def data_dir() -> Path:
    """``$PENALTY_TF_DATA`` if set, else ``<repo>/../shared/data`` (resolved)."""
    env = os.environ.get("PENALTY_TF_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return path.expanduser().resolve()


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Directory holding the real datasets (at least ``mnist.npz``).

    Without ``mnist.npz`` there: skipped, or failed in strict mode (CI) with a message that
    names the missing file.
    """
    path = data_dir()
    wanted = path / "mnist.npz"
    if not wanted.is_file():
        message = (f"real data not available: {wanted} does not exist "
                   "(set PENALTY_TF_DATA to the directory holding mnist.npz)")
        if STRICT:
            pytest.fail(message + "; strict mode (PENALTY_TF_STRICT=1) does not skip it", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def random_stop(request):
    """``draw(low, high)``: a random kill point in [low, high) for the kill-and-resume tests.

    Each test draws from its own generator seeded by ``$PENALTY_TF_TEST_SEED`` if set (to
    replay a failure), else by a fresh random seed; the seed and the point are printed and
    attached to the test's report, so a failing draw can be replayed exactly.
    """
    import numpy as np

    seed = int(os.environ.get("PENALTY_TF_TEST_SEED") or np.random.SeedSequence().entropy % 2**32)

    def draw(low: int, high: int) -> int:
        point = int(np.random.default_rng(seed).integers(low, high))
        note = f"kill point {point} of [{low}, {high}) (replay: PENALTY_TF_TEST_SEED={seed})"
        print(note)
        request.node.user_properties.append(("random_stop", note))
        return point

    return draw


_skipped: list[tuple[str, str]] = []


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return re.sub(r"^Skipped: ", "", str(longrepr[2]))
    return str(longrepr)


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append((report.nodeid, _skip_reason(report)))


def unallowed_skips(skipped: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (test, reason) pairs whose reason matches no pattern of `ALLOWED_SKIPS`."""
    return [(node, reason) for node, reason in skipped
            if not any(re.search(pattern, reason) for pattern, _ in ALLOWED_SKIPS)]


def pytest_sessionfinish(session, exitstatus):
    if STRICT and unallowed_skips(_skipped) and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    bad = unallowed_skips(_skipped)
    if STRICT and bad:
        terminalreporter.section("skips not on the allow list (tests/conftest.py: ALLOWED_SKIPS)")
        for node, reason in bad:
            terminalreporter.write_line(f"{node}: {reason}")
        terminalreporter.write_line("strict mode (PENALTY_TF_STRICT=1): the session fails")


def build_fake_omniglot(root):
    """A tiny fake Omniglot (2 alphabets x 3 characters x 5 images) built by
    ``few_shot.omniglot_build`` into ``root/data``; returns that folder."""
    from few_shot import fake_data, omniglot_build

    fake_data.write_omniglot_tree(root / "omniglot_resized", alphabets=2, characters=3, images=5)
    omniglot_build.main(["--images", str(root / "omniglot_resized"), "--out", str(root / "data"), "--quiet"])
    return root / "data"
