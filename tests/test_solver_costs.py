"""`BilevelSolver.cost` is true: the passes one eager upper iteration of every registered
solver makes, counted on the tapes, equal what ``cost`` states, for several T (and K)."""

import inspect
import sys

import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from conftest import REPO_ROOT
from penalty_tf import solvers

RNG = np.random.default_rng(0)
_M = RNG.normal(size=(3, 3))
A = tf.constant(_M @ _M.T + 0.5 * np.eye(3), tf.float32)     # H_vv, SPD
B = tf.constant(RNG.normal(size=(3, 2)), tf.float32)
C = tf.constant([1.0, -2.0, 0.5])


class PassCounter:
    """Counts, while installed, the passes of the units of `BilevelSolver.cost`:

    * ``gradients``: values of f or g (outputs of the counted losses) that some
      ``tape.gradient`` call takes as a target (differentiated at least once);
    * ``hvps``: ``tape.gradient`` calls whose targets include an output of an earlier
      ``tape.gradient`` call (a reverse pass through a gradient);
    * ``forwards``: values of f or g that no ``tape.gradient`` call differentiates.

    Tensors are identified by ``ref()`` and kept alive meanwhile, so ids are not reused.
    """

    def __init__(self):
        self.loss_values = {}      # ref -> differentiated?
        self.gradient_outputs = set()
        self.hvps = 0

    def loss(self, fn):
        def counted(batch):
            value = tf.convert_to_tensor(fn(batch))
            self.loss_values.setdefault(value.ref(), False)
            return value
        return counted

    def install(self, monkeypatch):
        original = tf.GradientTape.gradient
        counter = self

        def gradient(tape, target, sources, *args, **kwargs):
            targets = [t for t in tf.nest.flatten(target) if isinstance(t, tf.Tensor)]
            for t in targets:
                if t.ref() in counter.loss_values:
                    counter.loss_values[t.ref()] = True
            if any(t.ref() in counter.gradient_outputs for t in targets):
                counter.hvps += 1
            result = original(tape, target, sources, *args, **kwargs)
            counter.gradient_outputs.update(r.ref() for r in tf.nest.flatten(result) if r is not None)
            return result

        monkeypatch.setattr(tf.GradientTape, "gradient", gradient)

    def counts(self):
        differentiated = sum(self.loss_values.values())
        return {"gradients": differentiated, "hvps": self.hvps,
                "forwards": len(self.loss_values) - differentiated}


def quadratic_solver(counter, name, groups=1, **options):
    """The solver ``name`` on g = 1/2 v^T A v - v^T B u, f = 1/2 |v - c|^2 + 0.05 |u|^2 (u in
    ``groups`` upper groups), with counted losses."""
    us = [tf.Variable(RNG.normal(size=2 // groups).astype(np.float32), name=f"u{i}") for i in range(groups)]
    v = tf.Variable(RNG.normal(size=3).astype(np.float32), name="v")

    def u_all():
        return tf.concat(us, 0)

    def g(batch):
        return 0.5 * tf.reduce_sum(v * tf.linalg.matvec(A, v)) - tf.reduce_sum(v * tf.linalg.matvec(B, u_all()))

    def f(batch):
        return 0.5 * tf.reduce_sum(tf.square(v - C)) + 0.05 * tf.reduce_sum(tf.square(u_all()))

    upper = [[u] for u in us] if groups > 1 else us
    problem = ptf.BilevelProblem(counter.loss(f), counter.loss(g), upper, [v])
    return solvers.make(name, problem, **options)


def count_names(solver):
    """The solver's counts besides T (e.g. ``linear_steps``), from `cost`'s signature."""
    return [p for p in inspect.signature(solver.cost).parameters if p != "lower_steps"]


def eager_passes(monkeypatch, name, lower_steps, counts=None, groups=1, **options):
    """(counted passes of ONE eager iteration, ``solver.cost(...)``) with the given counts
    (``None``: K = T for every count the solver has)."""
    counter = PassCounter()
    solver = quadratic_solver(counter, name, groups, **options)
    if counts is None:
        counts = {k: lower_steps for k in count_names(solver)}
    stated = solver.cost(lower_steps, **counts)
    counter.install(monkeypatch)
    # Eagerly: tf.while_loop runs its body once per step, so the counts scale with T and K.
    out = solver._typed_iteration(None, *solver._count_tensors(lower_steps, **counts))
    monkeypatch.undo()
    assert int(out["status"]) == 0, name
    return counter.counts(), stated


CASES = [(name, {}) for name in solvers.names()] + [
    ("approxgrad", {"extra_linear_step": True}), ("rmd", {"exact": True}),
    ("aid", {"warm_start": True}), ("aid", {"linear_solver": "neumann", "warm_start": True})]


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}{'-' + '-'.join(map(str, o.values())) if o else ''}"
                                                     for n, o in CASES])
def test_cost_equals_the_passes_of_one_eager_iteration(monkeypatch, name, options):
    probe = quadratic_solver(PassCounter(), name, **options)
    extra = count_names(probe)
    runs = [(1, None), (3, None)]                       # K = T
    if extra:
        runs += [(2, {k: 0 for k in extra}), (1, {k: 3 for k in extra})]
    for lower_steps, counts in runs:
        counted, stated = eager_passes(monkeypatch, name, lower_steps, counts, **options)
        assert counted == stated, (name, options, lower_steps, counts)
    assert set(stated) == {"gradients", "hvps", "forwards"}
    # Without counts, cost uses step's defaults (K = T).
    assert probe.cost(3) == probe.cost(3, **{k: 3 for k in extra})


def test_cost_counts_the_surrogate_pass_of_every_upper_group(monkeypatch):
    counted, stated = eager_passes(monkeypatch, "approxgrad", 2, groups=2)
    assert counted == stated
    one_group = quadratic_solver(PassCounter(), "approxgrad").cost(2)
    assert stated["gradients"] == one_group["gradients"] + 2 and stated["hvps"] == one_group["hvps"] + 1


def test_every_solver_states_its_cost_where_it_is_documented():
    api = (REPO_ROOT / "docs" / "api.md").read_text()
    assert "`cost(lower_steps" in api
    for name in solvers.names():
        cls = solvers.registry.entry(name).solver
        assert cls.cost is not ptf.BilevelSolver.cost, name
        assert "Cost per iteration" in sys.modules[cls.__module__].__doc__, name
    with pytest.raises(ValueError, match="lower_steps must be >= 1"):
        quadratic_solver(PassCounter(), "penalty").cost(0)


def test_the_speed_tool_divides_each_iteration_by_its_arithmetic():
    from importance_learning import speed
    from penalty_tf.paper.experiment import ExperimentError

    assert speed.method_names(["all"]) == solvers.names()
    with pytest.raises(ExperimentError, match="unknown method"):
        speed.method_names(["penalty", "newton"])
    out = speed.measure("mnist_softmax", lower_steps=2, batch_size=8, repeats=1, xla=False,
                        methods=("aid", "g-pbgd"))
    assert (out["aid_gradients"], out["aid_hvps"]) == (2 + 2 + 3, 2 + 1)      # T = K = 2
    assert out["aid_arithmetic_units"] == 10 and out["g-pbgd_arithmetic_units"] == 3
    for method in ("aid", "g-pbgd"):
        assert out[f"{method}_upper_iteration_over_arithmetic"] == pytest.approx(
            out[f"{method}_upper_iteration_s"] / (out[f"{method}_arithmetic_units"] * out["plain_step_s"]))
        assert out[f"{method}_upper_iteration_T1_over_arithmetic"] > 0
