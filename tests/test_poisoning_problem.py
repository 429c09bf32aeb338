"""The untargeted 1 % poisoning benchmark problem (`benchmarks.poisoning_problem`, Spec
"poisoning") at a tiny budget: 50 Adam steps of clean training and of each retraining instead
of 10,001, two solver iterations."""

import dataclasses

import numpy as np

from benchmarks import compare, poisoning_problem as pz
from benchmarks.problems import _POISONING_RUN_FIELDS, SPECS
from penalty_tf import solvers
from penalty_tf.paper import defaults
from poisoning import untargeted
from poisoning.settings import Settings

SPEC = SPECS["poisoning"]


def test_the_spec_is_the_untargeted_attack_at_one_percent():
    assert pz.NPOISON == 10 == untargeted.TRAIN // 100
    assert not SPEC.higher_is_better and SPEC.target == 83.29       # Table 5, Penalty, 1 %
    assert (SPEC.iterations, SPEC.lower_steps) == (5000, 20)
    assert set(_POISONING_RUN_FIELDS) == {f.name for f in dataclasses.fields(Settings)} - {"solver"}
    for method in ("penalty", "approxgrad"):
        fields = {f.name for f in dataclasses.fields(solvers.config_class(method))}
        original = defaults.defaults("poisoning.untargeted", method)
        assert SPEC.settings(method, fields) == {k: v for k, v in original.items() if k in fields}
    for method in solvers.names():           # every setting is a field of the method's config
        fields = {f.name for f in dataclasses.fields(solvers.config_class(method))}
        assert set(SPEC.overrides.get(method, {})) <= fields


def test_two_steps_keep_the_poisons_in_the_box_and_the_quality_is_a_percentage(shared_data_dir):
    method = "penalty"
    instance = SPEC.build(0, str(shared_data_dir), retrain_steps=50)
    u = instance.problem.upper_vars[0]
    x_train = instance.check_batch["x_train"]
    assert u.shape == (pz.NPOISON, 784) and u.shape[0] == 0.01 * x_train.shape[0] == 10
    start = u.numpy()
    fields = {f.name for f in dataclasses.fields(solvers.config_class(method))}
    solver = solvers.make(method, instance.problem, **SPEC.settings(method, fields))
    for _ in range(2):
        out = solver.step(instance.next_batch(), SPEC.lower_steps)
        assert np.isfinite(float(out["f"]))
    after = u.numpy()
    assert 0.0 <= after.min() and after.max() <= 1.0 and not np.array_equal(after, start)
    w = instance.problem.lower_vars[0].numpy()
    first, second = instance.quality(), instance.quality()
    assert 0.0 <= first <= 100.0 and first == second                # a function of u alone
    np.testing.assert_array_equal(instance.problem.lower_vars[0].numpy(), w)   # measuring left W alone


def test_compare_runs_the_problem(shared_data_dir):
    run = compare.run_one(SPEC, "soba", 0, iterations=2, eval_every=2, check_every=0, sets={},
                          data_dir=str(shared_data_dir), options={"retrain_steps": 50})
    assert run["curve"]["iteration"] == [0, 2] and all(0.0 <= q <= 100.0 for q in run["curve"]["quality"])
    assert run["settings"] == {"lr_u": 1e-2, "lr_v": 1e-3, "lr_w": 1e-2}
