"""The variables of one level of a bilevel problem: groups, optimizers, box projection."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from penalty_tf.optimizers import SCHEDULE_OWNED, reset_optimizer_state, tf1_adam
from penalty_tf.problem import Bounds, OptimizerSpec, VariableSpec
from penalty_tf.solvers.ranges import check_learning_rate


def as_tf_variable(variable: tf.Variable | keras.Variable) -> tf.Variable:
    """The `tf.Variable` behind a Keras 3 variable (tapes watch only `tf.Variable`s; both
    objects share their storage, so updates of one are seen through the other)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    if not isinstance(variable, tf.Variable):
        raise TypeError(f"expected a tf.Variable or keras.Variable, got {type(variable).__name__}")
    return variable


def _is_layer(item: Any) -> bool:
    """A Keras model or layer, or a `tf.Module` (which stand for their trainable variables)."""
    return isinstance(item, (keras.layers.Layer, tf.Module))


def _layer_variables(layer: Any, what: str) -> list:
    """A Keras model's or layer's trainable variables (it must have some: build it first)."""
    variables = list(layer.trainable_variables)
    if not variables:
        raise ValueError(f"{what}: {type(layer).__name__} {getattr(layer, 'name', '')!r} has no trainable "
                         "variables (build it first, e.g. call it once on a batch, or unfreeze it)")
    return variables


def _expand_layers(group: Sequence[Any], what: str) -> list:
    """A group with every Keras model / layer / `tf.Module` replaced by its trainable variables."""
    return [w for item in group for w in (_layer_variables(item, what) if _is_layer(item) else [item])]


def as_groups(variables: VariableSpec, what: str) -> list[list[tf.Variable]]:
    """Normalise a variable, a list of variables or a list of lists to a list of groups of
    `tf.Variable`s (Keras 3 variables are unwrapped). A Keras model or layer stands for its
    trainable variables wherever a variable may stand: ``model`` or ``[model, w]`` is one
    group, ``[[encoder], [head]]`` two."""
    if isinstance(variables, (tf.Variable, keras.Variable)) or _is_layer(variables):
        variables = [variables]
    try:
        variables = list(variables)
    except TypeError:
        raise TypeError(f"{what}: expected a variable, a list of variables, a list of lists or a Keras "
                        f"model, got {type(variables).__name__}") from None
    if not variables:
        raise ValueError(f"{what}: no variables given")
    if all(isinstance(v, (list, tuple)) for v in variables):
        groups = [list(group) for group in variables]
    elif any(isinstance(v, (list, tuple)) for v in variables):
        raise ValueError(f"{what}: mix of variables and lists of variables; give one or the other")
    else:
        groups = [variables]
    groups = [_expand_layers(group, what) for group in groups]
    for group in groups:
        if not group:
            raise ValueError(f"{what}: empty variable group")
    return [[as_tf_variable(v) for v in group] for group in groups]


def shared_variables(upper: Sequence[tf.Variable], lower: Sequence[tf.Variable]) -> list[str]:
    """Names of the variables that are in both levels (a variable is either u or v)."""
    lower_refs = {v.ref() for v in lower}
    return [v.name for v in upper if v.ref() in lower_refs]


def make_optimizers(spec: OptimizerSpec, n_groups: int, what: str) -> list[keras.optimizers.Optimizer]:
    """One optimizer per variable group from a learning rate, an optimizer, or a list of them.

    A float becomes TF1-style Adam (`tf1_adam`). A single optimizer instance serves one group
    only: Keras 3 optimizers refuse variables they were not built with.
    """
    items = _items(spec, n_groups)
    if len(items) != n_groups:
        raise ValueError(f"{what}: {len(items)} optimizers/learning rates for {n_groups} variable groups")
    optimizers = [tf1_adam(check_learning_rate(f"{what}: learning rate", x))
                  if isinstance(x, (int, float, np.floating)) and not isinstance(x, bool) else x for x in items]
    if len({id(o) for o in optimizers}) != len(optimizers):
        raise ValueError(f"{what}: the same optimizer instance was given for several groups; "
                         "give one optimizer per group (or a learning rate)")
    for opt in optimizers:
        if not isinstance(opt, keras.optimizers.Optimizer):
            raise TypeError(f"{what}: expected a learning rate or a keras optimizer, got {opt!r}")
    return optimizers


def make_projection(bounds: Bounds) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """A projection from ``(low, high)`` box bounds (clipping) or a callable; None for none."""
    if bounds is None:
        return None
    if callable(bounds):
        return bounds
    low, high = bounds
    if not low < high:
        raise ValueError(f"empty box: low {low} >= high {high}")
    return lambda x: tf.clip_by_value(x, low, high)


