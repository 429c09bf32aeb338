"""A bilevel problem, as every solver is given it.

    min_u f(u, v*(u))   subject to   v*(u) = argmin_v g(u, v)

`BilevelProblem` holds the two losses, the variables of both levels and what is optional
about them (box bounds, a lower re-initialiser, a per-iteration batch hook). Every solver
takes one (``ptf.solvers.make("penalty", problem, config)``, or
``Penalty.from_problem(problem, config)``); the solvers' classic constructors
(``Penalty(upper_loss, lower_loss, upper_vars=..., lower_vars=..., ...)``) build one for you.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Union

import keras
import tensorflow as tf

#: u or v: a variable, a list of variables (one group) or a list of lists (several groups).
VariableSpec = Union[tf.Variable, keras.Model, Sequence[tf.Variable], Sequence[Sequence[tf.Variable]]]
#: Per level: a learning rate (TF1-style Adam), a Keras optimizer, or one per group.
OptimizerSpec = Union[float, keras.optimizers.Optimizer, Sequence[Union[float, keras.optimizers.Optimizer]]]
#: ``(low, high)`` box bounds, a projection callable, or None.
Bounds = Union[None, tuple, Callable[[tf.Tensor], tf.Tensor]]
#: ``batch -> scalar tensor``.
Loss = Callable[[Any], tf.Tensor]


@dataclasses.dataclass
class BilevelProblem:
    """The losses and variables of a bilevel problem.

    Attributes:
      upper_loss, lower_loss: ``batch -> scalar`` callables for f and g (closing over the
        models and variables; ``batch`` is whatever the solver's ``step`` is given). A
        non-scalar result is an error when the step is first traced.
      upper_vars, lower_vars: u and v: a variable, a list, or a list of groups (each group
        gets its own optimizer); a Keras model or layer (or `tf.Module`) stands for its
        trainable variables anywhere a variable may stand. No variable may be in both.
      upper_bounds, lower_bounds: ``(low, high)`` box or a projection callable applied
        after every step on that level (TF1's variable constraints in the original).
      lower_initializer: re-initialises v for ``solver.reset_lower()`` (default: restore
        the values v had when the solver was built).
      lower_step_batch: optional ``batch -> batch'`` evaluated once per upper iteration,
        whose result the losses receive in the steps that differentiate w.r.t. v only; it
        lets what depends on u and the batch alone (e.g. an encoder's features) be computed
        once instead of T times. The losses must accept both forms.
    """

    upper_loss: Loss
    lower_loss: Loss
    upper_vars: VariableSpec
    lower_vars: VariableSpec
    upper_bounds: Bounds = None
    lower_bounds: Bounds = None
    lower_initializer: Optional[Callable[[], None]] = None
    lower_step_batch: Optional[Callable[[Any], Any]] = None
