"""Validation metrics for the bilevel training loop: `Validation`, which
`penalty_tf.training.run` builds from ``validation_data=``, ``metrics=`` and
``validation_model=`` (also importable as `penalty_tf.callbacks.Validation`)."""

from __future__ import annotations

from typing import Any, Mapping

import keras
import tensorflow as tf


class Validation(keras.callbacks.Callback):
    """Evaluate ``metrics`` on validation data after every ``every`` epochs (and the last)
    into the epoch logs as ``<prefix><name>`` (``val_accuracy`` ...), which History,
    TensorBoard, CSVLogger and EarlyStopping listed after it see. `penalty_tf.training.run`
    builds it from ``validation_data=``, ``metrics=`` and ``validation_model=``.

    Args:
      data: ``(x, y)`` arrays (batched here by ``batch_size``) or a `tf.data.Dataset` of
        ``(x, y)`` batches; with only callable metrics, any batches they accept.
      metrics: Keras metrics (instances, or names such as ``"accuracy"``; they compare
        ``model(x, training=False)`` with y and need ``model``), or a dict name ->
        ``batch -> scalar`` callable (its mean over batches, weighted by batch size).
      model: the Keras model whose predictions Keras metrics see.
      every, prefix, batch_size: as named.
    """

    def __init__(self, data: Any, metrics: Any, model: Any = None, every: int = 1, prefix: str = "val_",
                 batch_size: int = 256):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.data = _validation_batches(data, batch_size)
        self.functions = dict(metrics) if isinstance(metrics, Mapping) else {}
        self.metrics = [] if isinstance(metrics, Mapping) else [_keras_metric(m) for m in metrics]
        if not self.metrics and not self.functions:
            raise ValueError("Validation: no metrics given (e.g. metrics=['accuracy'] with validation_model=)")
        if self.metrics and model is None:
            raise ValueError("Keras metrics compare a model's predictions with y: pass validation_model=model "
                             "(or give metrics as a dict of batch -> scalar functions)")
        self.predict = None if model is None else tf.function(lambda x: model(x, training=False),
                                                              reduce_retracing=True)
        self.every, self.prefix = int(every), prefix

    def evaluate(self) -> dict[str, float]:
        """The metrics on the whole validation data."""
        means = {name: keras.metrics.Mean() for name in self.functions}
        for metric in self.metrics:
            metric.reset_state()
        for batch in self.data:
            size = tf.shape(tf.nest.flatten(batch)[0])[0]
            for name, fn in self.functions.items():
                means[name].update_state(fn(batch), sample_weight=size)
            if self.metrics:
                x, y = batch[0], batch[1]
                predictions = self.predict(x)
                for metric in self.metrics:
                    metric.update_state(y, predictions)
        values = {m.name: float(m.result()) for m in self.metrics}
        values.update({name: float(m.result()) for name, m in means.items()})
        return {self.prefix + name: value for name, value in values.items()}

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.params.get("epochs")
        if logs is not None and ((epoch + 1) % self.every == 0 or last):
            logs.update(self.evaluate())


def _validation_batches(data: Any, batch_size: int) -> Any:
    if isinstance(data, tuple) and len(data) == 2 and all(hasattr(a, "shape") for a in data):
        return tf.data.Dataset.from_tensor_slices(data).batch(int(batch_size))
    if isinstance(data, (tf.data.Dataset, list)):
        return data
    raise TypeError(f"validation_data must be (x, y) arrays, a tf.data.Dataset or a list of batches, "
                    f"got {type(data).__name__}")


def _keras_metric(metric: Any) -> Any:
    """A Keras metric instance; ``"accuracy"``/``"acc"`` stay names until the shapes are known."""
    if isinstance(metric, str) and metric in ("accuracy", "acc"):
        return _Accuracy()
    return keras.metrics.get(metric)


class _Accuracy(keras.metrics.Mean):
    """Keras' ``"accuracy"`` as ``compile`` resolves it: sparse categorical for integer
    labels, categorical for one-hot, binary for one output."""

    def __init__(self):
        super().__init__(name="accuracy")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.convert_to_tensor(y_true)
        if y_pred.shape[-1] == 1:
            hits = keras.metrics.binary_accuracy(tf.cast(y_true, y_pred.dtype), y_pred)
        elif y_true.shape.rank == y_pred.shape.rank and y_true.shape[-1] == y_pred.shape[-1]:
            hits = keras.metrics.categorical_accuracy(y_true, y_pred)
        else:
            hits = keras.metrics.sparse_categorical_accuracy(y_true, y_pred)
        return super().update_state(hits, sample_weight)
