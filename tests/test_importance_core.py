"""Importance learning: noise injection, importance maths, accuracy formulas, separation
statistics, the models' parameter counts, the importance-slot semantics and the settings."""

import dataclasses

import numpy as np
import pytest

from importance_learning import core


def test_noise_corrupts_exactly_the_first_points_and_never_keeps_the_label():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1001)
    noisy, corrupt = core.inject_noise(labels, 0.25, np.random.default_rng(1))
    assert corrupt == 250                                   # int(0.25 * 1001)
    assert np.all(noisy[:corrupt] != labels[:corrupt])      # never the true label
    assert np.array_equal(noisy[corrupt:], labels[corrupt:])
    assert noisy.min() >= 0 and noisy.max() <= 9
    # the new label is uniform over the 9 other classes: offsets 1..9 all appear, ~equally
    offsets = (noisy[:corrupt] - labels[:corrupt]) % 10
    big, _ = core.inject_noise(np.zeros(90000, int), 1.0, np.random.default_rng(2))
    counts = np.bincount(big, minlength=10)
    assert counts[0] == 0 and np.all(np.abs(counts[1:] / 90000 - 1 / 9) < 0.006)
    assert set(offsets) == set(range(1, 10))
    assert core.inject_noise(labels, 0.5, np.random.default_rng(3))[1] == 500
    with pytest.raises(ValueError):
        core.inject_noise(labels, 1.5, rng)


def test_importance_initialisation_and_inverse():
    pred = np.array([1, 2, 3, 4])
    noisy = np.array([1, 0, 3, 0])
    z = core.initial_logits(pred, noisy, 0.4, 0.6)
    np.testing.assert_allclose(core.importance(z), [0.6, 0.4, 0.6, 0.4], rtol=1e-12)
    np.testing.assert_allclose(z[0], np.arctanh(0.2), rtol=1e-12)
    z = core.initial_logits(pred, noisy, 0.2, 0.8)
    np.testing.assert_allclose(core.importance(z), [0.8, 0.2, 0.8, 0.2], rtol=1e-12)


def test_renormalisation_forces_mean_one_half_and_clips():
    a = np.array([0.9, 0.8, 0.1, 0.05, 0.999999999])
    z = core.logits_of(a)
    out = core.importance(core.renormalise(z))
    expected = np.clip(0.5 * a / a.mean(), 1e-5, 0.99999)
    np.testing.assert_allclose(out, expected, rtol=1e-9)
    assert out.max() <= 0.99999 + 1e-12 and core.renormalise(z).dtype == np.float64
    # without clipping the mean is exactly 0.5
    a = np.array([0.3, 0.2, 0.25, 0.35])
    np.testing.assert_allclose(core.importance(core.renormalise(core.logits_of(a))).mean(), 0.5, rtol=1e-12)


def test_original_accuracy_formulas():
    labels = np.zeros(450, int)
    pred = np.zeros(450, int)
    pred[:10] = 1                     # 10 wrong among the first 400, all right afterwards
    # floor: 2 batches of 200 evaluated, the last 50 skipped: 390 / 400
    assert core.original_accuracy(pred, labels, 200, "floor") == pytest.approx(390 / 400)
    # ceil: all 450 evaluated but divided by 3 * 200 (under-estimate)
    assert core.original_accuracy(pred, labels, 200, "ceil") == pytest.approx(440 / 600)
    assert core.exact_accuracy(pred, labels) == pytest.approx(440 / 450)
    # SVHN test set: 26032 points, ceil denominator 26200 -> x 0.99359 of the exact accuracy
    n = 26032
    assert core.original_accuracy(np.zeros(n), np.zeros(n), 200, "ceil") == pytest.approx(n / 26200)
    assert core.num_batches(59000, 200, "floor") == 295 and core.num_batches(72257, 200, "ceil") == 362


def test_separation_statistics():
    a = np.array([0.9, 0.2, 0.6, 0.05, 0.7, 0.3])   # points 0, 1 corrupted
    s = core.separation(a, corrupt=2)
    assert s["mean_importance_corrupted"] == pytest.approx(0.55)
    assert s["mean_importance_clean"] == pytest.approx(0.4125)
    assert s["selected"] == 3                        # 0.9, 0.6, 0.7
    assert s["precision_clean"] == pytest.approx(2 / 3)
    assert s["recall_clean"] == pytest.approx(2 / 4)
    assert s["fraction_above_0.1"] == pytest.approx(5 / 6)


def test_model_parameter_counts_and_logits():
    from penalty_tf.models import classifiers

    for name, count in classifiers.PARAMETER_COUNTS.items():
        model = classifiers.build(name)
        assert model.count_params() == count, name
    wrn = classifiers.wide_resnet(10, 1)
    assert wrn.count_params() == 78_330
    assert classifiers.wide_resnet(28, 10).count_params() == 36_497_146   # WRN-28-10
    # logits, not probabilities: no softmax at the end; dropout inactive with training=False
    model = classifiers.build("mnist_cnn")
    x = np.random.default_rng(0).random((3, 28, 28, 1), np.float32) * 50
    out = model(x, training=False).numpy()
    assert not np.allclose(out.sum(axis=1), 1.0)
    np.testing.assert_array_equal(out, model(x, training=False).numpy())
    with pytest.raises(ValueError):
        classifiers.wide_resnet(12, 1)


