"""Exact one- and two-step tests of every solver against an independent float64 NumPy model.

Each test runs `step()` of a solver twice on a small bilevel problem with plain SGD
(`keras.optimizers.SGD`, one per variable group), T = 3 lower steps and every term of the
update switched on, and compares after EACH step: u, v, the solver's state (Penalty's nu,
rho, lambda, eps; ApproxGrad's p; every learning rate) and every entry of the returned dict
with a NumPy re-implementation of the update written from docs/original.md §1. The
reference uses hand-written gradients and Hessians (no autodiff, no penalty_tf code).

The problem (u = (ua in R^2, ub in R^1), v = (W in R^{2x2}, c in R^2); x = vec u, y = vec v):

    g(u, v) = 1/2 y'Ay - y'Bx + 1/2 x'Cx + k/2 x_0 ||y||^2 + s/12 sum(y^4)
    f(u, v) = 1/2 ||Dy - e||^2 + 1/2 x'Ex + x'Fy

so f depends on u directly and through v, H_uv = -B' + k e_0 y' depends on v, and
H_vv = A + k x_0 I + s diag(y^2) depends on u and v (which RMD's reverse pass needs).

Tolerances: the solvers run in float32, the reference in float64; every comparison uses
``rtol = 1e-5, atol = 1e-6`` (RTOL, ATOL).
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from penalty_tf.optimizers import schedule_owned
from penalty_tf.solvers import GD, RMD, ApproxGrad, Penalty, PenaltySchedule

RTOL, ATOL = 1e-5, 1e-6
T = 3                      # lower steps per iteration
LINEAR_STEPS = 2           # ApproxGrad p-steps (differs from T on purpose)
SIG = 0.3                  # ApproxGrad's sigma, large so that its sign matters
LR_U, LR_V, LR_P = [0.05, 0.03], [0.04, 0.025], [0.02, 0.03]   # per group (group 0, 1)
RMD_LR_U, RMD_LR_V = 0.1, 0.08

#: Flat coordinates of each variable in x = vec u and y = vec v.
SLICES = {"ua": slice(0, 2), "ub": slice(2, 3), "W": slice(0, 4), "c": slice(4, 6)}
SHAPES = {"ua": (2,), "ub": (1,), "W": (2, 2), "c": (2,)}
#: Variable groups (upper, lower) of each layout; "single" passes flat lists (one group).
LAYOUTS = {"single": ([["ua", "ub"]], [["W", "c"]]),
           "multi2x2": ([["ua"], ["ub"]], [["W"], ["c"]]),
           "multi1x2": ([["ua", "ub"]], [["W"], ["c"]])}
X0 = np.array([0.4, -0.3, 0.5])
X0_UPPER_BOX = np.array([0.4, 0.3, 0.5])   # start of the upper-box tests: x_1 leaves the box
Y0 = np.array([0.01, 0.22, -0.18, 0.22, -0.09, -0.04])


# ------------------------------------------------------------------ the problem in NumPy


class Problem:
    """Constants of f and g (float64) and their hand-written derivatives.

    ``coupling`` scales the block of A that couples W and c; with 0 the lower problem is
    separable over the groups [W], [c] (needed for ApproxGrad's per-group linear systems,
    which the original solved block by block).
    """

    k, s = 0.6, 0.5

    def __init__(self, coupling=0.5, seed=0):
        rng = np.random.default_rng(seed)
        q = rng.normal(size=(6, 6))
        a = q @ q.T / 6 + np.eye(6)
        a[:4, 4:] *= coupling
        a[4:, :4] *= coupling
        self.A = a
        self.B = 0.7 * rng.normal(size=(6, 3))
        q = rng.normal(size=(3, 3))
        self.C = q @ q.T / 3 + np.eye(3)
        self.D = rng.normal(size=(5, 6)) / np.sqrt(6)
        self.e = rng.normal(size=5)
        q = rng.normal(size=(3, 3))
        self.E = q @ q.T / 3 + 0.5 * np.eye(3)
        self.F = 0.5 * rng.normal(size=(3, 6))

    def g(self, x, y):
        return (0.5 * y @ self.A @ y - y @ self.B @ x + 0.5 * x @ self.C @ x
                + 0.5 * self.k * x[0] * y @ y + self.s / 12 * np.sum(y ** 4))

    def f(self, x, y):
        r = self.D @ y - self.e
        return 0.5 * r @ r + 0.5 * x @ self.E @ x + x @ self.F @ y

    def G(self, x, y):
        """grad_v g."""
        return self.A @ y - self.B @ x + self.k * x[0] * y + self.s / 3 * y ** 3

    def f_u(self, x, y):
        return self.E @ x + self.F @ y

    def f_v(self, x, y):
        return self.D.T @ (self.D @ y - self.e) + self.F.T @ x

    def h_vv(self, x, y):
        return self.A + self.k * x[0] * np.eye(6) + self.s * np.diag(y ** 2)

    def h_uv(self, x, y):
        """d^2 g / du dv as a (3, 6) matrix: H_uv q = h_uv @ q."""
        out = -self.B.T.copy()
        out[0] += self.k * y
        return out

    # -- the same functions in TensorFlow, on the variables of `make_variables`
    def tf_losses(self, var):
        c = {name: tf.constant(getattr(self, name), tf.float32) for name in "ABCDEF"}
        e = tf.constant(self.e, tf.float32)

        def xy():
            x = tf.concat([var["ua"], var["ub"]], 0)
            y = tf.concat([tf.reshape(var["W"], [-1]), var["c"]], 0)
            return x, y

        def mv(m, z):
            return tf.linalg.matvec(m, z)

        def g(batch=None):
            x, y = xy()
            return (0.5 * tf.reduce_sum(y * mv(c["A"], y)) - tf.reduce_sum(y * mv(c["B"], x))
                    + 0.5 * tf.reduce_sum(x * mv(c["C"], x)) + 0.5 * self.k * x[0] * tf.reduce_sum(y * y)
                    + self.s / 12 * tf.reduce_sum(y ** 4))

        def f(batch=None):
            x, y = xy()
            r = mv(c["D"], y) - e
            return (0.5 * tf.reduce_sum(r * r) + 0.5 * tf.reduce_sum(x * mv(c["E"], x))
                    + tf.reduce_sum(x * mv(c["F"], y)))

        return f, g


def make_variables(x, y):
    """tf.Variables ua, ub, W, c holding x = vec u and y = vec v."""
    flat = {"ua": x, "ub": x, "W": y, "c": y}
    return {name: tf.Variable(np.reshape(flat[name][SLICES[name]], SHAPES[name]).astype(np.float32),
                              name=name) for name in SHAPES}


def flat(var, names):
    return np.concatenate([np.reshape(var[n].numpy(), [-1]) for n in names]).astype(np.float64)


def specs(var, layout):
    """(upper_vars, lower_vars) in the form the solvers take for ``layout``."""
    upper, lower = LAYOUTS[layout]
    if layout == "single":
        return [var[n] for n in upper[0]], [var[n] for n in lower[0]]
    return [[var[n] for n in grp] for grp in upper], [[var[n] for n in grp] for grp in lower]


def sgd(lrs):
    """Plain SGD per group, marked `schedule_owned`: Penalty's schedule decays their
    learning rates as the original decays every optimizer's."""
    return [schedule_owned(keras.optimizers.SGD(lr)) for lr in lrs]


