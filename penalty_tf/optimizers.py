"""Every optimizer the solvers and the experiments use, in one place.

* `tf1_adam`: Keras 3 Adam with TF1's defaults (the original used ``tf.train.AdamOptimizer``);
* `adam_steps`: the same Adam as a pure function of tensors, for loops that are themselves
  differentiated or run inside one compiled call (few-shot meta-test classifiers);
* `TF1RMSProp`: TF1's ``tf.train.RMSPropOptimizer`` (the clean-label attack's training);
* `schedule_owned`: let a solver's schedule decay a user's optimizer as its own;
* `reset_optimizer_state`: zero a Keras optimizer's moments and step counter;
* `make_train_step` and `fit`: plain supervised training of variables on a loss (the
  original's ``train_simple``), per minibatch or full batch in compiled chunks.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

#: Adam epsilon of TF1's ``tf.train.AdamOptimizer``, which the original code used (Keras 3
#: defaults to 1e-7). Keras 3 Adam otherwise performs exactly TF1's update
#: ``w <- w - lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(s) + eps)``.
TF1_ADAM_EPSILON = 1e-8


def tf1_adam(learning_rate: float) -> keras.optimizers.Adam:
    """Keras 3 Adam with TF1's defaults (beta1 0.9, beta2 0.999, epsilon 1e-8).

    ``m <- b1 m + (1-b1) d``, ``s <- b2 s + (1-b2) d^2``,
    ``w <- w - lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(s) + 1e-8)``. A float learning rate given
    to a solver becomes this optimizer. Example: ``Penalty(..., upper_optimizer=tf1_adam(3.0))``.
    """
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.9, beta_2=0.999,
                                 epsilon=TF1_ADAM_EPSILON)


#: Attribute set by `schedule_owned` on an optimizer instance.
SCHEDULE_OWNED = "_penalty_tf_schedule_owned"


def schedule_owned(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Mark a Keras optimizer that a solver should treat as its own: Penalty's schedule then
    multiplies its learning rate by ``lr_decay`` whenever the tolerance test passes, as it
    does for the optimizers the solver makes from a float learning rate. Without the mark a
    user's optimizer is never changed by the solver. Returns ``optimizer``.

    Example: ``Penalty(..., lower_optimizer=schedule_owned(keras.optimizers.SGD(0.1, momentum=0.9)))``.
    """
    setattr(optimizer, SCHEDULE_OWNED, True)
    return optimizer


def reset_optimizer_state(optimizer: keras.optimizers.Optimizer) -> None:
    """Zero the step counter and slot variables (moments) of a built optimizer; keep its lr."""
    for var in optimizer.variables:
        if var is not optimizer.learning_rate:
            var.assign(tf.zeros(var.shape, var.dtype))


def adam_steps(loss_fn: Callable[..., tf.Tensor], params: Sequence[tf.Tensor], steps: int | tf.Tensor,
               lr: float, beta1: float = 0.9, beta2: float = 0.999,
               eps: float = TF1_ADAM_EPSILON) -> list[tf.Tensor]:
    """``steps`` TF1-Adam steps on the tensors ``params`` from zero moments, as one while loop:

    ``m <- b1 m + (1-b1) d``, ``s <- b2 s + (1-b2) d^2``,
    ``w <- w - lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(s) + eps)`` with ``d = grad loss_fn(*w)``.

    Functional (no variables), so it runs inside any `tf.function` and for a batch of
    independent problems at once. Returns the final params.
    """
    def body(t, params, m, s):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = loss_fn(*params)
        grads = tape.gradient(loss, params)
        t1 = tf.cast(t + 1, tf.float32)
        lr_t = lr * tf.sqrt(1.0 - beta2 ** t1) / (1.0 - beta1 ** t1)
        m = [beta1 * a + (1.0 - beta1) * g for a, g in zip(m, grads)]
        s = [beta2 * a + (1.0 - beta2) * g * g for a, g in zip(s, grads)]
        params = [w - lr_t * a / (tf.sqrt(b) + eps) for w, a, b in zip(params, m, s)]
        return t + 1, params, m, s

    zeros = [tf.zeros_like(p) for p in params]
    _, params, _, _ = tf.while_loop(lambda t, *_: t < steps, body,
                                    (tf.constant(0), list(params), zeros, list(zeros)),
                                    maximum_iterations=steps)
    return params


