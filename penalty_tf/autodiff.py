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

from typing import Callable, NamedTuple, Sequence

import tensorflow as tf

Tensors = Sequence[tf.Tensor]
Variables = Sequence[tf.Variable]


def dot(a: Tensors, b: Tensors) -> tf.Tensor:
    """Return ``<a, b> = sum_i sum(a_i * b_i)`` over two equally-shaped lists of tensors."""
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])


def squared_norm(a: Tensors) -> tf.Tensor:
    """Return ``||a||^2 = sum_i sum(a_i ** 2)`` (already squared: no square root)."""
    return tf.add_n([tf.reduce_sum(tf.square(x)) for x in a])


def all_finite(a: Tensors) -> tf.Tensor:
    """Return a scalar bool: True iff every entry of every tensor in ``a`` is finite."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(x)) for x in a])


def zeros_for_missing(grads: Sequence[tf.Tensor | None], variables: Variables) -> list[tf.Tensor]:
    """Replace ``None`` gradients (a variable the loss does not depend on) by zeros."""
    return [tf.zeros_like(v) if gr is None else tf.convert_to_tensor(gr)
            for gr, v in zip(grads, variables)]


def gradient(loss_fn: Callable[[], tf.Tensor], variables: Variables) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Return ``(l, grad_w l)`` for the scalar ``l = loss_fn()`` and ``w = variables``."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(variables)
        loss = loss_fn()
    return loss, zeros_for_missing(tape.gradient(loss, variables), variables)


class SecondOrderResult(NamedTuple):
    """What `gradient_of_gradient_functional` computes in one nested-tape pass.

    ``value`` is Phi, ``grads`` = d Phi / d wrt, ``lower_value`` = g and ``lower_grad`` =
    G = grad_v g, all at the same point.
    """

    value: tf.Tensor
    grads: list[tf.Tensor]
    lower_value: tf.Tensor
    lower_grad: list[tf.Tensor]


def gradient_of_gradient_functional(
    lower_loss: Callable[[], tf.Tensor],
    lower_vars: Variables,
    functional: Callable[[tf.Tensor, list[tf.Tensor]], tf.Tensor],
    wrt: Variables,
) -> SecondOrderResult:
    """Differentiate a functional of the lower-level gradient.

    Computes ``G = grad_v g`` on an inner tape and ``Phi = functional(g, G)`` (which may
    also evaluate other losses, e.g. the upper-level f) on an outer tape, and returns
    ``d Phi / d wrt`` together with Phi, g and G. For example with
    ``Phi = f + <nu, G> + rho/2 ||G||^2`` the result is
    ``grad f + H_{wrt,v} (nu + rho G)``: the gradient of the penalty function, obtained
    with one forward pass of g, one backward pass (for G) and one double-backward pass.

    Args:
      lower_loss: zero-argument callable returning the scalar g.
      lower_vars: the variables v that G is taken with respect to.
      functional: ``(g, G) -> scalar``; called inside the outer tape.
      wrt: variables to differentiate Phi with respect to (any of u and v).
    """
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(wrt)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(lower_vars)
            lower_value = lower_loss()
        lower_grad = zeros_for_missing(inner.gradient(lower_value, lower_vars), lower_vars)
        value = functional(lower_value, lower_grad)
    grads = zeros_for_missing(outer.gradient(value, wrt), wrt)
    return SecondOrderResult(value, grads, lower_value, lower_grad)


def hvp(loss_fn: Callable[[], tf.Tensor], variables: Variables, vectors: Tensors) -> list[tf.Tensor]:
    """Hessian-vector product ``H q = grad_v <grad_v l, q>`` with q held constant."""
    vectors = [tf.stop_gradient(q) for q in vectors]
    return gradient_of_gradient_functional(
        loss_fn, variables, lambda _, grad: dot(grad, vectors), variables).grads


def mixed_vp(loss_fn: Callable[[], tf.Tensor], upper_vars: Variables, lower_vars: Variables,
             vectors: Tensors) -> list[tf.Tensor]:
    """Mixed product ``H_uv q = grad_u <grad_v l, q>`` with q (shaped like v) held constant."""
    vectors = [tf.stop_gradient(q) for q in vectors]
    return gradient_of_gradient_functional(
        loss_fn, lower_vars, lambda _, grad: dot(grad, vectors), upper_vars).grads


def hvp_and_mixed_vp(loss_fn: Callable[[], tf.Tensor], upper_vars: Variables,
                     lower_vars: Variables, vectors: Tensors) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """Return ``(H_uv q, H_vv q)`` from one nested-tape pass (one double-backward)."""
    vectors = [tf.stop_gradient(q) for q in vectors]
    upper_vars, lower_vars = list(upper_vars), list(lower_vars)
    grads = gradient_of_gradient_functional(
        loss_fn, lower_vars, lambda _, grad: dot(grad, vectors), upper_vars + lower_vars).grads
    return grads[:len(upper_vars)], grads[len(upper_vars):]
