"""Gradients, Hessian-vector and mixed second-derivative products with nested tapes.

This module is the only place in penalty-tf where second derivatives are taken. Every
product is computed by reverse-over-reverse differentiation with two nested
`tf.GradientTape`s; no Hessian is ever materialised.

Notation (as in the paper): ``g(u, v)`` is the lower-level loss, ``G = grad_v g`` its
gradient with respect to the lower-level variables ``v`` (a list of tensors, one per
variable), ``H_vv = d^2 g / dv dv`` and ``H_uv = d^2 g / du dv``. For lists of tensors
``<a, b>`` is the sum of element-wise products and ``||a||^2 = <a, a>``.

All functions take *zero-argument callables* returning a scalar loss, so that they work
with Keras models and closures over `tf.Variable`s alike, and they may be called eagerly
or inside `tf.function` / XLA.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, NamedTuple, Sequence

import tensorflow as tf

Tensors = Sequence[tf.Tensor]
Variables = Sequence[tf.Variable]


class DistributedLoss:
    """A loss bound to a batch split over the replicas of a `tf.distribute.Strategy`.

    The solvers wrap ``loss(batch)`` in this object when they were built under
    ``strategy.scope()``. Calling it, or passing it to `gradient` / `gradient_plus_hvp`,
    evaluates ``loss`` on every replica's share of the batch (`strategy.run`) and returns
    the MEAN over replicas, in cross-replica context:

        l = 1/R sum_r l_r,     grad l = 1/R sum_r grad l_r,

    which is the loss of the global batch when ``loss`` is a mean over its batch and the
    replicas hold equally many examples (batch the dataset with ``drop_remainder=True``).
    Every quantity the solvers use is linear in the per-replica losses except the direction
    ``w(G)`` of `gradient_plus_hvp`, which is formed from the all-reduced global ``G``.

    Args:
      loss: ``batch -> scalar`` (the user's f or g).
      batch: a distributed batch (`PerReplica` values from a distributed dataset) or
        ordinary tensors (then every replica computes on the whole batch).
      strategy: the strategy whose replicas hold the batch.
    """

    def __init__(self, loss: Callable, batch, strategy: tf.distribute.Strategy):
        self.loss, self.batch, self.strategy = loss, batch, strategy

    def map_replicas(self, fn: Callable, other: "DistributedLoss | None" = None):
        """``fn(local_loss, local_other)`` on every replica (zero-argument callables on the
        replica's share of the batch), its nest of tensors MEAN-reduced over replicas."""
        def on_replica(batch, other_batch):
            local_other = None if other is None else (lambda: other.loss(other_batch))
            return fn(lambda: self.loss(batch), local_other)

        per_replica = self.strategy.run(on_replica, args=(self.batch, None if other is None else other.batch))
        return tf.nest.map_structure(
            lambda x: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, x, axis=None), per_replica)

    def __call__(self) -> tf.Tensor:
        return self.map_replicas(lambda local, _: local())


def global_mean(tensors: list[tf.Tensor]) -> list[tf.Tensor]:
    """All-reduce MEAN over replicas inside `strategy.run` (identity outside a strategy)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensors
    return context.all_reduce(tf.distribute.ReduceOp.MEAN, tensors)


def dot(a: Tensors, b: Tensors) -> tf.Tensor:
    """Return ``<a, b> = sum_i sum(a_i * b_i)`` over two equally-shaped lists of tensors."""
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])


def squared_norm(a: Tensors) -> tf.Tensor:
    """Return ``||a||^2 = sum_i sum(a_i ** 2)`` (already squared: no square root)."""
    return tf.add_n([tf.reduce_sum(tf.square(x)) for x in a])


def all_finite(a: Tensors) -> tf.Tensor:
    """Return a scalar bool: True iff every entry of every tensor in ``a`` is finite."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(x)) for x in a])


class ConnectionRecord:
    """What tracing a step found: the variables some gradient reached (``reached``) and
    those a gradient of the lower loss g reached (``reached_by_g``; g's values are noted by
    `note_lower_value`)."""

    def __init__(self) -> None:
        self.reached: set = set()
        self.reached_by_g: set = set()
        self.lower_values: set = set()


#: The active `record_connections` records (a list: replicas of a strategy trace in threads).
_CONNECTION_RECORDS: list[ConnectionRecord] = []


@contextlib.contextmanager
def record_connections() -> Iterator[ConnectionRecord]:
    """While active, note which variables the gradients taken reach. The solvers record
    the tracing of their step, so that a variable no loss reaches is named at the first
    step, without an extra evaluation of the losses."""
    record = ConnectionRecord()
    _CONNECTION_RECORDS.append(record)
    try:
        yield record
    finally:
        _CONNECTION_RECORDS.remove(record)


def note_lower_value(value: tf.Tensor) -> tf.Tensor:
    """Mark a tensor as a value of the lower loss g (for `record_connections`); returns it."""
    value = tf.convert_to_tensor(value)
    for record in _CONNECTION_RECORDS:
        record.lower_values.add(value.ref())
    return value


def zeros_for_missing(grads: Sequence[tf.Tensor | None], variables: Variables,
                      loss: tf.Tensor | None = None) -> list[tf.Tensor]:
    """Replace ``None`` gradients (a variable the loss does not depend on) by zeros.
    ``loss``: the differentiated scalar, when there is one (for `record_connections`)."""
    for record in _CONNECTION_RECORDS:
        of_g = loss is not None and loss.ref() in record.lower_values
        for gr, v in zip(grads, variables):
            if gr is not None:
                record.reached.add(v.ref())
                if of_g:
                    record.reached_by_g.add(v.ref())
    return [tf.zeros_like(v) if gr is None else tf.convert_to_tensor(gr)
            for gr, v in zip(grads, variables)]


def gradient(loss_fn: Callable[[], tf.Tensor], variables: Variables) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Return ``(l, grad_w l)`` for the scalar ``l = loss_fn()`` and ``w = variables``.

    With a `DistributedLoss`: both are means over replicas (see there).
    """
    if isinstance(loss_fn, DistributedLoss):
        return loss_fn.map_replicas(lambda local, _: gradient(local, variables))
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(variables)
        loss = loss_fn()
    return loss, zeros_for_missing(tape.gradient(loss, variables), variables, loss)


class SecondOrderResult(NamedTuple):
    """What `gradient_plus_hvp` computes in one nested-tape pass, all at the same point.

    ``grads`` = ``grad_wrt f + H_{wrt,v} w``; ``upper_value`` = f (None when no f was
    given); ``lower_value`` = g; ``lower_grad`` = G = grad_v g.
    """

    grads: list[tf.Tensor]
    upper_value: tf.Tensor | None
    lower_value: tf.Tensor
    lower_grad: list[tf.Tensor]


def gradient_plus_hvp(
    upper_loss: Callable[[], tf.Tensor] | None,
    lower_loss: Callable[[], tf.Tensor],
    lower_vars: Variables,
    direction: Callable[[list[tf.Tensor]], Tensors] | Tensors,
    wrt: Variables,
) -> SecondOrderResult:
    """Return ``grad_wrt f + H_{wrt,v} w`` with ``w = direction(G)`` held constant.

    ``H_{wrt,v} w = grad_wrt <grad_v g, w>`` is a Hessian-vector product when ``wrt`` is v
    and the mixed product ``H_uv w`` when ``wrt`` is u (``wrt`` may hold both). The inner
    tape gives ``G = grad_v g``; the outer tape then runs ONE backward pass over f and G
    with output gradients ``[1, w]``, i.e. the vector-Jacobian product of ``(f, G)``. Every
    second-order step direction of the solvers has this form:

    * Penalty: ``w = nu + rho G`` gives ``grad f + H (nu + rho G)``, the gradient of
      ``f + <nu, G> + rho/2 ||G||^2``;
    * ApproxGrad: ``w = -p`` gives ``grad_u f - H_uv p``, the surrogate hypergradient;
    * Hessian-vector products: no f, fixed ``w = q``.

    Args:
      upper_loss: zero-argument callable returning f, or None for ``f = 0``.
      lower_loss: zero-argument callable returning g.
      lower_vars: the variables v of ``G = grad_v g``.
      direction: ``w`` (shaped like v), or a callable computing it from G.
      wrt: variables to differentiate with respect to (any of u and v).

    With `DistributedLoss` losses every replica runs this pass on its share of the batch;
    ``w`` is formed from the global ``G`` (all-reduced before ``direction`` is called), and
    the results are averaged over replicas, so they equal the single-device pass on the
    global batch.

    Example (Penalty's v-direction with nu = 0, rho = 10)::

        r = gradient_plus_hvp(lambda: f(batch), lambda: g(batch), v,
                              lambda G: [10.0 * x for x in G], wrt=v)
        r.grads            # grad_v f + 10 H_vv G
    """
    if isinstance(lower_loss, DistributedLoss):
        return _distributed_gradient_plus_hvp(upper_loss, lower_loss, lower_vars, direction, wrt)
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(wrt)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(lower_vars)
            lower_value = lower_loss()
        lower_grad = zeros_for_missing(inner.gradient(lower_value, lower_vars), lower_vars, lower_value)
        upper_value = upper_loss() if upper_loss is not None else None
    w = direction(lower_grad) if callable(direction) else direction
    w = [tf.stop_gradient(x) for x in w]
    targets, weights = list(lower_grad), w
    if upper_value is not None:
        targets, weights = [upper_value] + targets, [tf.ones_like(upper_value)] + w
    grads = zeros_for_missing(outer.gradient(targets, wrt, output_gradients=weights), wrt)
    return SecondOrderResult(grads, upper_value, lower_value, lower_grad)


def _distributed_gradient_plus_hvp(upper_loss, lower_loss, lower_vars, direction, wrt):
    """`gradient_plus_hvp` on every replica with ``w = direction(all-reduced G)``; means."""
    def global_direction(local_grad):
        return direction(global_mean(local_grad)) if callable(direction) else direction

    def on_replica(local_lower, local_upper):
        r = gradient_plus_hvp(local_upper, local_lower, lower_vars, global_direction, wrt)
        return r._replace(upper_value=()) if r.upper_value is None else r

    r = lower_loss.map_replicas(on_replica, upper_loss)
    return r._replace(upper_value=None) if upper_loss is None else r


def hvp(loss_fn: Callable[[], tf.Tensor], variables: Variables, vectors: Tensors) -> list[tf.Tensor]:
    """Hessian-vector product ``H q = grad_v <grad_v l, q>`` with q held constant.

    Example::

        hq = hvp(lambda: tf.reduce_sum(v ** 3), [v], [tf.ones_like(v)])   # 6 v
    """
    return gradient_plus_hvp(None, loss_fn, variables, vectors, variables).grads


def mixed_vp(loss_fn: Callable[[], tf.Tensor], upper_vars: Variables, lower_vars: Variables,
             vectors: Tensors) -> list[tf.Tensor]:
    """Mixed product ``H_uv q = grad_u <grad_v l, q>`` with q (shaped like v) held constant.

    Example::

        # l = u * v^2  ->  grad_v l = 2 u v, H_uv q = 2 v q
        mixed_vp(lambda: tf.reduce_sum(u * v ** 2), [u], [v], [q])
    """
    return gradient_plus_hvp(None, loss_fn, lower_vars, vectors, upper_vars).grads


def hvp_and_mixed_vp(loss_fn: Callable[[], tf.Tensor], upper_vars: Variables,
                     lower_vars: Variables, vectors: Tensors) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """Return ``(H_uv q, H_vv q)`` from one nested-tape pass (one double-backward)."""
    upper_vars, lower_vars = list(upper_vars), list(lower_vars)
    grads = gradient_plus_hvp(None, loss_fn, lower_vars, vectors, upper_vars + lower_vars).grads
    return grads[:len(upper_vars)], grads[len(upper_vars):]