class TF1RMSProp:
    """TF1's ``tf.train.RMSPropOptimizer`` (decay 0.9, momentum 0, epsilon 1e-10, not
    centered), which the original's clean-label ``train_simple`` used. Unlike Keras'
    RMSprop, the mean-square accumulator starts at ONE and epsilon sits INSIDE the root::

        ms <- decay * ms + (1 - decay) * grad^2
        w  <- w - lr * grad / sqrt(ms + epsilon)
    """

    def __init__(self, variables: Sequence[tf.Variable], learning_rate: float = 1e-3,
                 decay: float = 0.9, epsilon: float = 1e-10):
        self.variables = list(variables)
        self.learning_rate = float(learning_rate)
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.ms = [tf.Variable(tf.ones(v.shape, v.dtype), trainable=False, name="rms")
                   for v in self.variables]

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        """One step on every variable (graph- or eager-safe)."""
        for var, ms, grad in zip(self.variables, self.ms, grads):
            new_ms = self.decay * ms + (1.0 - self.decay) * tf.square(grad)
            ms.assign(new_ms)
            var.assign_sub(self.learning_rate * grad / tf.sqrt(new_ms + self.epsilon))

    def reset(self) -> None:
        """Accumulators back to one (the original re-ran the optimizer's initialisers)."""
        for ms in self.ms:
            ms.assign(tf.ones(ms.shape, ms.dtype))


class TrainingDiverged(FloatingPointError):
    """Plain training (`fit`) ended with a NaN or infinite loss."""


def _apply(optimizer: Any, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
    if isinstance(optimizer, TF1RMSProp):
        optimizer.apply(grads)
    else:
        optimizer.apply(grads, variables)


def make_train_step(loss_fn: Callable[[Any], tf.Tensor], variables: Sequence[tf.Variable],
                    optimizer: Any, *, jit_compile: bool = False) -> Callable[[Any], tf.Tensor]:
    """A compiled ``step(batch) -> loss``: one optimizer step on ``loss_fn(batch)`` w.r.t.
    ``variables``, ``w <- opt(w, grad_w loss)``. ``optimizer``: a Keras optimizer (built
    here, eagerly) or a `TF1RMSProp` over the same variables."""
    variables = list(variables)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer.build(variables)

    def step(batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(batch)
        _apply(optimizer, tape.gradient(loss, variables), variables)
        return loss

    return tf.function(step, jit_compile=jit_compile)


def make_train_loop(loss_fn: Callable[[Any], tf.Tensor], variables: Sequence[tf.Variable],
                    optimizer: Any, *, jit_compile: bool = False) -> Callable[[Any, tf.Tensor], tf.Tensor]:
    """A compiled ``loop(batch, n) -> last loss``: ``n`` optimizer steps on the same (full)
    batch in one `tf.while_loop` (one host call for many steps)."""
    variables = list(variables)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer.build(variables)

    def loop(batch, n):
        def body(i, _):
            with tf.GradientTape() as tape:
                loss = loss_fn(batch)
            _apply(optimizer, tape.gradient(loss, variables), variables)
            return i + 1, tf.cast(loss, tf.float32)

        _, last = tf.while_loop(lambda i, _: i < n, body,
                                (tf.constant(0), tf.constant(np.nan, tf.float32)))
        return last

    return tf.function(loop, autograph=False, jit_compile=jit_compile)


def make_epoch_loop(loss_fn: Callable[[Any], tf.Tensor], variables: Sequence[tf.Variable],
                    optimizer: Any, *, jit_compile: bool = False) -> Callable[..., tf.Tensor]:
    """A compiled ``loop(*stacked) -> last loss``: one optimizer step on ``loss_fn(batch_i)``
    for every batch i of ``stacked`` (tensors of shape [n, batch, ...], batch i =
    ``tuple(t[i] for t in stacked)``), in order, in one `tf.while_loop`: an epoch of
    minibatches in one host call. The steps are those of `make_train_step` on the same
    batches (tests/test_importance_core.py checks the weights are equal)."""
    variables = list(variables)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer.build(variables)

    def loop(*stacked):
        def body(i, _):
            batch = tuple(t[i] for t in stacked)
            with tf.GradientTape() as tape:
                loss = loss_fn(batch)
            _apply(optimizer, tape.gradient(loss, variables), variables)
            return i + 1, tf.cast(loss, tf.float32)

        n = tf.shape(stacked[0])[0]
        _, last = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.constant(np.nan, tf.float32)))
        return last

    return tf.function(loop, autograph=False, jit_compile=jit_compile)


def fit(step: Callable[[Any], tf.Tensor], batches: Iterable[Any],
        progress: Optional[Callable[[int], None]] = None) -> float:
    """Run ``step`` (from `make_train_step`) on every batch; ``progress(k)`` after each
    item of ``batches`` that is itself an iterable of batches (an epoch), when batches are
    grouped so. Returns the last loss; raises `TrainingDiverged` if it is not finite."""
    loss = None
    for k, epoch in enumerate(batches, start=1):
        for batch in epoch:
            loss = step(batch)
        if progress is not None:
            progress(k)
    if loss is None:
        return float("nan")
    loss = float(loss)
    if not np.isfinite(loss):
        raise TrainingDiverged(f"plain training diverged (loss {loss}); lower the learning rate")
    return loss