class Level(tf.__internal__.tracking.AutoTrackable):
    """The variables of one level, grouped, each group with its optimizer, plus a projection.

    ``apply(grads)`` performs one optimizer step per group followed by the projection,
    which reproduces TF1's variable ``constraint`` semantics (the original's box clipping).
    Trackable (as a `tf.Module` is): its variables and its optimizers' moments are saved by
    any `tf.train.Checkpoint` that holds it.
    """

    def __init__(self, variables: VariableSpec, optimizers: OptimizerSpec | None,
                 bounds: Bounds, what: str):
        self.groups = as_groups(variables, what)
        self.variables = [v for group in self.groups for v in group]
        self.projection = make_projection(bounds)
        self.what = what
        self.optimizers = (make_optimizers(optimizers, len(self.groups), what)
                           if optimizers is not None else [])
        # The optimizers the solver made from a learning rate (not a user's instance).
        self.owned = [opt is not spec or getattr(opt, SCHEDULE_OWNED, False)
                      for opt, spec in zip(self.optimizers, _items(optimizers, len(self.groups)))]
        for opt, group in zip(self.optimizers, self.groups):
            opt.build(group)  # eagerly: slot variables cannot be created inside tf.function
        self.initial_lrs = [float(opt.learning_rate.numpy()) for opt in self.optimizers]

    def split(self, flat: Sequence[tf.Tensor]) -> list[list[tf.Tensor]]:
        """Split a flat list shaped like `variables` into per-group lists."""
        out, start = [], 0
        for group in self.groups:
            out.append(list(flat[start:start + len(group)]))
            start += len(group)
        return out

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        """One optimizer step on every group with ``grads`` (flat, like `variables`), then project."""
        for opt, group, group_grads in zip(self.optimizers, self.groups, self.split(grads)):
            opt.apply(group_grads, group)
        self.project()

    def assign_sub(self, deltas: Sequence[tf.Tensor]) -> None:
        """Plain update ``w <- w - delta`` (no optimizer), then project."""
        for var, delta in zip(self.variables, deltas):
            var.assign_sub(delta)
        self.project()

    def project(self) -> None:
        if self.projection is not None:
            for var in self.variables:
                var.assign(self.projection(var))

    def scale_learning_rates(self, factor: tf.Tensor, only_owned: bool = False) -> None:
        """``lr <- factor * lr`` for every optimizer (``only_owned``: those the solver made
        from a learning rate). An optimizer driven by a Keras schedule is refused."""
        for opt, owned in zip(self.optimizers, self.owned):
            if owned or not only_owned:
                self._settable(opt).assign(opt.learning_rate * factor)

    def set_learning_rates(self, values: float | Sequence[float]) -> None:
        values = list(values) if isinstance(values, (list, tuple)) else [values] * len(self.optimizers)
        for opt, value in zip(self.optimizers, values):
            self._settable(opt).assign(value)

    def reset_learning_rates(self) -> None:
        """The learning rates back to their initial values (a Keras schedule restarts with
        the optimizer's step counter instead, see `reset_optimizer_state`)."""
        for opt, value in zip(self.optimizers, self.initial_lrs):
            if not has_schedule(opt):
                opt.learning_rate.assign(value)

    def _settable(self, opt: keras.optimizers.Optimizer) -> tf.Variable:
        if has_schedule(opt):
            raise TypeError(f"{self.what}: the learning rate of {opt.name} follows a Keras "
                            f"{type(opt._learning_rate).__name__}, so it cannot be set or scaled; give the "
                            "optimizer a float learning rate to use schedules of penalty-tf or Keras callbacks")
        return opt.learning_rate

    def learning_rates(self) -> list[float]:
        return [float(opt.learning_rate.numpy()) for opt in self.optimizers]

    def reset_optimizer_state(self) -> None:
        """Zero the moments and step counters of this level's optimizers (lrs unchanged)."""
        for opt in self.optimizers:
            reset_optimizer_state(opt)


def has_schedule(optimizer: keras.optimizers.Optimizer) -> bool:
    """Whether the optimizer's learning rate is a Keras ``LearningRateSchedule`` (or a
    callable), computed from its step counter rather than held in a variable."""
    return not isinstance(optimizer._learning_rate, keras.Variable)


def _items(spec: OptimizerSpec | None, n_groups: int) -> list:
    """The per-group entries of an optimizer spec (as `make_optimizers` reads it)."""
    if spec is None:
        return []
    return list(spec) if isinstance(spec, (list, tuple)) else [spec] * n_groups


def snapshot(variables: Sequence[tf.Variable]) -> list[np.ndarray]:
    """Copies of the current values (to restore with `restore`)."""
    return [v.numpy().copy() for v in variables]


def restore(variables: Sequence[tf.Variable], values: Sequence[np.ndarray]) -> None:
    for v, x in zip(variables, values):
        v.assign(x)