def coordinate_lrs(groups, lrs, size):
    """The learning rate of every flat coordinate (each group's variables get its rate)."""
    out = np.zeros(size)
    for grp, lr in zip(groups, lrs):
        for name in grp:
            out[SLICES[name]] = lr
    return out


def group_mask(groups, chosen, size):
    """1 on the flat coordinates of the groups with index in ``chosen``, else 0."""
    out = np.zeros(size)
    for j in chosen:
        for name in groups[j]:
            out[SLICES[name]] = 1.0
    return out


@dataclasses.dataclass
class Box:
    """Clip to [low, high] (or nothing) and record at which updates it was active."""

    low: float = -np.inf
    high: float = np.inf

    def __post_init__(self):
        self.active = []

    def __call__(self, z, label):
        out = np.clip(z, self.low, self.high)
        if np.any(out != z):
            self.active.append(label)
        return out

    def spec(self):
        return None if np.isinf(self.high) else (self.low, self.high)


LOWER_BOX, UPPER_BOX = (-0.25, 0.26), (0.27, 0.6)


def start(bounds):
    """(x0, y0) of a test with ``bounds`` (both inside the box)."""
    return (X0_UPPER_BOX if bounds == "upper" else X0).copy(), Y0.copy()


def boxes(bounds):
    """(upper Box, lower Box) for bounds None, "lower" or "upper"."""
    return (Box(*UPPER_BOX) if bounds == "upper" else Box(),
            Box(*LOWER_BOX) if bounds == "lower" else Box())


