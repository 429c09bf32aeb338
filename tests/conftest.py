"""Shared pytest configuration and fixtures."""

import os
from pathlib import Path

# Quieten TensorFlow's C++ logging before any test imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Directory holding the real datasets (at least ``mnist.npz``).

    ``$PENALTY_TF_DATA`` if set, else ``<repo>/../shared/data``. Tests that use this
    fixture are skipped when the directory has no ``mnist.npz``.
    """
    env = os.environ.get("PENALTY_TF_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    path = path.expanduser().resolve()
    if not (path / "mnist.npz").is_file():
        pytest.skip(f"real data not available: no mnist.npz in {path} "
                    "(set PENALTY_TF_DATA to the directory holding it)")
    return path
