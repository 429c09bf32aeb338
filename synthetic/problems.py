"""Synthetic bilevel test problems SMD20–SMD24 (docs/original.md §2).

Every problem has an upper-level variable ``u = [u1, u2]`` and a lower-level variable
``v = [v1, v2]`` with ``len(u1) = p``, ``len(v1) = q`` and ``len(u2) = len(v2) = r``
(the driver uses p = q = r = 10). The bilevel problem is

    min_u f(u, v*(u))   s.t.   v*(u) ∈ argmin_v g(u, v),

with f, g and the error measure ``err`` (the distance of (u, v) from the optimal set,
modulo the null space of A for the rank-deficient examples) given per example below.
Notation: ``𝟙`` is the vector of ones, ``A1``, ``A2`` are (p_ × p) standard-normal
matrices with ``p_ = ceil(0.5·p)``, ``P1``, ``P2`` the orthogonal projectors onto their row
spaces (``P = Aᵀ(AAᵀ)⁻¹A``), and ‖·‖ is the Euclidean norm.

=====  ====  ==================================================  ==========================================
name   c     f                                                   g
=====  ====  ==================================================  ==========================================
SMD20  0.5   ‖v1‖² + ‖v2‖² + ‖u1‖² + ‖u2‖² − 1                   ‖𝟙 − u1 − v1‖² + ‖𝟙 − u2 − v2‖²
SMD21  0     ‖v1‖² + ‖v2‖² − (‖u1 − v1‖² + ‖u2 − v2‖²)            ‖u1 − v1‖² + ‖u2 − v2‖²
SMD22  0     ‖A1v1‖² + ‖A2v2‖² − (‖A1(u1−v1)‖² + ‖A2(u2−v2)‖²)    ‖A1(u1 − v1)‖² + ‖A2(u2 − v2)‖²
SMD23  0     ‖v1‖² + ‖v2‖² − (‖A1(u1−v1)‖² + ‖A2(u2−v2)‖²)        ‖A1(u1 − v1)‖² + ‖A2(u2 − v2)‖²
SMD24  0.5   ‖u1‖² + ‖u2‖² + ‖v1‖² + ‖v2‖²                       ‖A1(𝟙 − u1 − v1)‖² + ‖A2(𝟙 − u2 − v2)‖²
=====  ====  ==================================================  ==========================================

Errors (c is the example's initialisation centre):

* SMD20: err = sqrt(‖u1 − ½‖² + ‖u2 − ½‖² + ‖v1 − ½‖² + ‖v2 − ½‖²)
* SMD21: err = sqrt(‖u1‖² + ‖u2‖² + ‖v1‖² + ‖v2‖²)
* SMD22: err = sqrt(‖P1u1‖² + ‖P2u2‖² + ‖P1v1‖² + ‖P2v2‖²)
* SMD23: err = sqrt(‖P1u1‖² + ‖P2u2‖² + ‖v1‖² + ‖v2‖²)
* SMD24: err = sqrt(‖P1(u1 − ½)‖² + ‖P2(u2 − ½)‖² + ‖P1(v1 − ½)‖² + ‖P2(v2 − ½)‖²)

Flat representation
-------------------
The original code keeps four float32 variables u1, u2, v1, v2 and passes the lists
``[u1, u2]`` and ``[v1, v2]`` to the solvers. Here each level is ONE flat float32
``tf.Variable``: ``u = concat(u1, u2)`` (length p + r) and ``v = concat(v1, v2)``
(length q + r). This is mathematically identical:

* every sum of block norms is the norm of the concatenation, e.g.
  ‖u1‖² + ‖u2‖² = ‖u‖² and ‖A1(u1 − v1)‖² + ‖A2(u2 − v2)‖² = ‖B(u − v)‖² with
  ``B = blockdiag(A1, A2)`` of shape (2·p_, 2·p); likewise ‖P1x1‖² + ‖P2x2‖² = ‖Qx‖² with
  ``Q = blockdiag(P1, P2)``; so f, g and err take the same values;
* the gradient with respect to the flat vector is the concatenation of the block gradients,
  and the updates of the solvers (Adam/GD steps, clipping to the box) are element-wise, so
  they produce the same iterates as with the four separate variables. (Any solver quantity
  that is a global inner product/norm over the variable list, e.g. a penalty ‖∇_v g‖², is
  likewise the same whether summed over blocks or over the flat vector.)

Representing each level by one vector keeps the number of TF ops in f and g small (one
matvec instead of two, no per-block reductions), which matters because a solver step costs
only ~100 µs. Rounding may differ from the original at the level of float32 ulps (sums are
accumulated in a different order); f and g are evaluated in float32 throughout.

Bounds
------
The original box is [−5 + 1e-10, 5 − 1e-10] per coordinate (float64 arrays); in float32
these bounds are exactly −5 and 5, which is what ``lower_bound`` / ``upper_bound`` report.
The solvers take these bounds and clip after each update.

Deviation: random matrices
--------------------------
The original drew A1, A2 from the unseeded global NumPy stream at every (method, example)
graph construction, so every method saw different matrices. Here they are drawn from the
explicitly seeded ``rng`` passed to :func:`make_problem`, once per problem (the runner may
share one problem across methods, so all methods then see the same A). The projectors are
computed in float64 NumPy from the float32-rounded A actually used by TF, then cast to
float32, so their null space is exactly that of the A in f and g.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from penalty_tf.problem import BilevelProblem

__all__ = [
    "EXAMPLES",
    "ALL_EXAMPLES",
    "CENTRES",
    "LOWER_BOUND",
    "UPPER_BOUND",
    "SyntheticProblem",
    "make_problem",
]

#: The driver's example list, in the original's order (docs/original.md §2.4).
EXAMPLES: tuple[str, ...] = ("SMD20", "SMD21", "SMD24", "SMD23")
#: Every example defined in the original (SMD22 is defined but not in the driver's list).
ALL_EXAMPLES: tuple[str, ...] = ("SMD20", "SMD21", "SMD22", "SMD23", "SMD24")
#: Initialisation centre c of each example.
CENTRES: dict[str, float] = {"SMD20": 0.5, "SMD21": 0.0, "SMD22": 0.0, "SMD23": 0.0, "SMD24": 0.5}

#: Box bounds as in the original (float64); in float32 they round to exactly −5 and 5.
_LB64 = -5.0 + 1e-10
_UB64 = 5.0 - 1e-10
LOWER_BOUND: float = float(np.float32(_LB64))  # == -5.0
UPPER_BOUND: float = float(np.float32(_UB64))  # == 5.0

_MATRIX_EXAMPLES = frozenset({"SMD22", "SMD23", "SMD24"})

Loss = Callable[..., tf.Tensor]


@dataclass
class SyntheticProblem:
    """One synthetic bilevel problem on flat variables ``u = [u1, u2]``, ``v = [v1, v2]``.

    Attributes:
        name: example name, one of :data:`ALL_EXAMPLES`.
        dims: ``(p, q, r)``; ``len(u) = p + r``, ``len(v) = q + r``.
        u: upper-level float32 variable (created once; :meth:`initialize` re-assigns it).
        v: lower-level float32 variable (created once; :meth:`initialize` re-assigns it).
        upper_loss: ``upper_loss(batch=None) -> f`` (scalar float32; ``batch`` is ignored).
        lower_loss: ``lower_loss(batch=None) -> g`` (scalar float32; ``batch`` is ignored).
        error: ``error() -> err``, distance of (u, v) from the optimal set (module docstring).
        centre: initialisation centre c (0.5 for SMD20/SMD24, 0 otherwise).
        lower_bound, upper_bound: box bounds of every coordinate (−5, 5; see module docstring).
        A: ``blockdiag(A1, A2)``, shape (2·p_, 2·p), float32 NumPy; None if unused.
        P: ``blockdiag(P1, P2)``, shape (2·p, 2·p), float32 NumPy; None if unused.
    """

    name: str
    dims: tuple[int, int, int]
    u: tf.Variable
    v: tf.Variable
    upper_loss: Loss
    lower_loss: Loss
    error: Callable[[], tf.Tensor]
    centre: float
    lower_bound: float = LOWER_BOUND
    upper_bound: float = UPPER_BOUND
    A: Optional[np.ndarray] = field(default=None, repr=False)
    P: Optional[np.ndarray] = field(default=None, repr=False)

    # ----------------------------------------------------------------- convenience views
    @property
    def upper_vars(self) -> list[tf.Variable]:
        """``[u]`` — the list of upper-level variables for the solvers."""
        return [self.u]

    @property
    def lower_vars(self) -> list[tf.Variable]:
        """``[v]`` — the list of lower-level variables for the solvers."""
        return [self.v]

    def _block(self, M: Optional[np.ndarray], k: int) -> Optional[np.ndarray]:
        if M is None:
            return None
        p = self.dims[0]
        rows = M.shape[0] // 2
        return M[k * rows:(k + 1) * rows, k * p:(k + 1) * p]

    @property
    def A1(self) -> Optional[np.ndarray]:
        """A1, shape (p_, p), or None."""
        return self._block(self.A, 0)

    @property
    def A2(self) -> Optional[np.ndarray]:
        """A2, shape (p_, r) with r = p, or None."""
        return self._block(self.A, 1)

    @property
    def P1(self) -> Optional[np.ndarray]:
        """P1 = A1ᵀ(A1A1ᵀ)⁻¹A1, shape (p, p), or None."""
        return self._block(self.P, 0)

    @property
    def P2(self) -> Optional[np.ndarray]:
        """P2 = A2ᵀ(A2A2ᵀ)⁻¹A2, shape (r, r), or None."""
        return self._block(self.P, 1)

    def bilevel(self) -> BilevelProblem:
        """The problem as every solver takes it: f, g, u, v and the box [lb, ub] on both levels."""
        box = (self.lower_bound, self.upper_bound)
        return BilevelProblem(self.upper_loss, self.lower_loss, self.upper_vars, self.lower_vars,
                              upper_bounds=box, lower_bounds=box)

    # ----------------------------------------------------------------- initialisation
    def initialize(self, rng: np.random.Generator, std: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Assign new random initial values to ``u`` and ``v`` (the original's rule).

        Each coordinate is drawn independently from
        ``Uniform[c + std·(lb − c), c + std·(ub − c)]`` with the example's centre c and the
        original's float64 bounds lb = −5 + 1e-10, ub = 5 − 1e-10, then cast to float32.
        With std = 1 this is Uniform[−5, 5] for every coordinate, whatever c is.
        The coordinates are drawn in the order u1, u2, v1, v2 (= u, then v).

        Returns:
            The assigned ``(u0, v0)`` as float32 NumPy arrays.
        """
        c = self.centre
        low = c + std * (_LB64 - c)
        high = c + std * (_UB64 - c)
        n_u = self.u.shape[0]
        n_v = self.v.shape[0]
        x = rng.uniform(low, high, size=n_u + n_v).astype(np.float32)
        u0, v0 = x[:n_u], x[n_u:]
        self.u.assign(u0)
        self.v.assign(v0)
        return u0, v0

    # ----------------------------------------------------------------- known optimum
    def optimum_point(self) -> tuple[np.ndarray, np.ndarray]:
        """A point ``(u, v)`` (float32 NumPy) in the optimal set, where ``err = 0``.

        * SMD20: u = v = ½·𝟙.
        * SMD21, SMD22, SMD23: u = v = 0.
        * SMD24: u = v = ½·P𝟙 (per block: ½·P1𝟙, ½·P2𝟙).
        """
        n_u = self.u.shape[0]
        n_v = self.v.shape[0]
        if self.name == "SMD20":
            return np.full(n_u, 0.5, np.float32), np.full(n_v, 0.5, np.float32)
        if self.name == "SMD24":
            assert self.P is not None
            x = (0.5 * (self.P.astype(np.float64) @ np.ones(n_u))).astype(np.float32)
            return x, x.copy()
        return np.zeros(n_u, np.float32), np.zeros(n_v, np.float32)


