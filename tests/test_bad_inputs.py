"""The bad-input catalogue (tests/bad_inputs.py): every case must get a clean answer — the
expected exit status (or exception type), a message naming the fix, no traceback, and no
file left or changed."""

import pytest

import bad_inputs
from conftest import data_dir


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    return bad_inputs.Context(tmp_path_factory.mktemp("bad_inputs"), data_dir())


@pytest.mark.parametrize("case", bad_inputs.SCRIPT_CASES, ids=lambda c: c.id)
def test_script_case(case, context, request):
    if case.needs_mnist:
        request.getfixturevalue("shared_data_dir")      # skips (or fails in strict mode) without MNIST
    outcome = bad_inputs.classify(case, context)
    assert outcome.kind == bad_inputs.CLEAN, f"{case.id} ({case.area}): {outcome.kind}: {outcome.detail}"


@pytest.mark.parametrize("case", bad_inputs.LIBRARY_CASES, ids=lambda c: c.id)
def test_library_case(case):
    outcome = bad_inputs.classify(case)
    assert outcome.kind == bad_inputs.CLEAN, f"{case.id} ({case.area}): {outcome.kind}: {outcome.detail}"


def test_the_catalogue_is_large_and_its_ids_unique():
    ids = [c.id for c in bad_inputs.all_cases()]
    assert len(bad_inputs.SCRIPT_CASES) >= 60 and len(set(ids)) == len(ids)
