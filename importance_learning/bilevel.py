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

from penalty_tf import losses, optimizers
from penalty_tf.problem import BilevelProblem


def cross_entropy(model: keras.Model, x: tf.Tensor, y: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Per-example softmax cross-entropy of the model's logits (integer labels).

    ``training=False`` for the paper's CNNs (dropout inactive, as in the original); the WRN
    of the Ren et al. comparison passes True so that BatchNorm uses batch statistics. The
    loss is computed in float32 whatever the compute dtype (a no-op cast in float32)."""
    logits = tf.cast(model(x, training=training), tf.float32)   # bfloat16 under mixed_bfloat16
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

    def mean_loss(self, batch: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        """The mean CE of the model on ``batch = (x, y)``."""
        x, y = batch
        return tf.reduce_mean(cross_entropy(self.model, x, y, self.training))

    def train_step(self, optimizer: keras.optimizers.Optimizer) -> Callable:
        """A compiled ``step((x, y)) -> loss``: one ``optimizer`` step on the mean CE."""
        return optimizers.make_train_step(self.mean_loss, self.model.trainable_variables, optimizer,
                                          jit_compile=self.jit_compile)

    def train_simple(self, x: np.ndarray, y: np.ndarray, epochs: int, lr: float,
                     rng: np.random.Generator, *, batch_size: int = 200, rounding: str = "floor",
                     progress: Optional[Callable[[int], None]] = None) -> float:
        """The original's ``train_simple``: fresh TF1-style Adam(lr), per epoch a NumPy shuffle
        and minibatches in order (floor: partial last batch dropped; ceil: included).
        Returns the last minibatch loss. An epoch's full minibatches run in one graph call
        (`penalty_tf.optimizers.make_epoch_loop`); the steps are the same."""
        from importance_learning.core import num_batches
        from penalty_tf.paper.experiment import ExperimentError

        nb = num_batches(len(x), batch_size, rounding)
        full = min(nb, len(x) // batch_size)          # batches of batch_size points
        optimizer = optimizers.tf1_adam(lr)
        loop = optimizers.make_epoch_loop(self.mean_loss, self.model.trainable_variables, optimizer,
                                          jit_compile=self.jit_compile)
        step = self.train_step(optimizer) if nb > full else None   # ceil: the partial last batch
        try:
            loss = float("nan")
            for k in range(1, epochs + 1):
                order = rng.permutation(len(x))
                if full:
                    idx = order[:full * batch_size]
                    loss = loop(tf.constant(x[idx].reshape((full, batch_size) + x.shape[1:]), tf.float32),
                                tf.constant(y[idx].reshape(full, batch_size), tf.int32))
                if step is not None:
                    idx = order[full * batch_size:]
                    loss = step((tf.constant(x[idx], tf.float32), tf.constant(y[idx], tf.int32)))
                if progress is not None:
                    progress(k)
            loss = float(loss)
            if (full or step is not None) and epochs and not np.isfinite(loss):
                raise optimizers.TrainingDiverged(f"plain training diverged (loss {loss}); lower the learning rate")
            return loss
        except optimizers.TrainingDiverged as error:
            raise ExperimentError(str(error)) from None


def importance_problem(model: keras.Model, slot: tf.Variable, *, training: bool = False,
                       weight_decay: float = 0.0) -> BilevelProblem:
    """The bilevel problem over (u = slot, v = model weights) on batches
    ``(x_train, y_train, x_val, y_val)``:

        f = mean CE on the validation minibatch,
        g = sum a_i CE_i / sum a_i on the training minibatch (+ wd/2 sum ||W||^2 over the
            kernels when ``weight_decay`` > 0).
    """
    kernels = [w for w in model.trainable_variables if len(w.shape) > 1]

    def upper_loss(batch):
        _, _, xv, yv = batch
        return tf.reduce_mean(cross_entropy(model, xv, yv, training))

    def lower_loss(batch):
        xt, yt, _, _ = batch
        g = importance_weighted_loss(model, slot, xt, yt, training)
        if weight_decay:
            g = g + 0.5 * weight_decay * tf.add_n([tf.reduce_sum(tf.square(w)) for w in kernels])
        return g

    return BilevelProblem(upper_loss, lower_loss, [slot], model.trainable_variables)


def lower_optimizer_option(name: str, lr_v: float) -> dict[str, Any]:
    """The ``solvers.make`` option for the lower optimizer ``name``: ``"adam"`` is the
    solver's own (TF1 Adam at the config's lr_v), ``"sgd"`` SGD with momentum 0.9 at lr_v,
    decayed by Penalty's schedule as its own optimizers are (`schedule_owned`)."""
    if name == "sgd":
        return {"lower_optimizer": optimizers.schedule_owned(keras.optimizers.SGD(lr_v, momentum=0.9))}
    return {}