# --------------------------------------------------------------------------- helpers
def _draw_matrix(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A (rows × cols) matrix of i.i.d. standard normals, rounded to float32."""
    return rng.standard_normal((rows, cols)).astype(np.float32)


def _row_space_projector(A: np.ndarray) -> np.ndarray:
    """P = Aᵀ(AAᵀ)⁻¹A computed in float64, returned as float32."""
    A64 = A.astype(np.float64)
    P = A64.T @ np.linalg.solve(A64 @ A64.T, A64)
    return P.astype(np.float32)


def _blockdiag(M1: np.ndarray, M2: np.ndarray) -> np.ndarray:
    out = np.zeros((M1.shape[0] + M2.shape[0], M1.shape[1] + M2.shape[1]), M1.dtype)
    out[: M1.shape[0], : M1.shape[1]] = M1
    out[M1.shape[0]:, M1.shape[1]:] = M2
    return out


def _sq(x: tf.Tensor) -> tf.Tensor:
    """‖x‖² (reduce over all entries)."""
    return tf.reduce_sum(tf.square(x))


def _check_dims(name: str, p: int, q: int, r: int) -> None:
    for label, n in (("p", p), ("q", q), ("r", r)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{label} must be a positive integer, got {n!r}")
    if p != q:
        raise ValueError(f"{name} adds u1 and v1 element-wise: needs p == q, got p={p}, q={q}")
    if name in _MATRIX_EXAMPLES and r != p:
        raise ValueError(
            f"{name} applies the (ceil(p/2) × p) matrix A2 to the r-blocks: needs r == p, got p={p}, r={r}"
        )


# --------------------------------------------------------------------------- factory
def make_problem(
    name: str,
    *,
    rng: np.random.Generator,
    p: int = 10,
    q: int = 10,
    r: int = 10,
) -> SyntheticProblem:
    """Build synthetic example ``name`` (one of :data:`ALL_EXAMPLES`).

    Creates the flat variables u (p + r) and v (q + r) once (initialised by one call of
    :meth:`SyntheticProblem.initialize` with ``rng`` and std = 1, after the matrices are
    drawn); call ``initialize`` again for every trial. For SMD22/23/24, A1 then A2 are drawn
    from ``rng`` (shape (ceil(0.5·p), p), i.i.d. standard normal, float32) and
    P1, P2 = Aᵀ(AAᵀ)⁻¹A are computed in float64 and cast to float32.

    Raises:
        ValueError: unknown name; non-positive dims; p != q; r != p for SMD22/23/24.
    """
    if name not in ALL_EXAMPLES:
        raise ValueError(f"unknown synthetic example {name!r}; expected one of {ALL_EXAMPLES}")
    _check_dims(name, p, q, r)
    p, q, r = int(p), int(q), int(r)
    n_u, n_v = p + r, q + r

    u = tf.Variable(tf.zeros([n_u], tf.float32), name=f"{name}_u")
    v = tf.Variable(tf.zeros([n_v], tf.float32), name=f"{name}_v")

    A_np: Optional[np.ndarray] = None
    P_np: Optional[np.ndarray] = None
    if name in _MATRIX_EXAMPLES:
        p_ = int(math.ceil(0.5 * p))
        A1 = _draw_matrix(rng, p_, p)
        A2 = _draw_matrix(rng, p_, r)
        A_np = _blockdiag(A1, A2)
        P_np = _blockdiag(_row_space_projector(A1), _row_space_projector(A2))

    one = tf.constant(1.0, tf.float32)
    half = tf.constant(0.5, tf.float32)

    if name == "SMD20":

        def upper_loss(batch=None) -> tf.Tensor:
            """f = ‖u‖² + ‖v‖² − 1 (= ‖v1‖² + ‖v2‖² + ‖u1‖² + ‖u2‖² − 1)."""
            return _sq(v) + _sq(u) - one

        def lower_loss(batch=None) -> tf.Tensor:
            """g = ‖𝟙 − u − v‖² (= ‖𝟙 − u1 − v1‖² + ‖𝟙 − u2 − v2‖²)."""
            return _sq(one - u - v)

        def error() -> tf.Tensor:
            """err = sqrt(‖u − ½‖² + ‖v − ½‖²)."""
            return tf.sqrt(_sq(u - half) + _sq(v - half))

    elif name == "SMD21":

        def upper_loss(batch=None) -> tf.Tensor:
            """f = ‖v‖² − ‖u − v‖² (= ‖v1‖² + ‖v2‖² − (‖u1 − v1‖² + ‖u2 − v2‖²))."""
            return _sq(v) - _sq(u - v)

        def lower_loss(batch=None) -> tf.Tensor:
            """g = ‖u − v‖² (= ‖u1 − v1‖² + ‖u2 − v2‖²)."""
            return _sq(u - v)

        def error() -> tf.Tensor:
            """err = sqrt(‖u‖² + ‖v‖²)."""
            return tf.sqrt(_sq(u) + _sq(v))

    else:
        assert A_np is not None and P_np is not None
        B = tf.constant(A_np)  # blockdiag(A1, A2)
        Q = tf.constant(P_np)  # blockdiag(P1, P2)

        def _sqA(x: tf.Tensor) -> tf.Tensor:
            """‖Bx‖² = ‖A1x1‖² + ‖A2x2‖²."""
            return _sq(tf.linalg.matvec(B, x))

        def _sqP(x: tf.Tensor) -> tf.Tensor:
            """‖Qx‖² = ‖P1x1‖² + ‖P2x2‖²."""
            return _sq(tf.linalg.matvec(Q, x))

        if name == "SMD22":

            def upper_loss(batch=None) -> tf.Tensor:
                """f = ‖Bv‖² − ‖B(u − v)‖² (= ‖A1v1‖² + ‖A2v2‖² − (‖A1(u1−v1)‖² + ‖A2(u2−v2)‖²))."""
                return _sqA(v) - _sqA(u - v)

            def lower_loss(batch=None) -> tf.Tensor:
                """g = ‖B(u − v)‖² (= ‖A1(u1 − v1)‖² + ‖A2(u2 − v2)‖²)."""
                return _sqA(u - v)

            def error() -> tf.Tensor:
                """err = sqrt(‖Qu‖² + ‖Qv‖²) (= sqrt(‖P1u1‖² + ‖P2u2‖² + ‖P1v1‖² + ‖P2v2‖²))."""
                return tf.sqrt(_sqP(u) + _sqP(v))

        elif name == "SMD23":

            def upper_loss(batch=None) -> tf.Tensor:
                """f = ‖v‖² − ‖B(u − v)‖² (= ‖v1‖² + ‖v2‖² − (‖A1(u1−v1)‖² + ‖A2(u2−v2)‖²))."""
                return _sq(v) - _sqA(u - v)

            def lower_loss(batch=None) -> tf.Tensor:
                """g = ‖B(u − v)‖² (= ‖A1(u1 − v1)‖² + ‖A2(u2 − v2)‖²)."""
                return _sqA(u - v)

            def error() -> tf.Tensor:
                """err = sqrt(‖Qu‖² + ‖v‖²) (= sqrt(‖P1u1‖² + ‖P2u2‖² + ‖v1‖² + ‖v2‖²))."""
                return tf.sqrt(_sqP(u) + _sq(v))

        else:  # SMD24

            def upper_loss(batch=None) -> tf.Tensor:
                """f = ‖u‖² + ‖v‖² (= ‖u1‖² + ‖u2‖² + ‖v1‖² + ‖v2‖²)."""
                return _sq(u) + _sq(v)

            def lower_loss(batch=None) -> tf.Tensor:
                """g = ‖B(𝟙 − u − v)‖² (= ‖A1(𝟙 − u1 − v1)‖² + ‖A2(𝟙 − u2 − v2)‖²)."""
                return _sqA(one - u - v)

            def error() -> tf.Tensor:
                """err = sqrt(‖Q(u − ½)‖² + ‖Q(v − ½)‖²) (per block with P1, P2)."""
                return tf.sqrt(_sqP(u - half) + _sqP(v - half))

    problem = SyntheticProblem(
        name=name,
        dims=(p, q, r),
        u=u,
        v=v,
        upper_loss=upper_loss,
        lower_loss=lower_loss,
        error=error,
        centre=CENTRES[name],
        A=A_np,
        P=P_np,
    )
    problem.initialize(rng)
    return problem
