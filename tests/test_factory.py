"""BilevelProblem, the solver configs and `solvers.make`: the factory builds exactly the
solver the classic constructors build; trackable solvers checkpoint their whole state."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf import solvers


def quadratic():
    """f = ||v - 1||^2 + 0.1 ||u||^2, g = ||v - A u||^2 + 0.5 ||v||^2 (fresh variables)."""
    u = tf.Variable([0.3, -0.2], name="u")
    v = tf.Variable([0.5, 0.1, -0.4], name="v")
    a = tf.constant([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.0]])

    def f(batch=None):
        return tf.reduce_sum((v - 1.0) ** 2) + 0.1 * tf.reduce_sum(u ** 2)

    def g(batch=None):
        return tf.reduce_sum((v - tf.linalg.matvec(a, u)) ** 2) + 0.5 * tf.reduce_sum(v ** 2)

    return ptf.BilevelProblem(f, g, [u], [v]), u, v


CASES = {
    "penalty": (ptf.PenaltyConfig(lr_u=0.05, lr_v=0.02, rho0=2.0, lamb0=0.5, nu0=0.01, eps0=10.0),
                lambda p, c: ptf.Penalty(p.upper_loss, p.lower_loss, p.upper_vars, p.lower_vars,
                                         upper_optimizer=c.lr_u, lower_optimizer=c.lr_v,
                                         schedule=c.schedule())),
    "approxgrad": (ptf.ApproxGradConfig(lr_u=0.05, lr_v=0.02, lr_p=0.03, sig=1e-2, extra_linear_step=True),
                   lambda p, c: ptf.ApproxGrad(p.upper_loss, p.lower_loss, p.upper_vars, p.lower_vars,
                                               upper_optimizer=c.lr_u, lower_optimizer=c.lr_v,
                                               linear_optimizer=c.lr_p, sig=c.sig, extra_linear_step=True)),
    "gd": (ptf.GDConfig(lr_u=0.05, lr_v=0.02),
           lambda p, c: ptf.GD(p.upper_loss, p.lower_loss, p.upper_vars, p.lower_vars,
                               upper_optimizer=c.lr_u, lower_optimizer=c.lr_v)),
    "rmd": (ptf.RMDConfig(lr_u=0.05, lr_v=0.02, exact=True),
            lambda p, c: ptf.RMD(p.upper_loss, p.lower_loss, p.upper_vars, p.lower_vars,
                                 upper_lr=c.lr_u, lower_lr=c.lr_v, exact=True)),
}


def run(solver, n=4):
    outs = [solver.step(None, lower_steps=3) for _ in range(n)]
    return [{k: float(v) for k, v in o.items()} for o in outs]


@pytest.mark.parametrize("name", sorted(CASES))
def test_make_builds_the_same_solver_as_the_constructor(name):
    config, build = CASES[name]
    p1, u1, v1 = quadratic()
    p2, u2, v2 = quadratic()
    made = ptf.make(name, p1, config)
    classic = build(p2, config)
    assert type(made) is type(classic) and made.problem == p1
    assert run(made) == run(classic)
    np.testing.assert_array_equal(u1.numpy(), u2.numpy())
    np.testing.assert_array_equal(v1.numpy(), v2.numpy())
    assert not np.allclose(u1.numpy(), [0.3, -0.2])        # it did move


def test_make_overrides_config_fields_and_passes_other_options():
    problem, _, _ = quadratic()
    sgd = tf.keras.optimizers.SGD(0.5)
    solver = ptf.make("penalty", problem, ptf.PenaltyConfig(rho0=3.0), lamb0=0.25, lower_optimizer=sgd)
    assert float(solver.rho) == 3.0 and float(solver.lamb) == 0.25
    assert solver.lower.optimizers[0] is sgd
    assert solver.learning_rates()["upper"] == pytest.approx([1e-3])


def test_make_rejects_unknown_names_and_wrong_configs():
    problem, _, _ = quadratic()
    with pytest.raises(ValueError, match="unknown solver 'pen'; choose from .*approxgrad, .*gd, penalty, rmd"):
        ptf.make("pen", problem)
    with pytest.raises(TypeError, match="penalty: expected a PenaltyConfig, got GDConfig"):
        ptf.make("penalty", problem, ptf.GDConfig())
    with pytest.raises(TypeError, match="has no field"):
        solvers.make_config("gd", rho0=1.0)
    assert solvers.config_class("approxgrad") is ptf.ApproxGradConfig


def test_penalty_config_is_its_schedule():
    config = ptf.PenaltyConfig(lr_u=3.0, rho0=5.0)
    assert isinstance(config, ptf.PenaltySchedule)
    assert config.schedule() == ptf.PenaltySchedule(rho0=5.0)
    assert {f.name for f in dataclasses.fields(config)} == \
        {f.name for f in dataclasses.fields(ptf.PenaltySchedule)} | {"lr_u", "lr_v"}


def test_lower_step_batch_reaches_gd_and_rmd():
    """GD and RMD run their v-only steps on ``lower_step_batch(batch)``: a hook that scales
    the batch changes the result exactly as a scaled batch in the lower loss would."""
    for name in ("gd", "rmd"):
        results = []
        for hook in (None, lambda b: 2.0 * b):
            v = tf.Variable([1.0, -1.0])
            u = tf.Variable([0.5])
            problem = ptf.BilevelProblem(lambda b: tf.reduce_sum(v ** 2) + tf.reduce_sum(u ** 2),
                                         lambda b: tf.reduce_sum(b * (v - u) ** 2), [u], [v],
                                         lower_step_batch=hook)
            options = {"lower_optimizer": tf.keras.optimizers.SGD(0.1)} if name == "gd" else {}
            solver = ptf.make(name, problem, lr_u=0.1, lr_v=0.1, **options)   # SGD: Adam is scale-free
            solver.step(tf.constant(1.0), lower_steps=2)
            results.append(v.numpy().copy())
        assert not np.allclose(results[0], results[1]), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_trackable_solver_restores_its_whole_state(name, tmp_path):
    """tf.train.Checkpoint(solver=...) alone: save after 2 iterations, run 3 more, restore,
    run the 3 again: the same outputs bitwise, and the counters come back."""
    config, _ = CASES[name]
    problem, u, v = quadratic()
    solver = ptf.make(name, problem, config)
    run(solver, 2)
    path = tf.train.Checkpoint(solver=solver).write(str(tmp_path / "ckpt"))
    first = run(solver, 3)
    assert solver.iteration == 5
    tf.train.Checkpoint(solver=solver).read(path).assert_consumed()
    assert solver.iteration == 2
    assert run(solver, 3) == first


def test_counters_are_variables_counted_inside_the_graph():
    problem, _, _ = quadratic()
    solver = ptf.make("gd", problem)
    solver.steps(None, iterations=7, lower_steps=1)
    assert solver.iteration == 7 and int(solver.iteration_counter.numpy()) == 7
    solver.iteration = 2
    solver.step(None, lower_steps=1)
    assert solver.iteration == 3