def close(actual, expected, what):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=RTOL, atol=ATOL,
                               err_msg=what)


# ------------------------------------------------------------------ reference: Penalty


@dataclasses.dataclass
class Factors:
    """What the schedule variant must do, written here independently of PenaltySchedule."""

    rho0: float
    lamb0: float
    nu0: float
    c_rho: float
    c_lamb: float
    c_eps: float
    lr_decay: float


def penalty_reference(prob, st, layout, factors, box_u, box_v):
    """One Penalty iteration on the NumPy state dict ``st`` (updated in place); returns
    the expected output dict."""
    up, low = LAYOUTS[layout]
    x, y, nu, rho, lamb = st["x"], st["y"], st["nu"], st["rho"], st["lamb"]
    lr_x, lr_y = coordinate_lrs(up, st["lr_u"], 3), coordinate_lrs(low, st["lr_v"], 6)

    def directions(x, y):
        G = prob.G(x, y)
        w = nu + rho * G
        d_u = prob.f_u(x, y) + prob.h_uv(x, y) @ w
        d_v = prob.f_v(x, y) + prob.h_vv(x, y) @ w + lamb * G
        return d_u, d_v, G

    for t in range(T):
        y = box_v(y - lr_y * directions(x, y)[1], f"lower step {t}")
    x = box_u(x - lr_x * directions(x, y)[0], "upper step")
    d_u, d_v, G = directions(x, y)
    hu, hv = d_u @ d_u, d_v @ d_v
    out = {"f": prob.f(x, y), "g": prob.g(x, y), "penalty": 0.5 * rho * G @ G,
           "nu_term": nu @ G, "lamb_g": lamb * prob.g(x, y), "hu": hu, "hv": hv,
           "converged": hu ** 2 + hv ** 2 < st["eps"] ** 2}
    out["h_upper"] = out["f"] + out["nu_term"] + out["penalty"]
    out["h_lower"] = out["h_upper"] + out["lamb_g"]
    st.update(x=x, y=y, q=hu ** 2 + hv ** 2)
    if out["converged"]:
        st["rho"] = rho * factors.c_rho
        st["lamb"] = lamb * factors.c_lamb
        st["eps"] = st["eps"] * factors.c_eps
        st["nu"] = nu + st["rho"] * G
        st["lr_u"] = [lr * factors.lr_decay for lr in st["lr_u"]]
        st["lr_v"] = [lr * factors.lr_decay for lr in st["lr_v"]]
    out.update(rho=st["rho"], lamb=st["lamb"], eps=st["eps"])
    return out


def penalty_initial(layout, factors, eps0, bounds):
    up, low = LAYOUTS[layout]
    x0, y0 = start(bounds)
    return {"x": x0, "y": y0, "nu": np.full(6, factors.nu0), "rho": factors.rho0,
            "lamb": factors.lamb0, "eps": eps0, "lr_u": LR_U[:len(up)], "lr_v": LR_V[:len(low)]}


def run_penalty_reference(prob, layout, factors, eps0, bounds):
    st = penalty_initial(layout, factors, eps0, bounds)
    box_u, box_v = boxes(bounds)
    outs, states = [], []
    for _ in range(2):
        outs.append(penalty_reference(prob, st, layout, factors, box_u, box_v))
        states.append(dict(st))
    return outs, states, box_u, box_v


def choose_eps0(prob, layout, factors, pattern, bounds, margin=1.3):
    """eps0 such that the tolerance test (hu^2 + hv^2 < eps^2) gives ``pattern`` in the two
    steps ("fail-pass" or "pass-fail"), each decision at least ``margin`` away from the
    threshold (so float32 cannot flip it)."""
    if pattern == "fail-pass":
        _, states, _, _ = run_penalty_reference(prob, layout, factors, 0.0, bounds)
        q1, q2 = states[0]["q"], states[1]["q"]
        assert q1 > margin ** 2 * q2, "problem does not allow fail-then-pass"
        return (q1 * q2) ** 0.25
    _, states, _, _ = run_penalty_reference(prob, layout, factors, 1e30, bounds)
    q1, q2 = states[0]["q"], states[1]["q"] / factors.c_eps ** 2
    assert q2 > margin ** 2 * q1, "problem does not allow pass-then-fail"
    return (q1 * q2) ** 0.25


