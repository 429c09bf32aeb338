"""Several upper iterations per graph call on streamed data (`BilevelSolver.steps_from`,
``run(..., steps_per_execution=N)``, issue 16): the same iterates as one call per iteration,
for every solver, with XLA, across epoch ends and a dataset's smaller last batch; the NaN
stop; an exhausted iterator; bad values refused."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import penalty_tf as ptf
from penalty_tf.solvers.monitor import NonFiniteError

N, D, C = 40, 5, 3


class Reweighting:
    """Per-example weights u (sigmoid) of a Keras linear classifier v, f on validation data:
    a minibatch problem whose batches carry the example indices."""

    def __init__(self, method="penalty", **options):
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(N, D)).astype(np.float32)
        self.y = rng.integers(0, C, N).astype(np.int32)
        self.xv = rng.normal(size=(N, D)).astype(np.float32)
        self.yv = rng.integers(0, C, N).astype(np.int32)
        keras.utils.set_random_seed(3)
        self.model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(C)])
        self.u = tf.Variable(tf.zeros([N]), name="u")
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        problem = ptf.BilevelProblem(self.f, self.g, self.u, self.model)
        self.solver = ptf.solvers.make(method, problem, **options)

    def g(self, batch):
        i, x, y, _, _ = batch
        return tf.reduce_mean(tf.sigmoid(tf.gather(self.u, i)) * self.ce(y, self.model(x))) \
            + 1e-3 * tf.add_n([tf.reduce_sum(w ** 2) for w in self.model.trainable_variables])

    def f(self, batch):
        _, _, _, xv, yv = batch
        return tf.reduce_mean(self.ce(yv, self.model(xv)))

    def dataset(self, batch_size=12):
        """N = 40 at 12 per batch: 4 batches per epoch, the last one of 4."""
        arrays = (np.arange(N, dtype=np.int32), self.x, self.y, self.xv, self.yv)
        return tf.data.Dataset.from_tensor_slices(arrays).shuffle(N, seed=5).batch(batch_size)

    def values(self):
        return [self.u.numpy()] + [w.numpy() for w in self.model.trainable_variables]


def assert_same_iterates(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(a.values(), b.values()):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# one solver of each kind: second order with a schedule, linear system, unrolled, first-order
# value function, single loop, plain (the chunked loop is the base class's, shared by all)
@pytest.mark.parametrize("method", ["penalty", "approxgrad", "rmd", "bome", "soba", "gd"])
def test_run_in_calls_of_three_gives_the_iterates_of_one_call_per_iteration(method):
    one, many = Reweighting(method), Reweighting(method)
    h1 = one.solver.run(one.dataset(), epochs=3, lower_steps=2, verbose=0)
    h3 = many.solver.run(many.dataset(), epochs=3, lower_steps=2, verbose=0, steps_per_execution=3)
    assert one.solver.iteration == many.solver.iteration == 12      # 3 epochs x 4 batches
    assert_same_iterates(one, many)
    for key in h1.history:                                          # epoch means over every iteration
        np.testing.assert_allclose(h1.history[key], h3.history[key], rtol=1e-5, atol=1e-7, err_msg=key)
    start = Reweighting(method).values()
    first = 1 if method == "gd" else 0                              # GD: f does not use u
    assert all(np.abs(a - b).max() > 0 for a, b in zip(one.values()[first:], start[first:]))


def test_steps_from_equals_step_on_the_next_batches_and_reads_the_iterator_once_each():
    by_hand, in_graph = Reweighting(), Reweighting()
    batches = iter(by_hand.dataset().repeat())
    for _ in range(7):
        by_hand.solver.step(next(batches), lower_steps=3)
    iterator = iter(in_graph.dataset().repeat())
    out = in_graph.solver.steps_from(iterator, 7, lower_steps=3)
    assert int(out["done"]) == 7 and out["f"].shape == [7]
    assert in_graph.solver.iteration == 7
    assert_same_iterates(by_hand, in_graph)
    # the iterator stands at the 8th batch in both
    np.testing.assert_array_equal(next(batches)[0].numpy(), next(iterator)[0].numpy())
    assert in_graph.solver.tracing_count() <= 2          # no retrace for a new chunk size
    in_graph.solver.steps_from(iterator, 2, lower_steps=3)
    in_graph.solver.steps_from(iterator, 5, lower_steps=1)
    assert in_graph.solver.tracing_count() <= 2


def test_steps_from_with_xla_gives_the_graph_mode_iterates():
    graph, xla = Reweighting(), Reweighting(jit_compile=True)
    for p in (graph, xla):
        p.solver.steps_from(iter(p.dataset().repeat()), 6, lower_steps=2)
    assert_same_iterates(graph, xla, rtol=1e-5, atol=1e-6)


def test_an_exhausted_iterator_ends_the_call_early():
    p = Reweighting()
    out = p.solver.steps_from(iter(p.dataset()), 10, lower_steps=1)   # 4 batches only
    assert int(out["done"]) == 4 and out["g"].shape == [4]
    assert p.solver.iteration == 4


def test_a_nan_inside_a_call_stops_there_and_keeps_the_iterations_before_it():
    p = Reweighting()
    poisoned = np.zeros([12, D], np.float32)
    poisoned[0, 0] = np.nan

    def batches():
        for k in range(6):
            x = p.x[:12] if k != 3 else poisoned
            yield (np.arange(12, dtype=np.int32), x, p.y[:12], p.xv[:12], p.yv[:12])

    spec = tuple(tf.TensorSpec([12] + ([D] if j in (1, 3) else []), tf.int32 if j in (0, 2, 4) else tf.float32)
                 for j in range(5))
    iterator = iter(tf.data.Dataset.from_generator(batches, output_signature=spec))
    with pytest.raises(NonFiniteError, match="upper iteration 3"):
        p.solver.steps_from(iterator, 6, lower_steps=1)
    assert p.solver.iteration == 3


def test_run_stops_on_nan_inside_a_call_and_records_the_error():
    p = Reweighting()
    x = p.x.copy()
    x[30, 2] = np.nan          # lands in some batch of the first epoch
    arrays = (np.arange(N, dtype=np.int32), x, p.y, p.xv, p.yv)
    history = p.solver.run(tf.data.Dataset.from_tensor_slices(arrays).batch(8), epochs=2, verbose=0,
                           steps_per_execution=5)
    assert isinstance(history.error, NonFiniteError)
    assert p.solver.iteration == 3         # batches 0-2 of 8 points are finite, batch 3 holds point 30


@pytest.mark.parametrize("value, error, text", [
    (0, ValueError, "integer >= 1"), (2.5, ValueError, "integer >= 1"),
])
def test_bad_steps_per_execution_is_refused(value, error, text):
    p = Reweighting()
    with pytest.raises(error, match=text):
        p.solver.run(p.dataset(), epochs=1, verbose=0, steps_per_execution=value)


def test_a_python_iterable_of_batches_cannot_be_read_in_the_graph():
    p = Reweighting()
    with pytest.raises(TypeError, match="needs a tf.data.Dataset"):
        p.solver.run(list(p.dataset()), epochs=1, verbose=0, steps_per_execution=2)


def test_batch_hooks_come_once_per_call_with_the_last_iterations_logs():
    p = Reweighting()
    seen = []
    hook = keras.callbacks.LambdaCallback(on_train_batch_end=lambda i, logs: seen.append((i, logs["f"])))
    p.solver.run(p.dataset(), epochs=2, lower_steps=1, verbose=0, steps_per_execution=3, callbacks=[hook])
    assert [i for i, _ in seen] == [2, 3, 2, 3]      # 4 batches per epoch: calls of 3 and 1
