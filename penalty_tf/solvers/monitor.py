"""Finding the first NaN or Inf inside a compiled solver step, and the error that names it."""

from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

from penalty_tf import autodiff

#: A status code packs (quantity index, lower step) as ``index * STATUS_STRIDE + step``.
STATUS_STRIDE = 1_000_000
#: The "lower step" of quantities computed after the lower loop (upper step, final f, g).
AFTER_LOWER_LOOP = STATUS_STRIDE - 1


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN or infinite during a solver step.

    The message names the quantity, the lower step and the upper iteration. `run` stops on
    it (see `penalty_tf.training.run`); with `step`, catch it and restore a checkpoint::

        try:
            solver.step(batch, lower_steps=10)
        except ptf.NonFiniteError as error:
            print(error); manager.checkpoint.restore(manager.latest_checkpoint)
    """


class FiniteMonitor:
    """Tracks, inside a compiled step, the first quantity that stopped being finite.

    ``quantities`` maps a short key (used by the solver's code) to the description that
    error messages print. The status is an int32 scalar: 0 while everything is finite,
    otherwise ``(position of the key + 1) * STATUS_STRIDE + lower step`` of the first failure.
    """

    def __init__(self, quantities: Mapping[str, str], enabled: bool):
        self.keys = list(quantities)
        self.descriptions = dict(quantities)
        self.enabled = enabled

    def initial(self) -> tf.Tensor:
        return tf.constant(0, tf.int32)

    def check(self, status: tf.Tensor, key: str, tensors: Sequence[tf.Tensor],
              lower_step: tf.Tensor | None = None) -> tf.Tensor:
        """Flag quantity ``key`` if ``tensors`` are not all finite (``lower_step`` None: a
        quantity computed after the lower loop)."""
        if not self.enabled:
            return status
        step = AFTER_LOWER_LOOP if lower_step is None else tf.cast(lower_step, tf.int32)
        code = (self.keys.index(key) + 1) * STATUS_STRIDE + step
        ok = autodiff.all_finite(tensors)
        return tf.where(tf.logical_or(status != 0, ok), status, code)

    def describe(self, status: int) -> str:
        """``"<quantity> ... lower step k"`` for a status code."""
        index, lower_step = divmod(int(status), STATUS_STRIDE)
        where = ("after the lower-level steps" if lower_step == AFTER_LOWER_LOOP
                 else f"at lower step {lower_step}")
        return f"{self.descriptions[self.keys[index - 1]]} is not finite (NaN or Inf) {where}"
