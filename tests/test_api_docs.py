"""docs/using_the_solver.md: its ```python blocks run, in order, as a new user would paste
them (on real MNIST), and give the results the page states."""

import re

import numpy as np
import pytest

from conftest import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "using_the_solver.md"


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_walk_through_runs_and_finds_the_noisy_labels(shared_data_dir, monkeypatch, capsys):
    monkeypatch.setenv("PENALTY_TF_DATA", str(shared_data_dir))
    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) >= 6
    namespace = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
    out = capsys.readouterr().out
    assert "noisy among the lowest weights" in out
    lowest = np.argsort(namespace["weights"])[:namespace["noisy"].sum()]
    assert namespace["noisy"][lowest].mean() > 0.7           # the page says 81 %
    assert namespace["test_acc"] > 0.81                       # the page says 0.871
    assert namespace["solver"].tracing_count() == 1
    assert namespace["history"].epoch == [0]                  # the checkpoint block ran one epoch
    assert namespace["ckpt"].manager.latest_checkpoint is not None


def test_the_page_links_the_api_reference_and_every_example():
    text = PAGE.read_text()
    assert (REPO_ROOT / "docs" / "api.md").is_file() and "(api.md)" in text
    for script in re.findall(r"examples/(\w+\.py)", text):
        assert (REPO_ROOT / "examples" / script).is_file(), script
