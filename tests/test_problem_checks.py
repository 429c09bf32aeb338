"""What a solver checks about the problem it is given: Keras models as variable lists,
variables in both levels, non-scalar losses, losses that are not callables."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf


def _regression():
    """u: per-example weights (4), v: a Dense(1) model on 4 points of 3 features."""
    keras.utils.set_random_seed(0)
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 3)), tf.float32)
    y = tf.constant([[1.0], [0.0], [2.0], [1.0]])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    u = tf.Variable(tf.zeros(4))

    def f(batch):
        return tf.reduce_mean(tf.square(model(x) - y))

    def g(batch):
        return tf.reduce_mean(tf.sigmoid(u)[:, None] * tf.square(model(x) - y))

    return model, u, f, g


def _run(lower_vars_of):
    model, u, f, g = _regression()
    solver = ptf.Penalty(f, g, upper_vars=u, lower_vars=lower_vars_of(model), upper_optimizer=0.1,
                         lower_optimizer=0.05)
    out = solver.step(None, lower_steps=3)
    return float(out["f"]), u.numpy(), [w.numpy() for w in model.trainable_variables], solver


def test_a_keras_model_stands_for_its_trainable_variables():
    f_vars, u_vars, w_vars, by_vars = _run(lambda m: m.trainable_variables)
    f_model, u_model, w_model, by_model = _run(lambda m: m)
    assert f_model == f_vars
    np.testing.assert_array_equal(u_model, u_vars)
    for a, b in zip(w_model, w_vars):
        np.testing.assert_array_equal(a, b)
    assert len(by_model.lower.groups) == 1 and len(by_model.lower.variables) == 2
    assert not np.allclose(u_model, 0.0)                     # the step did move u


def test_models_in_groups():
    encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    head = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    w = tf.Variable(1.0)
    from penalty_tf.solvers.variables import as_groups

    groups = as_groups([[encoder], [head, w]], "lower_vars")
    assert [len(g) for g in groups] == [2, 3]
    assert [len(g) for g in as_groups([encoder, head], "lower_vars")] == [4]


def test_a_model_without_weights_is_a_clear_error():
    unbuilt = keras.Sequential([keras.layers.Dense(1)])
    u = tf.Variable(1.0)
    with pytest.raises(ValueError, match="lower_vars: Sequential .* has no trainable variables.*build it"):
        ptf.Penalty(lambda b: u, lambda b: u, upper_vars=u, lower_vars=unbuilt)
    with pytest.raises(TypeError, match="upper_vars: expected a variable, a list of variables.*got int"):
        ptf.Penalty(lambda b: u, lambda b: u, upper_vars=3, lower_vars=[u])


def test_a_variable_in_both_levels_is_refused_by_name():
    model, u, f, g = _regression()
    shared = model.trainable_variables[0]
    problem = ptf.BilevelProblem(f, g, [u, shared], model.trainable_variables)
    for make in (lambda: ptf.Penalty(f, g, upper_vars=[u, shared], lower_vars=model),
                 lambda: ptf.solvers.make("approxgrad", problem)):
        with pytest.raises(ValueError, match=r"in both upper_vars and lower_vars: \['sequential.*/kernel:0'\]"):
            make()


@pytest.mark.parametrize("which", ["upper", "lower"])
@pytest.mark.parametrize("method", ["penalty", "approxgrad", "gd", "rmd"])
def test_a_per_example_loss_is_refused_at_the_first_step(which, method):
    model, u, f, g = _regression()
    x = tf.ones((4, 3))

    def per_example(batch):
        return tf.square(model(x))[:, 0]

    losses = {"upper": (per_example, g), "lower": (f, per_example)}[which]
    solver = ptf.solvers.make(method, ptf.BilevelProblem(*losses, [u], model.trainable_variables))
    name = {"upper": r"upper_loss \(f\)", "lower": r"lower_loss \(g\)"}[which]
    with pytest.raises(ValueError, match=f"{name} returned a tensor of shape \\(4,\\); it must return a scalar"):
        solver.step(None, lower_steps=1)


def test_a_loss_that_is_not_callable_is_refused():
    u, v = tf.Variable(1.0), tf.Variable(2.0)
    with pytest.raises(TypeError, match=r"upper_loss \(f\) must be a callable"):
        ptf.Penalty(tf.constant(1.0), lambda b: v * v, upper_vars=u, lower_vars=v)


# ------------------------------------------------------------------ setting ranges

@pytest.mark.parametrize("field,value,words", [
    ("rho0", -1.0, "rho0 must be > 0"), ("rho0", 0.0, "rho0 must be > 0"),
    ("c_rho", 0.5, "c_rho must be >= 1"), ("eps0", 0.0, "eps0 must be > 0"),
    ("lamb0", -1.0, "lamb0 must be >= 0"), ("c_lamb", 1.5, "c_lamb must be in (0, 1]"),
    ("c_eps", 0.0, "c_eps must be in (0, 1]"), ("lr_decay", 2.0, "lr_decay must be in (0, 1]"),
    ("lr_u", -1e-3, "lr_u must be >= 0"), ("lr_v", float("nan"), "lr_v must be a finite number"),
    ("nu0", float("inf"), "nu0 must be a finite number"),
])
def test_penalty_config_refuses_a_setting_outside_its_range(field, value, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        ptf.solvers.PenaltyConfig(**{field: value})


@pytest.mark.parametrize("name,fields,words", [
    ("approxgrad", {"lr_p": -1.0}, "lr_p must be >= 0"), ("approxgrad", {"sig": -1e-3}, "sig must be >= 0"),
    ("approxgrad", {"correction": "some"}, "correction must be 'indexed' or 'all'"),
    ("rmd", {"lr_v": -0.1}, "lr_v must be >= 0"), ("gd", {"lr_u": "fast"}, "lr_u must be a number"),
])
def test_every_solver_config_checks_its_ranges(name, fields, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        ptf.solvers.make_config(name, **fields)


def test_a_negative_learning_rate_given_to_a_solver_is_refused():
    u, v = tf.Variable(1.0), tf.Variable(0.0)
    with pytest.raises(ValueError, match=r"upper_vars: learning rate must be >= 0, got -0.1"):
        ptf.Penalty(lambda b: (u - v) ** 2, lambda b: (v - u) ** 2, u, v, upper_optimizer=-0.1)
    with pytest.raises(ValueError, match=r"lower_lr must be >= 0"):
        ptf.RMD(lambda b: (u - v) ** 2, lambda b: (v - u) ** 2, u, v, lower_lr=-1.0)
    with pytest.raises(TypeError, match="schedule must be a PenaltySchedule"):
        ptf.Penalty(lambda b: (u - v) ** 2, lambda b: (v - u) ** 2, u, v, schedule={"rho0": 1.0})


# ------------------------------------------------------------------ gradient paths

def test_an_upper_level_no_gradient_reaches_is_refused_at_the_first_step_naming_it():
    u, v = tf.Variable(1.0, name="unused_u"), tf.Variable(0.0, name="v")
    solver = ptf.Penalty(lambda b: (v - 2.0) ** 2, lambda b: v ** 2, u, v)
    with pytest.raises(ValueError, match=r"no gradient of f or g reaches the upper_vars \['unused_u:0'\]"):
        solver.step(None, 2)
    assert float(u.numpy()) == 1.0 and float(v.numpy()) == 0.0      # refused before any update


def test_a_lower_variable_g_does_not_use_is_refused_and_a_partly_unused_level_warned():
    u, v, w = tf.Variable(1.0, name="u"), tf.Variable(0.0, name="v"), tf.Variable(0.0, name="loose")
    # f uses w, g does not: the lower problem does not determine w.
    solver = ptf.ApproxGrad(lambda b: (w - 2.0) ** 2 + u ** 2, lambda b: (u - 1.0) ** 2, u, w)
    with pytest.raises(ValueError, match=r"no gradient of g reaches the lower_vars \['loose:0'\]"):
        solver.step(None, 1)
    solver = ptf.Penalty(lambda b: (v - 2.0) ** 2, lambda b: (v - u) ** 2, [u, w], v)
    with pytest.warns(UserWarning, match=r"upper_vars \['loose:0'\] \(1 of 2\), so they would never move"):
        solver.step(None, 1)


def test_gd_on_an_f_without_u_is_a_warning_naming_its_partial_gradient():
    u, v = tf.Variable(1.0, name="u"), tf.Variable(0.0, name="v")
    solver = ptf.GD(lambda b: (v - 2.0) ** 2, lambda b: (v - u) ** 2, u, v)
    with pytest.warns(UserWarning, match=r"GD's u-step is the partial gradient df/du"):
        solver.step(None, 1)
