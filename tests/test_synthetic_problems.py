"""Tests for synthetic/problems.py (SMD20–SMD24, docs/original.md §2.2)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from synthetic.problems import (  # noqa: E402
    ALL_EXAMPLES,
    EXAMPLES,
    SyntheticProblem,
    make_problem,
)

P_, Q_, R_ = 10, 10, 10


@pytest.fixture(scope="module")
def problems():
    """One problem per example (building them is the slow part; reuse across tests)."""
    return {
        name: make_problem(name, rng=np.random.default_rng(100 + i), p=P_, q=Q_, r=R_)
        for i, name in enumerate(ALL_EXAMPLES)
    }


def _set(prob: SyntheticProblem, u, v):
    prob.u.assign(np.asarray(u, np.float32))
    prob.v.assign(np.asarray(v, np.float32))


def _null_vector(prob: SyntheticProblem, rng) -> np.ndarray:
    """A random vector in Null(blockdiag(A1, A2)) (float64)."""
    z = rng.standard_normal(prob.u.shape[0])
    P = prob.P.astype(np.float64)
    return z - P @ z


def test_example_lists():
    assert EXAMPLES == ("SMD20", "SMD21", "SMD24", "SMD23")
    assert set(ALL_EXAMPLES) == set(EXAMPLES) | {"SMD22"}


# --------------------------------------------------------------------------- numpy reference
def _ref_fg(name, A1, A2, u1, u2, v1, v2):
    """f, g written straight from docs/original.md §2.2 with four separate blocks (float64)."""
    one1, one2 = np.ones_like(u1), np.ones_like(u2)
    n = lambda x: float(np.sum(x**2))  # noqa: E731
    if name == "SMD20":
        f = n(v1) + n(v2) + n(u1) + n(u2) - 1.0
        g = n(one1 - u1 - v1) + n(one2 - u2 - v2)
    elif name == "SMD21":
        f = n(v1) + n(v2) - (n(u1 - v1) + n(u2 - v2))
        g = n(u1 - v1) + n(u2 - v2)
    elif name == "SMD22":
        f = n(A1 @ v1) + n(A2 @ v2) - (n(A1 @ (u1 - v1)) + n(A2 @ (u2 - v2)))
        g = n(A1 @ (u1 - v1)) + n(A2 @ (u2 - v2))
    elif name == "SMD23":
        f = n(v1) + n(v2) - (n(A1 @ (u1 - v1)) + n(A2 @ (u2 - v2)))
        g = n(A1 @ (u1 - v1)) + n(A2 @ (u2 - v2))
    elif name == "SMD24":
        f = n(u1) + n(u2) + n(v1) + n(v2)
        g = n(A1 @ (one1 - u1 - v1)) + n(A2 @ (one2 - u2 - v2))
    else:
        raise AssertionError(name)
    return f, g


def _ref_err(name, P1, P2, u1, u2, v1, v2):
    n = lambda x: float(np.sum(x**2))  # noqa: E731
    if name == "SMD20":
        e = n(u1 - 0.5) + n(u2 - 0.5) + n(v1 - 0.5) + n(v2 - 0.5)
    elif name == "SMD21":
        e = n(u1) + n(u2) + n(v1) + n(v2)
    elif name == "SMD22":
        e = n(P1 @ u1) + n(P2 @ u2) + n(P1 @ v1) + n(P2 @ v2)
    elif name == "SMD23":
        e = n(P1 @ u1) + n(P2 @ u2) + n(v1) + n(v2)
    elif name == "SMD24":
        e = n(P1 @ (u1 - 0.5)) + n(P2 @ (u2 - 0.5)) + n(P1 @ (v1 - 0.5)) + n(P2 @ (v2 - 0.5))
    else:
        raise AssertionError(name)
    return np.sqrt(e)


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_f_g_err_match_numpy_blocks(problems, name):
    prob = problems[name]
    rng = np.random.default_rng(7)
    A1 = A2 = P1 = P2 = None
    if prob.A is not None:
        # Independent reconstruction of the blocks from the stored block-diagonal matrix.
        p_ = int(np.ceil(0.5 * P_))
        assert prob.A.shape == (2 * p_, P_ + R_)
        assert prob.P.shape == (P_ + R_, P_ + R_)
        np.testing.assert_array_equal(prob.A[:p_, P_:], 0)
        np.testing.assert_array_equal(prob.A[p_:, :P_], 0)
        A1, A2 = prob.A[:p_, :P_].astype(np.float64), prob.A[p_:, P_:].astype(np.float64)
        P1, P2 = prob.P[:P_, :P_].astype(np.float64), prob.P[P_:, P_:].astype(np.float64)
        np.testing.assert_array_equal(prob.A1, prob.A[:p_, :P_])
        np.testing.assert_array_equal(prob.P2, prob.P[P_:, P_:])
    for _ in range(3):
        u = rng.uniform(-3, 3, P_ + R_).astype(np.float32)
        v = rng.uniform(-3, 3, Q_ + R_).astype(np.float32)
        _set(prob, u, v)
        u64, v64 = u.astype(np.float64), v.astype(np.float64)
        u1, u2, v1, v2 = u64[:P_], u64[P_:], v64[:Q_], v64[Q_:]
        f_ref, g_ref = _ref_fg(name, A1, A2, u1, u2, v1, v2)
        e_ref = _ref_err(name, P1, P2, u1, u2, v1, v2)
        f = prob.upper_loss(None)
        g = prob.lower_loss()
        e = prob.error()
        assert f.dtype == g.dtype == e.dtype == tf.float32
        assert f.shape == g.shape == e.shape == ()
        scale = 1.0 + abs(f_ref) + abs(g_ref)
        np.testing.assert_allclose(float(f), f_ref, rtol=0, atol=2e-5 * scale)
        np.testing.assert_allclose(float(g), g_ref, rtol=0, atol=2e-5 * scale)
        np.testing.assert_allclose(float(e), e_ref, rtol=2e-5, atol=1e-5)


def test_smd20_constant_and_smd21_sign(problems):
    """Spot values by hand: SMD20's −1 in f; SMD21's minus sign in f."""
    p20 = problems["SMD20"]
    _set(p20, np.zeros(20), np.zeros(20))
    assert float(p20.upper_loss()) == -1.0
    assert float(p20.lower_loss()) == 20.0
    p21 = problems["SMD21"]
    _set(p21, np.full(20, 2.0), np.ones(20))
    assert float(p21.upper_loss()) == 20.0 - 20.0
    _set(p21, np.full(20, 3.0), np.ones(20))
    assert float(p21.upper_loss()) == 20.0 - 80.0
    assert float(p21.lower_loss()) == 80.0


# --------------------------------------------------------------------------- optimum, lower solution
@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_err_zero_at_optimum(problems, name):
    prob = problems[name]
    u, v = prob.optimum_point()
    assert u.dtype == v.dtype == np.float32
    assert u.shape == (P_ + R_,) and v.shape == (Q_ + R_,)
    _set(prob, u, v)
    assert abs(float(prob.error())) < 1e-5
    # Away from the optimum err is clearly positive.
    _set(prob, u + 0.3, v)
    assert float(prob.error()) > 0.1


def test_known_optima():
    rng = np.random.default_rng(3)
    p20 = make_problem("SMD20", rng=rng)
    np.testing.assert_array_equal(p20.optimum_point()[0], 0.5)
    p24 = make_problem("SMD24", rng=rng)
    u, v = p24.optimum_point()
    np.testing.assert_allclose(u, 0.5 * p24.P.astype(np.float64) @ np.ones(20), atol=1e-6)
    np.testing.assert_allclose(u, v)
    # u = v = ½P𝟙 lies on the lower solution set (g = 0) with f = ‖u‖² + ‖v‖² = ½‖P𝟙‖².
    _set(p24, u, v)
    assert float(p24.lower_loss()) < 1e-8
    Pone = p24.P.astype(np.float64) @ np.ones(20)
    np.testing.assert_allclose(float(p24.upper_loss()), 0.5 * Pone @ Pone, rtol=1e-5)


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_lower_gradient_zero_at_lower_solution(problems, name):
    prob = problems[name]
    rng = np.random.default_rng(11)
    u = rng.uniform(-2, 2, P_ + R_)
    if name == "SMD20":
        v = 1.0 - u
    elif name == "SMD21":
        v = u.copy()
    elif name in ("SMD22", "SMD23"):
        v = u + _null_vector(prob, rng)
    else:  # SMD24
        v = 1.0 - u + _null_vector(prob, rng)
    _set(prob, u, v)
    with tf.GradientTape() as tape:
        g = prob.lower_loss()
    grad = tape.gradient(g, prob.v).numpy()
    assert abs(float(g)) < 1e-4
    np.testing.assert_allclose(grad, 0.0, atol=1e-4)
    # ...and not zero away from it.
    _set(prob, u, v + 0.5 * rng.standard_normal(v.shape))
    with tf.GradientTape() as tape:
        g = prob.lower_loss()
    assert np.linalg.norm(tape.gradient(g, prob.v).numpy()) > 1e-2


@pytest.mark.parametrize("name", ["SMD22", "SMD23", "SMD24"])
def test_err_insensitive_to_null_space(problems, name):
    prob = problems[name]
    rng = np.random.default_rng(5)
    u0, v0 = prob.optimum_point()
    nu = _null_vector(prob, rng)
    v_shift = _null_vector(prob, rng) if name != "SMD23" else 0.0  # SMD23 err contains ‖v‖²
    _set(prob, u0 + nu, v0 + v_shift)
    assert abs(float(prob.error())) < 1e-5


def test_gradients_flat_equal_blocks(problems):
    """Autodiff gradients wrt the flat u, v equal the analytic block gradients (SMD23)."""
    prob = problems["SMD23"]
    rng = np.random.default_rng(9)
    u = rng.standard_normal(20)
    v = rng.standard_normal(20)
    _set(prob, u, v)
    B = prob.A.astype(np.float64)
    u, v = u.astype(np.float32).astype(np.float64), v.astype(np.float32).astype(np.float64)
    with tf.GradientTape(persistent=True) as tape:
        f = prob.upper_loss()
        g = prob.lower_loss()
    fu, fv = tape.gradient(f, [prob.u, prob.v])
    gv = tape.gradient(g, prob.v)
    r = B.T @ B @ (u - v)
    np.testing.assert_allclose(fu.numpy(), -2 * r, atol=1e-4)
    np.testing.assert_allclose(fv.numpy(), 2 * v + 2 * r, atol=1e-4)
    np.testing.assert_allclose(gv.numpy(), -2 * r, atol=1e-4)


# --------------------------------------------------------------------------- matrices
@pytest.mark.parametrize("name", ["SMD22", "SMD23", "SMD24"])
def test_projector(problems, name):
    prob = problems[name]
    P = prob.P.astype(np.float64)
    A = prob.A.astype(np.float64)
    assert prob.P.dtype == prob.A.dtype == np.float32
    assert A.shape == (10, 20)
    np.testing.assert_allclose(P @ P, P, atol=1e-5)
    np.testing.assert_allclose(P, P.T, atol=1e-6)
    np.testing.assert_allclose(P @ A.T, A.T, atol=1e-5)
    assert np.isclose(np.trace(P), 10.0, atol=1e-4)  # rank 5 per block
    for Pk, Ak in ((prob.P1, prob.A1), (prob.P2, prob.A2)):
        assert Ak.shape == (5, 10) and Pk.shape == (10, 10)
        np.testing.assert_allclose(Pk.astype(np.float64) @ Ak.T, Ak.T, atol=1e-5)


def test_no_matrices_for_smd20_21(problems):
    for name in ("SMD20", "SMD21"):
        assert problems[name].A is None and problems[name].P is None
        assert problems[name].A1 is None and problems[name].P2 is None


def test_matrices_seeded():
    a = make_problem("SMD23", rng=np.random.default_rng(42))
    b = make_problem("SMD23", rng=np.random.default_rng(42))
    c = make_problem("SMD23", rng=np.random.default_rng(43))
    np.testing.assert_array_equal(a.A, b.A)
    assert not np.array_equal(a.A, c.A)
    # A1 then A2 drawn from rng as float32 standard normals.
    ref = np.random.default_rng(42)
    np.testing.assert_array_equal(a.A1, ref.standard_normal((5, 10)).astype(np.float32))
    np.testing.assert_array_equal(a.A2, ref.standard_normal((5, 10)).astype(np.float32))


# --------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_initialize(problems, name):
    prob = problems[name]
    assert prob.lower_bound == -5.0 and prob.upper_bound == 5.0
    u_var_id, v_var_id = id(prob.u), id(prob.v)
    rng = np.random.default_rng(0)
    us, vs = [], []
    for _ in range(200):
        u0, v0 = prob.initialize(rng)
        us.append(prob.u.numpy())
        vs.append(prob.v.numpy())
        np.testing.assert_array_equal(us[-1], u0)
    # Same variables are re-assigned, never re-created.
    assert id(prob.u) == u_var_id and id(prob.v) == v_var_id
    x = np.concatenate([np.stack(us), np.stack(vs)], axis=1)  # 200 × 40
    assert x.min() >= -5.0 and x.max() <= 5.0
    assert x.min() < -4.9 and x.max() > 4.9  # fills the box
    # Uniform[−5, 5]: mean 0 (the centre does not matter for std = 1), s.d. 10/sqrt(12).
    assert abs(x.mean()) < 0.1  # s.e. of the mean ≈ 2.9/sqrt(8000) ≈ 0.03
    assert abs(x.std() - 10 / np.sqrt(12)) < 0.1
    # Reproducible.
    a = prob.initialize(np.random.default_rng(123))
    b = prob.initialize(np.random.default_rng(123))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = prob.initialize(np.random.default_rng(124))
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("name,centre", [("SMD20", 0.5), ("SMD24", 0.5), ("SMD21", 0.0), ("SMD23", 0.0)])
@pytest.mark.parametrize("std", [0.1, 0.01])
def test_initialize_centre_with_small_std(problems, name, centre, std):
    """Uniform[c + std·(lb − c), c + std·(ub − c)]: the box shrinks towards the centre c.

    Its midpoint is c·(1 − std) (lb + ub = 0), so the mean is 0 for std = 1 whatever c is and
    approaches c as std → 0.
    """
    prob = problems[name]
    assert prob.centre == centre
    rng = np.random.default_rng(1)
    x = np.concatenate([np.concatenate(prob.initialize(rng, std=std)) for _ in range(200)]).astype(np.float64)
    lo, hi = centre + std * (-5 - centre), centre + std * (5 - centre)
    assert x.min() >= lo - 1e-6 and x.max() <= hi + 1e-6
    assert x.min() < lo + 0.01 * (hi - lo) and x.max() > hi - 0.01 * (hi - lo)
    half_width = 0.5 * (hi - lo)
    assert abs(x.mean() - centre * (1 - std)) < 0.05 * half_width  # s.e. ≈ 0.0065·half_width
    assert abs(x.mean() - centre) < 0.01 + 0.05 * half_width + centre * std


def test_tf_function_reuse_across_initialize(problems):
    """A tf.function closing over the variables is traced once and sees re-initialised values."""
    prob = problems["SMD20"]
    traces = []

    @tf.function
    def fg():
        traces.append(1)
        return prob.upper_loss(None), prob.lower_loss(None)

    for seed in range(3):
        u0, v0 = prob.initialize(np.random.default_rng(seed))
        f, g = fg()
        np.testing.assert_allclose(float(f), np.sum(u0.astype(np.float64) ** 2) + np.sum(v0.astype(np.float64) ** 2) - 1, rtol=1e-5)
        np.testing.assert_allclose(float(g), np.sum((1.0 - u0.astype(np.float64) - v0) ** 2), rtol=1e-5)
    assert len(traces) == 1


# --------------------------------------------------------------------------- validation
def test_variables_and_dims():
    prob = make_problem("SMD21", rng=np.random.default_rng(0), p=4, q=4, r=7)
    assert prob.dims == (4, 4, 7)
    assert prob.u.shape == (11,) and prob.v.shape == (11,)
    assert prob.u.dtype == tf.float32 and prob.v.dtype == tf.float32
    assert prob.upper_vars == [prob.u] and prob.lower_vars == [prob.v]
    p = make_problem("SMD24", rng=np.random.default_rng(0), p=7, q=7, r=7)
    assert p.A.shape == (8, 14)  # p_ = ceil(3.5) = 4 rows per block


def test_bilevel_problem_has_the_box_on_both_levels():
    prob = make_problem("SMD23", rng=np.random.default_rng(0), p=4, q=4, r=4)
    bilevel = prob.bilevel()
    assert bilevel.upper_vars == [prob.u] and bilevel.lower_vars == [prob.v]
    assert bilevel.upper_loss is prob.upper_loss and bilevel.lower_loss is prob.lower_loss
    assert bilevel.upper_bounds == bilevel.lower_bounds == (-5.0, 5.0)


@pytest.mark.parametrize(
    "name,p,q,r",
    [
        ("SMD20", 10, 9, 10),  # p != q
        ("SMD21", 5, 6, 5),
        ("SMD23", 10, 10, 8),  # r != p with matrices
        ("SMD24", 10, 10, 12),
        ("SMD22", 10, 10, 9),
        ("SMD20", 0, 0, 10),  # non-positive
        ("SMD20", 10, 10, -1),
        ("SMD20", 2.5, 2.5, 10),  # non-integer
        ("SMD25", 10, 10, 10),  # unknown
    ],
)
def test_make_problem_validates(name, p, q, r):
    with pytest.raises(ValueError):
        make_problem(name, rng=np.random.default_rng(0), p=p, q=q, r=r)