SCHEDULES = {
    # variant: (factory(eps0) -> PenaltySchedule, the factors it must apply)
    "single_group": (lambda eps0: PenaltySchedule.single_group(
        rho0=0.8, lamb0=0.5, eps0=eps0, nu0=0.05, c_rho=1.3, c_lamb=0.7, c_eps=0.4, lr_decay=0.8),
        Factors(0.8, 0.5, 0.05, 1.3, 0.7, 0.4, 0.8)),
    "multi_group": (lambda eps0: PenaltySchedule.multi_group(
        rho0=0.8, lamb0=0.5, eps0=eps0, nu0=0.05, c_rho=1.3, c_lamb=0.7, c_eps=0.4),
        Factors(0.8, 0.5, 0.05, 1.3, 0.7, 0.4, 0.99)),
    "synthetic": (lambda eps0: PenaltySchedule.synthetic(rho0=0.8, lamb0=0.5, eps0=eps0, c_rho=2.0),
                  Factors(0.8, 0.5, 0.0, 2.0, 0.5, 0.5, 0.5)),
}


def check_penalty(solver, var, out, ref_out, st, step):
    """Compare the solver's variables, state and outputs after ``step`` with the reference."""
    where = f"after step {step}"
    close(flat(var, ["ua", "ub"]), st["x"], f"u {where}")
    close(flat(var, ["W", "c"]), st["y"], f"v {where}")
    nu = np.concatenate([np.reshape(n.numpy(), [-1]) for n in solver.nu])
    close(nu, st["nu"], f"nu {where}")
    state = solver.state()
    for key in ("rho", "lamb", "eps"):
        close(state[key], st[key], f"{key} {where}")
    close(state["lr_upper"], st["lr_u"], f"upper learning rates {where}")
    close(state["lr_lower"], st["lr_v"], f"lower learning rates {where}")
    assert bool(out["converged"]) == ref_out["converged"], f"converged {where}"
    assert int(out["status"]) == 0
    for key, value in ref_out.items():
        if key != "converged":
            close(float(out[key]), value, f"out[{key!r}] {where}")


def penalty_case(layout, variant, pattern, bounds=None, jit_compile=False, coupling=0.5):
    prob = Problem(coupling)
    factory, factors = SCHEDULES[variant]
    eps0 = choose_eps0(prob, layout, factors, pattern, bounds)
    ref_outs, ref_states, box_u, box_v = run_penalty_reference(prob, layout, factors, eps0, bounds)
    assert [o["converged"] for o in ref_outs] == [pattern == "pass-fail", pattern == "fail-pass"]
    var = make_variables(*start(bounds))
    f, g = prob.tf_losses(var)
    upper, lower = specs(var, layout)
    up, low = LAYOUTS[layout]
    solver = Penalty(f, g, upper, lower, upper_optimizer=sgd(LR_U[:len(up)]),
                     lower_optimizer=sgd(LR_V[:len(low)]), schedule=factory(eps0),
                     upper_bounds=box_u.spec(), lower_bounds=box_v.spec(), jit_compile=jit_compile)
    for step, (ref_out, st) in enumerate(zip(ref_outs, ref_states), 1):
        out = solver.step(lower_steps=T)
        check_penalty(solver, var, out, ref_out, st, step)
    return box_u, box_v


@pytest.mark.parametrize("pattern", ["fail-pass", "pass-fail"])
@pytest.mark.parametrize("layout", ["single", "multi2x2", "multi1x2"])
def test_penalty_two_steps_match_numpy(layout, pattern):
    """T steps on h_lower, one on h_upper, the fourth-power test, the schedule (both ways)."""
    penalty_case(layout, "multi_group" if layout.startswith("multi") else "single_group", pattern)


@pytest.mark.parametrize("variant, pattern", [("single_group", "fail-pass"), ("multi_group", "pass-fail"),
                                              ("synthetic", "fail-pass"), ("synthetic", "pass-fail")])
def test_penalty_schedule_variants_match_numpy(variant, pattern):
    """single_group / multi_group / synthetic apply their own factors (nu_0 = 0 for synthetic)."""
    penalty_case("single", variant, pattern)


@pytest.mark.parametrize("bounds", ["lower", "upper"])
def test_penalty_projection_after_every_update(bounds):
    """The box is applied after every update: also inside the T lower steps."""
    box_u, box_v = penalty_case("multi2x2", "multi_group", "fail-pass", bounds=bounds)
    active = box_v.active if bounds == "lower" else box_u.active
    if bounds == "lower":   # clipped before the last lower step: later steps start from it
        assert {"lower step 0", "lower step 1"} & set(active), active
    else:                   # clipped in step 1: step 2 starts from the clipped u
        assert len(active) >= 1, active