def test_importance_slot_semantics():
    """One length-batch u variable whose Adam moments persist while it is refilled."""
    import tensorflow as tf

    from importance_learning.bilevel import importance_problem
    from penalty_tf import solvers
    from penalty_tf.models import classifiers

    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = classifiers.build("mnist_softmax")
    bs = 8
    slot = tf.Variable(tf.zeros(bs))
    config = solvers.PenaltyConfig(lr_u=3.0, lr_v=1e-2, rho0=1e-2, lamb0=1e-2, eps0=1e-2, nu0=1e-4)
    solver = solvers.make("penalty", importance_problem(model, slot), config)
    assert solver.upper.variables[0].shape == (bs,)           # not one entry per data point
    n = 32
    x = rng.random((n, 784), np.float32)
    y = rng.integers(0, 10, n)
    xv, yv = rng.random((bs, 784), np.float32), rng.integers(0, 10, bs)
    z = rng.normal(size=n)
    deltas = []
    for idx in (np.arange(0, 8), np.arange(8, 16)):
        before = z.copy()
        slot.assign(z[idx].astype(np.float32))
        solver.step((tf.constant(x[idx]), tf.constant(y[idx]), tf.constant(xv), tf.constant(yv)),
                    lower_steps=2)
        z[idx] = slot.numpy()
        others = np.setdiff1d(np.arange(n), idx)
        np.testing.assert_array_equal(z[others], before[others])   # only the slot's points move
        deltas.append(z[idx] - before[idx])
    # First Adam step: |delta| = lr_u for every slot (m/sqrt(v) = sign(grad)); the second step,
    # on OTHER points, uses the moments left by the first: no longer +-lr_u everywhere.
    np.testing.assert_allclose(np.abs(deltas[0]), 3.0, rtol=1e-3)
    assert np.max(np.abs(np.abs(deltas[1]) - 3.0)) > 0.05
    assert int(solver.upper.optimizers[0].iterations.numpy()) == 2   # one shared optimizer


def test_settings_are_the_originals_per_method_and_the_resume_key_skips_run_control():
    from importance_learning import mnist
    from importance_learning.driver import build_parser
    from importance_learning.settings import from_args
    from penalty_tf.checkpoints import resume_key
    from penalty_tf.solvers import ApproxGradConfig, PenaltyConfig

    def settings(*flags):
        return from_args(mnist.SPEC.settings, mnist.SPEC.experiment, build_parser(mnist.SPEC).parse_args(flags))

    s = settings("--method", "approxgrad", "--lr-u", "2", "--epochs", "3")
    assert isinstance(s.solver, ApproxGradConfig) and s.solver.lr_u == 2.0 and s.solver.lr_v == 1e-6
    assert s.first_epoch == 1 and s.linear_steps == s.lower_steps == 20 and s.epochs == 3
    key = resume_key(s)
    assert not {"epochs", "quiet", "out", "data_dir", "xla", "resume", "stop_after"} & set(key)
    assert key["solver"] == {"type": "ApproxGradConfig", **dataclasses.asdict(s.solver)}
    assert s.flat()["lr_p"] == 1e-5 and s.flat()["method"] == "approxgrad"
    baseline = settings("--method", "oracle")      # the baselines train with the Penalty row
    assert isinstance(baseline.solver, PenaltyConfig) and baseline.solver.nu0 == 1e-6
    assert baseline.pretrain_lr == 1e-4 and baseline.epochs == 101


@pytest.mark.parametrize("rounding, n", [("floor", 130), ("ceil", 130), ("floor", 20)])
def test_train_simple_epochs_in_one_call_equal_one_call_per_minibatch(rounding, n):
    """train_simple runs an epoch's full minibatches in one graph call (make_epoch_loop):
    the weights equal those of the original's loop, one make_train_step call per minibatch
    on the same NumPy shuffles (rounding ceil adds the partial last batch; 20 points at
    batch 32 with floor: no batch, nothing trained, no divergence error)."""
    import keras
    import tensorflow as tf

    from importance_learning.bilevel import Classifier
    from penalty_tf import optimizers

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    y = rng.integers(0, 4, n).astype(np.int32)

    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)])

    fast = Classifier(model())
    loss = fast.train_simple(x, y, 3, 1e-2, np.random.default_rng(7), batch_size=32, rounding=rounding)
    slow = Classifier(model())
    step = slow.train_step(optimizers.tf1_adam(1e-2))
    order_rng = np.random.default_rng(7)
    nb = core.num_batches(n, 32, rounding)
    for _ in range(3):
        order = order_rng.permutation(n)
        for b in range(nb):
            idx = order[b * 32:(b + 1) * 32]
            last = step((tf.constant(x[idx]), tf.constant(y[idx])))
    for a, b in zip(fast.model.get_weights(), slow.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    if nb:
        assert loss == pytest.approx(float(last), rel=1e-6)
        assert np.abs(fast.model.get_weights()[0] - model().get_weights()[0]).max() > 1e-3
    else:
        assert np.isnan(loss)
