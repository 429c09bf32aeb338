"""The public API: every exported name resolves, is documented (docstring and docs/api.md)
and fully type-annotated; the reference's example computes what it says."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from conftest import REPO_ROOT

API_PAGE = (REPO_ROOT / "docs" / "api.md").read_text()
SOLVERS = [ptf.Penalty, ptf.ApproxGrad, ptf.RMD, ptf.GD]
METHODS = ["step", "steps", "run", "trace", "tracing_count", "state_variables", "variables",
           "checkpoint", "set_learning_rates", "reset", "reset_optimizers", "restart", "reset_lower"]


@pytest.mark.parametrize("name", ptf.__all__)
def test_every_exported_name_resolves_and_has_a_docstring(name):
    obj = getattr(ptf, name)
    if name != "__version__":
        assert inspect.getdoc(obj), name
        assert name in API_PAGE or name in {"solvers", "BilevelSolver"}, name


def public_callables():
    yield from (cls.__init__ for cls in SOLVERS)
    yield from (getattr(ptf.BilevelSolver, m) for m in METHODS)
    yield from (ptf.gradient_plus_hvp, ptf.hvp, ptf.mixed_vp, ptf.hvp_and_mixed_vp, ptf.tf1_adam,
                ptf.callbacks.run, ptf.callbacks.Checkpoint.__init__, ptf.callbacks.TensorBoard.__init__,
                ptf.callbacks.Checkpoint.restore, ptf.Penalty.gradients, ptf.Penalty.state,
                ptf.losses.softmax_cross_entropy, ptf.losses.sparse_softmax_cross_entropy)


@pytest.mark.parametrize("fn", list(public_callables()), ids=lambda f: f.__qualname__)
def test_public_callables_are_annotated_and_documented(fn):
    sig = inspect.signature(fn)
    missing = [p.name for p in sig.parameters.values()
               if p.name != "self" and p.annotation is inspect.Parameter.empty]
    assert not missing, f"{fn.__qualname__}: parameters without type hints: {missing}"
    if fn.__name__ != "__init__":
        assert sig.return_annotation is not inspect.Signature.empty, fn.__qualname__
    assert inspect.getdoc(fn) or fn.__name__ == "__init__", fn.__qualname__


@pytest.mark.parametrize("cls", SOLVERS, ids=lambda c: c.__name__)
def test_solver_docstrings_give_an_example_and_the_reference_its_signature(cls):
    assert "Example::" in inspect.getdoc(cls)
    for arg in inspect.signature(cls).parameters:
        assert arg in API_PAGE, (cls.__name__, arg)
    for method in METHODS:
        assert f"`{method}(" in API_PAGE or f"{method}()" in API_PAGE, method


def test_the_reference_hvp_example():
    v = tf.Variable([1.0, 2.0])
    (hq,) = ptf.hvp(lambda: tf.reduce_sum(v ** 3), [v], [tf.ones(2)])
    np.testing.assert_allclose(hq.numpy(), [6.0, 12.0])


def test_the_mixed_vp_example():
    u, v, q = tf.Variable([3.0]), tf.Variable([1.0, 2.0]), tf.constant([0.5, -1.0])
    (out,) = ptf.mixed_vp(lambda: tf.reduce_sum(u * v ** 2), [u], [v], [q])
    np.testing.assert_allclose(out.numpy(), [2 * (1.0 * 0.5 + 2.0 * -1.0)])