def test_penalty_xla_matches_numpy():
    penalty_case("multi2x2", "multi_group", "pass-fail", jit_compile=True)


# ------------------------------------------------------------------ reference: ApproxGrad


def approxgrad_reference(prob, st, layout, correction, linear_steps, box_u, box_v):
    """One ApproxGrad iteration on ``st`` (in place); returns the expected f, g, h."""
    up, low = LAYOUTS[layout]
    x, y, p = st["x"], st["y"], st["p"]
    lr_x, lr_y = coordinate_lrs(up, LR_U, 3), coordinate_lrs(low, LR_V, 6)
    lr_p = coordinate_lrs(low, LR_P, 6)
    for t in range(T):
        y = box_v(y - lr_y * prob.G(x, y), f"lower step {t}")
    f_v = prob.f_v(x, y)
    m = prob.h_vv(x, y) + SIG * np.eye(6)
    for _ in range(linear_steps):
        r = m @ p - f_v
        p = p - lr_p * 2.0 * m @ r
    grad_u = np.zeros(3)
    for i, grp in enumerate(up):
        chosen = range(len(low)) if correction == "all" else [j for j in [i] if j < len(low)]
        full = prob.f_u(x, y) - prob.h_uv(x, y) @ (group_mask(low, chosen, 6) * p)
        for name in grp:
            grad_u[SLICES[name]] = full[SLICES[name]]
    x = box_u(x - lr_x * grad_u, "upper step")
    r = (prob.h_vv(x, y) + SIG * np.eye(6)) @ p - prob.f_v(x, y)
    st.update(x=x, y=y, p=p)
    return {"f": prob.f(x, y), "g": prob.g(x, y), "h": r @ r}


def approxgrad_case(layout, correction="indexed", linear_steps=LINEAR_STEPS, extra=False,
                    bounds=None):
    prob = Problem(coupling=0.5 if layout == "single" else 0.0)
    up, low = LAYOUTS[layout]
    var = make_variables(*start(bounds))
    f, g = prob.tf_losses(var)
    upper, lower = specs(var, layout)
    box_u, box_v = boxes(bounds)
    solver = ApproxGrad(f, g, upper, lower, upper_optimizer=sgd(LR_U[:len(up)]),
                        lower_optimizer=sgd(LR_V[:len(low)]), linear_optimizer=sgd(LR_P[:len(low)]),
                        sig=SIG, extra_linear_step=extra, correction=correction,
                        upper_bounds=box_u.spec(), lower_bounds=box_v.spec())
    n_linear = (T if linear_steps is None else linear_steps) + int(extra)
    st = dict(zip("xy", start(bounds)), p=np.zeros(6))
    for step in (1, 2):
        ref = approxgrad_reference(prob, st, layout, correction, n_linear, box_u, box_v)
        out = solver.step(lower_steps=T, linear_steps=linear_steps)
        close(flat(var, ["ua", "ub"]), st["x"], f"u after step {step}")
        close(flat(var, ["W", "c"]), st["y"], f"v after step {step}")
        close(np.concatenate([np.reshape(p.numpy(), [-1]) for p in solver.linear.variables]),
              st["p"], f"p after step {step}")
        for key, value in ref.items():
            close(float(out[key]), value, f"out[{key!r}] after step {step}")
        assert int(out["status"]) == 0
    assert solver.upper.learning_rates() == pytest.approx(LR_U[:len(up)], rel=1e-7)   # never decayed
    assert solver.lower.learning_rates() == pytest.approx(LR_V[:len(low)], rel=1e-7)
    assert solver.linear.learning_rates() == pytest.approx(LR_P[:len(low)], rel=1e-7)
    return box_u, box_v


@pytest.mark.parametrize("layout, correction", [("single", "indexed"), ("multi2x2", "indexed"),
                                                ("multi2x2", "all"), ("multi1x2", "indexed"),
                                                ("multi1x2", "all")])
def test_approxgrad_two_steps_match_numpy(layout, correction):
    """T g-steps, LINEAR_STEPS p-steps on ||(H + sig I)p - f_v||^2, the surrogate u-step."""
    approxgrad_case(layout, correction)


@pytest.mark.parametrize("linear_steps, extra", [(None, False), (LINEAR_STEPS, True)])
def test_approxgrad_linear_step_count(linear_steps, extra):
    """linear_steps=None means T p-steps; extra_linear_step adds one (synthetic quirk)."""
    approxgrad_case("single", linear_steps=linear_steps, extra=extra)


