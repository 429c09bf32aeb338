"""The TensorFlow side of importance learning: classifier training, prediction and the bilevel
problem with the original's importance slot (docs/original.md §3.0.1–3.0.3).

The bilevel problem: v = the classifier's weights, u = importance logits z of the training
points, a = (tanh z + 1)/2;

    f(u, v) = mean CE of the classifier on a validation minibatch,
    g(u, v) = sum_i a_i CE_i / sum_i a_i on the training minibatch.

The slot: the solver's u is ONE variable of length batch_size. Before each upper-level
iteration the minibatch's logits are assigned into it, after it they are read back into the
full-length NumPy array. The Adam moments of u (and Penalty's state) therefore belong to the
slot positions and persist while the slot is refilled with other points — exactly the
original's behaviour (§3.0.2), reproduced, not "fixed".

The classifier is always called with ``training=False`` (dropout inactive, §0.2).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from penalty_tf import losses
from penalty_tf.solvers import ApproxGrad, Penalty, PenaltySchedule, tf1_adam


def cross_entropy(model: keras.Model, x: tf.Tensor, y: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Per-example softmax cross-entropy of the model's logits (integer labels).

    ``training=False`` for the paper's CNNs (dropout inactive, as in the original); the WRN
    of the Ren et al. comparison passes True so that BatchNorm uses batch statistics."""
    logits = model(x, training=training)
    return losses.sparse_softmax_cross_entropy(y, logits)


def importance_weighted_loss(model: keras.Model, slot: tf.Variable, x: tf.Tensor,
                             y: tf.Tensor, training: bool = False) -> tf.Tensor:
    """``g = sum a_i CE_i / sum a_i`` with ``a = (tanh(slot) + 1) / 2``."""
    a = 0.5 * (tf.tanh(slot) + 1.0)
    ce = cross_entropy(model, x, y, training)
    return tf.reduce_sum(a * ce) / tf.reduce_sum(a)


class Classifier:
    """A Keras model with compiled prediction and plain supervised training (``train_simple``)."""

    def __init__(self, model: keras.Model, jit_compile: bool = False, training: bool = False):
        self.model = model
        self.jit_compile = jit_compile
        self.training = training
        shape = (None,) + tuple(model.input_shape[1:])
        self._predict = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1),
                                    input_signature=[tf.TensorSpec(shape, tf.float32)])

    def predict(self, x: np.ndarray, batch_size: int = 200) -> np.ndarray:
        """Predicted classes of all of ``x`` in minibatches."""
        out = [self._predict(tf.constant(x[i:i + batch_size], tf.float32)).numpy()
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def make_train_step(self, optimizer: keras.optimizers.Optimizer) -> Callable:
        """A compiled ``step(x, y) -> loss`` doing one optimizer step on the mean CE."""
        variables = self.model.trainable_variables
        optimizer.build(variables)
        model, training = self.model, self.training

        def step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(cross_entropy(model, x, y, training))
            grads = tape.gradient(loss, variables)
            optimizer.apply(grads, variables)
            return loss

        return tf.function(step, jit_compile=self.jit_compile)

    def train_simple(self, x: np.ndarray, y: np.ndarray, epochs: int, lr: float,
                     rng: np.random.Generator, *, batch_size: int = 200, rounding: str = "floor",
                     progress: Optional[Callable[[int], None]] = None) -> float:
        """The original's ``train_simple``: fresh TF1-style Adam(lr), per epoch a NumPy shuffle
        and minibatches in order (floor: partial last batch dropped; ceil: included).
        Returns the last minibatch loss."""
        from importance_learning.core import num_batches

        step = self.make_train_step(tf1_adam(lr))
        nb = num_batches(len(x), batch_size, rounding)
        loss = float("nan")
        for epoch in range(epochs):
            order = rng.permutation(len(x))
            for b in range(nb):
                idx = order[b * batch_size:(b + 1) * batch_size]
                loss = step(tf.constant(x[idx], tf.float32), tf.constant(y[idx], tf.int32))
            if progress is not None:
                progress(epoch + 1)
        loss = float(loss)
        if epochs > 0 and nb > 0 and not np.isfinite(loss):
            from penalty_tf.paper.experiment import ExperimentError
            raise ExperimentError(f"plain training diverged (loss {loss}); lower the learning rate")
        return loss


def build_solver(method: str, model: keras.Model, slot: tf.Variable, settings: dict[str, Any],
                 jit_compile: bool = False):
    """The bilevel solver over (u = slot, v = model weights). ``batch`` = (x_train, y_train,
    x_val, y_val) minibatch tensors."""
    training = bool(settings.get("bn_training", False))
    decay = float(settings.get("weight_decay") or 0.0)
    kernels = [w for w in model.trainable_variables if len(w.shape) > 1]

    def upper_loss(batch):
        _, _, xv, yv = batch
        return tf.reduce_mean(cross_entropy(model, xv, yv, training))

    def lower_loss(batch):
        xt, yt, _, _ = batch
        g = importance_weighted_loss(model, slot, xt, yt, training)
        if decay:
            g = g + 0.5 * decay * tf.add_n([tf.reduce_sum(tf.square(w)) for w in kernels])
        return g

    v = model.trainable_variables
    lower_opt = settings["lr_v"]
    if settings.get("lower_optimizer", "adam") == "sgd":
        lower_opt = keras.optimizers.SGD(settings["lr_v"], momentum=0.9)
    if method == "penalty":
        schedule = PenaltySchedule.single_group(
            rho0=settings["rho0"], lamb0=settings["lamb0"], eps0=settings["eps0"],
            nu0=settings["nu0"], c_rho=settings["c_rho"], c_lamb=settings["c_lamb"],
            c_eps=settings["c_eps"])
        return Penalty(upper_loss, lower_loss, [slot], v, upper_optimizer=settings["lr_u"],
                       lower_optimizer=lower_opt, schedule=schedule,
                       jit_compile=jit_compile)
    if method == "approxgrad":
        return ApproxGrad(upper_loss, lower_loss, [slot], v, upper_optimizer=settings["lr_u"],
                          lower_optimizer=lower_opt, linear_optimizer=settings["lr_p"],
                          sig=settings["sig"], jit_compile=jit_compile)
    raise ValueError(f"unknown bilevel method {method!r}")


def solver_variables(solver) -> list[tf.Variable]:
    """Every variable of the solver's state that a checkpoint must hold: optimizer moments,
    step counters and learning rates of all levels, Penalty's rho, lambda, eps, nu, and
    ApproxGrad's p (the linear level's variables)."""
    out: list[tf.Variable] = []
    for level in solver.levels():
        for opt in level.optimizers:
            out += list(opt.variables)
    if isinstance(solver, Penalty):
        out += [solver.rho, solver.lamb, solver.eps] + list(solver.nu)
    if isinstance(solver, ApproxGrad):
        out += list(solver.linear.variables)
    return out