@pytest.mark.parametrize("bounds", ["lower", "upper"])
def test_approxgrad_projection_after_every_update(bounds):
    box_u, box_v = approxgrad_case("multi2x2", "all", bounds=bounds)
    active = box_v.active if bounds == "lower" else box_u.active
    assert ({"lower step 0", "lower step 1"} & set(active)) if bounds == "lower" else len(active) >= 1, active


# ------------------------------------------------------------------ reference: RMD and GD


def rmd_reference(prob, st, exact, box_u, box_v):
    """One RMD iteration: plain GD forward, reverse pass over v_{T-1} ... v_1 (v_0 if exact)."""
    x, y = st["x"], st["y"]
    iterates = [y]
    for t in range(T):
        y = box_v(y - RMD_LR_V * prob.G(x, y), f"lower step {t}")
        iterates.append(y)
    p, q = prob.f_u(x, y), prob.f_v(x, y)
    for s in range(T - 1, -1 if exact else 0, -1):
        at = iterates[s]
        p, q = p - RMD_LR_V * prob.h_uv(x, at) @ q, q - RMD_LR_V * prob.h_vv(x, at) @ q
    x = box_u(x - RMD_LR_U * p, "upper step")
    st.update(x=x, y=y)
    return {"f": prob.f(x, y), "g": prob.g(x, y)}


def gd_reference(prob, st, layout, box_u, box_v):
    """T SGD steps on g w.r.t. v, then one on f w.r.t. u (partial gradient)."""
    up, low = LAYOUTS[layout]
    x, y = st["x"], st["y"]
    for t in range(T):
        y = box_v(y - coordinate_lrs(low, LR_V, 6) * prob.G(x, y), f"lower step {t}")
    x = box_u(x - coordinate_lrs(up, LR_U, 3) * prob.f_u(x, y), "upper step")
    st.update(x=x, y=y)
    return {"f": prob.f(x, y), "g": prob.g(x, y)}


def simple_case(cls, layout, bounds=None, exact=False):
    """RMD or GD: two steps compared with their reference."""
    prob = Problem()
    up, low = LAYOUTS[layout]
    var = make_variables(*start(bounds))
    f, g = prob.tf_losses(var)
    upper, lower = specs(var, layout)
    box_u, box_v = boxes(bounds)
    kwargs = dict(upper_bounds=box_u.spec(), lower_bounds=box_v.spec())
    if cls is RMD:
        solver = RMD(f, g, upper, lower, upper_lr=RMD_LR_U, lower_lr=RMD_LR_V, exact=exact, **kwargs)
    else:
        solver = GD(f, g, upper, lower, upper_optimizer=sgd(LR_U[:len(up)]),
                    lower_optimizer=sgd(LR_V[:len(low)]), **kwargs)
    st = dict(zip("xy", start(bounds)))
    for step in (1, 2):
        ref = (rmd_reference(prob, st, exact, box_u, box_v) if cls is RMD
               else gd_reference(prob, st, layout, box_u, box_v))
        out = solver.step(lower_steps=T)
        close(flat(var, ["ua", "ub"]), st["x"], f"u after step {step}")
        close(flat(var, ["W", "c"]), st["y"], f"v after step {step}")
        for key, value in ref.items():
            close(float(out[key]), value, f"out[{key!r}] after step {step}")
        assert int(out["status"]) == 0
    if cls is GD:
        assert solver.upper.learning_rates() == pytest.approx(LR_U[:len(up)], rel=1e-7)
        assert solver.lower.learning_rates() == pytest.approx(LR_V[:len(low)], rel=1e-7)
    return box_u, box_v


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("layout", ["single", "multi2x2"])
def test_rmd_two_steps_match_numpy(layout, exact):
    simple_case(RMD, layout, exact=exact)


@pytest.mark.parametrize("layout", ["single", "multi2x2"])
def test_gd_two_steps_match_numpy(layout):
    simple_case(GD, layout)


@pytest.mark.parametrize("cls", [RMD, GD])
@pytest.mark.parametrize("bounds", ["lower", "upper"])
def test_rmd_gd_projection_after_every_update(cls, bounds):
    box_u, box_v = simple_case(cls, "multi2x2", bounds=bounds, exact=True)
    active = box_v.active if bounds == "lower" else box_u.active
    assert ({"lower step 0", "lower step 1"} & set(active)) if bounds == "lower" else len(active) >= 1, active
