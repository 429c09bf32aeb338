"""Mutation check of the solver core: do the fast tests catch one-line bugs?

Usage (from anywhere; not collected by pytest)::

    python tests/mutate.py                       # all mutations, 2 at a time
    python tests/mutate.py --jobs 1 --only penalty-upper-lambda-g
    python tests/mutate.py --without-one-step    # the same list against the older fast tests
    python tests/mutate.py --list

For each mutation in MUTATIONS (file, exact original snippet, replacement, description) the
script copies the repository's code (COPIED) into a temporary directory, applies the
mutation THERE (the real files are never written), and runs the fast tests (FAST_TESTS,
``pytest -x -q -p no:cacheprovider``) with that copy as working directory and first on
PYTHONPATH. A mutation is *killed* when the tests fail (or time out) and *survives* when
they pass. To save time a few selections per file (FOCUS: the one-step tests of the mutated
solver, ``-k penalty`` etc.; for autodiff.py and base.py the tests that read them most
directly) run first; only if they pass does the whole list run (a subset failing means the
whole fails). Before the mutations it checks that

* every snippet occurs exactly once in its file (else the list is stale: error, exit 2);
* ``import penalty_tf`` in the copy's environment resolves to the copy (penalty_tf is
  installed editable from the main tree, whose finder must not win);
* a canary copy whose ``penalty_tf/solvers/__init__.py`` raises fails the tests with the
  canary's message (so pytest really imports the copy);
* the unmutated copy passes.

It prints one row per mutation (name, killed/survived, seconds) and exits 1 if any survived.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COPIED = ["penalty_tf", "tests", "synthetic", "setup.py", "pyproject.toml"]
FAST_TESTS = ["tests/test_one_step.py", "tests/test_solvers.py", "tests/test_autodiff.py",
              "tests/test_synthetic_problems.py", "tests/test_aid.py", "tests/test_bome.py",
              "tests/test_pbgd.py", "tests/test_f2sa.py", "tests/test_soba.py"]
TIMEOUT = 600   # seconds per pytest run; a run that hangs counts as killed
CANARY = "mutate.py canary: this copy is the one imported"

PEN, AG, RMD_, GD_ = ("penalty_tf/solvers/penalty.py", "penalty_tf/solvers/approxgrad.py",
                      "penalty_tf/solvers/rmd.py", "penalty_tf/solvers/gd.py")
BASE, AD = "penalty_tf/solvers/base.py", "penalty_tf/autodiff.py"
AID_, BOME_, PBGD_, F2SA_, SOBA_ = ("penalty_tf/solvers/aid.py", "penalty_tf/solvers/bome.py",
                                   "penalty_tf/solvers/pbgd.py", "penalty_tf/solvers/f2sa.py",
                                   "penalty_tf/solvers/soba.py")
VARS, MON = "penalty_tf/solvers/variables.py", "penalty_tf/solvers/monitor.py"
ONE_STEP = "tests/test_one_step.py"
#: Test selections run first, in order, for a mutation of each file, so that most mutants
#: are killed by a few tests instead of the whole fast suite: the one-step tests of the
#: solver a file implements; for the shared code, the tests that read it most directly.
FOCUS = {PEN: [[ONE_STEP, "-k", "penalty"]], AG: [[ONE_STEP, "-k", "approxgrad"]],
         RMD_: [[ONE_STEP, "-k", "rmd"]], GD_: [[ONE_STEP, "-k", "gd"]],
         AID_: [["tests/test_aid.py"]], BOME_: [["tests/test_bome.py"]], PBGD_: [["tests/test_pbgd.py"]],
         F2SA_: [["tests/test_f2sa.py"]], SOBA_: [["tests/test_soba.py"]],
         AD: [["tests/test_autodiff.py"], [ONE_STEP]],
         BASE: [[ONE_STEP], ["tests/test_solvers.py", "-k", "nan or finite"]],
         VARS: [[ONE_STEP]], MON: [["tests/test_solvers.py", "-k", "nan or finite"], [ONE_STEP]]}


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    original: str
    replacement: str
    description: str


M = Mutation
MUTATIONS = [
    # --------------------------------------------------------------- Penalty
    M("penalty-upper-lambda-g", PEN,
      "grads, _ = self._directions(f_fn, g_fn, v, u, rho, lamb, nu)\n",
      "grads, _ = self._directions(f_fn, g_fn, v, u, rho, lamb, nu)\n"
      "        grads = [a + lamb * b for a, b in zip(grads, autodiff.gradient(g_fn, u)[1])]\n",
      "upper step on h_upper + lambda g (adds lambda grad_u g)"),
    M("penalty-lower-no-lambda-G", PEN,
      "            grads = self._add_lambda_g(grads, r.lower_grad, lamb)\n", "",
      "lower steps drop the lambda G term of grad_v h_lower"),
    M("penalty-lambda-G-sign", PEN,
      "return [gv + lamb * gr for gv, gr", "return [gv - lamb * gr for gv, gr",
      "grad_v h_lower = grad_v h_upper - lambda G"),
    M("penalty-tolerance-hv-of-h-upper", PEN,
      "return grads[:len(u)], self._add_lambda_g(grads[len(u):], r.lower_grad, lamb), r",
      "return grads[:len(u)], grads[len(u):], r",
      "tolerance test uses grad_v h_upper instead of grad_v h_lower"),
    M("penalty-direction-2rho", PEN,
      "[n + rho * gr for n, gr in zip(nu, grad)]", "[n + 2.0 * rho * gr for n, gr in zip(nu, grad)]",
      "penalty direction 2 rho G (rho instead of rho/2 in h)"),
    M("penalty-direction-no-nu", PEN,
      "[n + rho * gr for n, gr in zip(nu, grad)]", "[0.0 * n + rho * gr for n, gr in zip(nu, grad)]",
      "direction drops the multiplier nu"),
    M("penalty-output-rho", PEN,
      '"penalty": 0.5 * rho *', '"penalty": 1.0 * rho *',
      "returned penalty rho ||G||^2 instead of rho/2 ||G||^2"),
    M("penalty-no-nu-update", PEN,
      "nu.assign(tf.where(converged, nu + rho_new * gr, nu))", "nu.assign(nu)",
      "multiplier nu never updated"),
    M("penalty-nu-old-rho", PEN,
      "nu + rho_new * gr", "nu + rho_new / s.c_rho * gr",
      "nu update with the old rho"),
    M("penalty-tolerance-eps", PEN,
      "hu * hu + hv * hv < self.eps * self.eps", "hu * hu + hv * hv < self.eps",
      "tolerance test against eps instead of eps^2"),
    M("penalty-tolerance-not-squared", PEN,
      "hu * hu + hv * hv < self.eps * self.eps", "hu + hv < self.eps * self.eps",
      "tolerance test on hu + hv (norms not squared again)"),
    M("penalty-no-lr-decay", PEN,
      "        self.upper.scale_learning_rates(decay, only_owned=True)\n"
      "        self.lower.scale_learning_rates(decay, only_owned=True)",
      "        pass",
      "learning rates never decayed"),
    M("penalty-lr-decay-upper-only", PEN,
      "        self.lower.scale_learning_rates(decay, only_owned=True)", "        pass",
      "only the upper learning rates decayed"),
    M("penalty-c-lamb-c-eps-swapped", PEN,
      "self.lamb.assign(scaled(self.lamb, s.c_lamb))\n        self.eps.assign(scaled(self.eps, s.c_eps))",
      "self.lamb.assign(scaled(self.lamb, s.c_eps))\n        self.eps.assign(scaled(self.eps, s.c_lamb))",
      "c_lamb and c_eps swapped"),
    M("penalty-schedule-unconditional", PEN,
      "return tf.where(converged, var * factor, var)", "return var * factor",
      "rho, lambda, eps scaled even when the test fails"),
    M("penalty-rho-from-schedule", PEN,
      "return self.rho.read_value(), self.lamb.read_value()",
      "return tf.constant(self.schedule.rho0), self.lamb.read_value()",
      "iterations use rho_0 instead of the current rho"),
    M("penalty-output-old-rho", PEN,
      "out.update(rho=self.rho.read_value(),", "out.update(rho=rho,",
      "returned rho is the value before the schedule update"),
    M("penalty-lower-steps-minus-one", PEN,
      "status = self._loop(lower_steps, lower_step, self.monitor.initial())",
      "status = self._loop(lower_steps - 1, lower_step, self.monitor.initial())",
      "T-1 lower steps"),
    M("penalty-u-direction-before-lower-steps", PEN,
      "        status = self._loop(lower_steps, lower_step, self.monitor.initial())\n\n"
      "        grads, _ = self._directions(f_fn, g_fn, v, u, rho, lamb, nu)\n",
      "        grads, _ = self._directions(f_fn, g_fn, v, u, rho, lamb, nu)\n"
      "        status = self._loop(lower_steps, lower_step, self.monitor.initial())\n",
      "u-direction taken at the old v (before the T lower steps)"),
    M("penalty-lower-projection-at-end", PEN,
      "            self.lower.apply(grads)\n            return status\n\n"
      "        status = self._loop(lower_steps, lower_step, self.monitor.initial())\n",
      "            for opt, grp, gr in zip(self.lower.optimizers, self.lower.groups, self.lower.split(grads)):\n"
      "                opt.apply(gr, grp)\n            return status\n\n"
      "        status = self._loop(lower_steps, lower_step, self.monitor.initial())\n"
      "        self.lower.project()\n",
      "lower projection only after the T lower steps, not after each"),
    M("penalty-no-upper-projection", PEN,
      "        self.upper.apply(grads)\n",
      "        for opt, grp, gr in zip(self.upper.optimizers, self.upper.groups, self.upper.split(grads)):\n"
      "            opt.apply(gr, grp)\n",
      "upper step not projected"),
    M("schedule-multi-group-decay", PEN,
      'kwargs.setdefault("lr_decay", 0.99)', 'kwargs.setdefault("lr_decay", 0.9)',
      "multi_group decays learning rates by 0.9"),
    M("schedule-synthetic-c-lamb", PEN,
      "c_lamb=1.0 / c_rho, c_eps=1.0 / c_rho", "c_lamb=0.9, c_eps=1.0 / c_rho",
      "synthetic variant multiplies lambda by 0.9"),
    M("schedule-synthetic-nu0", PEN,
      "nu0=0.0, c_rho=c_rho", "nu0=1e-4, c_rho=c_rho",
      "synthetic variant starts nu at 1e-4"),
    # --------------------------------------------------------------- ApproxGrad
    M("approxgrad-sig-sign", AG,
      "a + self.sig * p - b for a, p, b", "a - self.sig * p - b for a, p, b",
      "residual H p - sig p - f_v"),
    M("approxgrad-grad-p-no-2", AG,
      "grads = [2.0 * (a + self.sig * b)", "grads = [1.0 * (a + self.sig * b)",
      "grad_p h without the factor 2"),
    M("approxgrad-grad-p-no-sig", AG,
      "grads = [2.0 * (a + self.sig * b)", "grads = [2.0 * (a + 0.0 * b)",
      "grad_p h = 2 H r (drops sig r)"),
    M("approxgrad-surrogate-sign", AG,
      "minus_p = [-p if j in chosen", "minus_p = [p if j in chosen",
      "surrogate gradient grad_u f + H_uv p"),
    M("approxgrad-all-as-indexed", AG,
      'if self.correction == "all":', 'if self.correction == "never":',
      'correction="all" behaves as "indexed"'),
    M("approxgrad-indexed-group-0", AG,
      "return [upper_group] if upper_group", "return [0] if upper_group",
      "indexed correction always uses lower group 0"),
    M("approxgrad-extra-step-ignored", AG,
      "return lower_steps, linear_steps + int(self.extra_linear_step)",
      "return lower_steps, linear_steps",
      "extra_linear_step ignored"),
    M("approxgrad-linear-steps-minus-one", AG,
      "status = self._loop(linear_steps, linear_step, status)",
      "status = self._loop(linear_steps - 1, linear_step, status)",
      "one p-step fewer than asked"),
    M("approxgrad-linear-default-plus-one", AG,
      "linear_steps = lower_steps if linear_steps is None", "linear_steps = lower_steps + 1 if linear_steps is None",
      "linear_steps=None gives T + 1 p-steps"),
    M("approxgrad-lower-steps-minus-one", AG,
      "status = self._lower_gradient_steps(lower_g, lower_steps)",
      "status = self._lower_gradient_steps(lower_g, lower_steps - 1)",
      "T-1 lower steps"),
    M("approxgrad-f-v-before-lower-steps", AG,
      "        status = self._lower_gradient_steps(lower_g, lower_steps)\n"
      "        _, f_v = autodiff.gradient(lower_f, v)\n",
      "        _, f_v = autodiff.gradient(lower_f, v)\n"
      "        status = self._lower_gradient_steps(lower_g, lower_steps)\n",
      "linear system's f_v taken at the old v"),
    M("approxgrad-h-stale-f-v", AG,
      "f, f_v = autodiff.gradient(f_fn, v)", "f, _ = autodiff.gradient(f_fn, v)",
      "returned h uses f_v from before the u-step"),
    # --------------------------------------------------------------- RMD
    M("rmd-reverse-one-short", RMD_,
      "first = tf.constant(0 if self.exact else 1, tf.int32)",
      "first = tf.constant(1 if self.exact else 2, tf.int32)",
      "reverse pass one step short"),
    M("rmd-exact-ignored", RMD_,
      "first = tf.constant(0 if self.exact else 1, tf.int32)", "first = tf.constant(1, tf.int32)",
      "exact=True ignored"),
    M("rmd-p-uses-h-vv", RMD_,
      "p_ = [a - lr_v * b for a, b in zip(p_, h_uv_q)]", "p_ = [a - lr_v * b for a, b in zip(p_, h_vv_q)]",
      "p update with H_vv q instead of H_uv q"),
    M("rmd-q-sign", RMD_,
      "q_ = [a - lr_v * b for a, b in zip(q_, h_vv_q)]", "q_ = [a + lr_v * b for a, b in zip(q_, h_vv_q)]",
      "q <- q + lr_v H_vv q"),
    M("rmd-reverse-index", RMD_,
      "index = lower_steps - 1 - k", "index = lower_steps - k",
      "reverse pass reads the iterate after the step instead of before"),
    M("rmd-final-v-not-restored", RMD_,
      "x.assign(a.read(lower_steps))", "x.assign(a.read(lower_steps - 1))",
      "v left at v_{T-1} instead of v_T"),
    M("rmd-upper-lr", RMD_,
      "self.upper.assign_sub([self.upper_lr * x for x in p])",
      "self.upper.assign_sub([self.lower_lr * x for x in p])",
      "u step with the lower step size"),
    M("rmd-forward-steps-minus-one", RMD_,
      "status, *iterates = self._loop(lower_steps, forward_step,",
      "status, *iterates = self._loop(lower_steps - 1, forward_step,",
      "T-1 forward steps"),
    # --------------------------------------------------------------- GD
    M("gd-upper-on-g", GD_,
      "_, grads = autodiff.gradient(f_fn, self.upper.variables)",
      "_, grads = autodiff.gradient(g_fn, self.upper.variables)",
      "GD's u-step on g instead of f"),
    M("gd-lower-steps-minus-one", GD_,
      "status = self._lower_gradient_steps(lower_g, lower_steps)",
      "status = self._lower_gradient_steps(lower_g, lower_steps - 1)",
      "T-1 lower steps"),
    M("gd-upper-before-lower", GD_,
      "        status = self._lower_gradient_steps(lower_g, lower_steps)\n"
      "        _, grads = autodiff.gradient(f_fn, self.upper.variables)\n",
      "        _, grads = autodiff.gradient(f_fn, self.upper.variables)\n"
      "        status = self._lower_gradient_steps(lower_g, lower_steps)\n",
      "u-gradient taken at the old v"),
    # --------------------------------------------------------------- AID
    M("aid-ift-sign", AID_,
      "r = autodiff.gradient_plus_hvp(f_fn, g_fn, v, [-x for x in p], self.upper.variables)",
      "r = autodiff.gradient_plus_hvp(f_fn, g_fn, v, [x for x in p], self.upper.variables)",
      "u-step along f_u + H_uv p"),
    M("aid-cg-no-conjugation", AID_,
      "return p, r, [a + beta * b for a, b in zip(r, d)], rr_new",
      "return p, r, [a + 0.0 * beta * b for a, b in zip(r, d)], rr_new",
      "CG without conjugation (steepest descent on H p = f_v)"),
    M("aid-neumann-sign", AID_,
      "return [a + eta * b for a, b in zip(p, r)], autodiff.squared_norm(r)",
      "return [a - eta * b for a, b in zip(p, r)], autodiff.squared_norm(r)",
      "Neumann step p <- p - eta (f_v - H p)"),
    M("aid-warm-start-ignored", AID_,
      "p0 = [p.read_value() for p in self.p] if self.warm_start else",
      "p0 = [p.read_value() for p in self.p] if False else",
      "warm_start=True starts from 0"),
    # --------------------------------------------------------------- BOME
    M("bome-lambda-no-relu", BOME_,
      "tf.nn.relu(phi - autodiff.dot(grad_f, grad_q))", "(phi - autodiff.dot(grad_f, grad_q))",
      "lambda may be negative (no max(., 0))"),
    M("bome-q-gradient-sign", BOME_,
      "grad_q = [a - b for a, b in zip(grad_g[:n], g_u_inner)]",
      "grad_q = [a + b for a, b in zip(grad_g[:n], g_u_inner)]",
      "grad_u q = g_u(u, v) + g_u(u, v_T)"),
    M("bome-phi-ignored", BOME_,
      'phi = self.eta * (norm_q if self.phi == "grad_norm" else q)', "phi = self.eta * norm_q",
      'phi="value" behaves as "grad_norm"'),
    M("bome-v-not-restored", BOME_,
      "        g_inner, g_u_inner = autodiff.gradient(g_fn, u)          # at v_T\n"
      "        for x, value in zip(v, saved):\n            x.assign(value)\n",
      "        g_inner, g_u_inner = autodiff.gradient(g_fn, u)          # at v_T\n",
      "the joint step starts from v_T instead of v"),
    # --------------------------------------------------------------- V-PBGD / G-PBGD
    M("vpbgd-gap-sign", PBGD_,
      "gap = [a - b for a, b in zip(grad_g[:n], g_u_w)]", "gap = [a + b for a, b in zip(grad_g[:n], g_u_w)]",
      "value-gap gradient g_u(u, v) + g_u(u, w)"),
    M("vpbgd-w-not-kept", PBGD_,
      "            w.assign(x)\n            x.assign(value)\n", "            x.assign(value)\n",
      "w's inner steps are thrown away (no warm start)"),
    M("pbgd-gamma-no-ramp", PBGD_,
      "self.gamma.assign(tf.minimum(c.gamma_growth * gamma + c.gamma_increment, c.gamma_max))",
      "self.gamma.assign(gamma)",
      "gamma never ramped up"),
    M("pbgd-scale-step-ignored", PBGD_,
      "scale = 1.0 / tf.maximum(gamma, 1.0) if self.config.scale_step", "scale = 1.0 if self.config.scale_step",
      "scale_step=True does not divide the step by gamma"),
    M("gpbgd-penalty-factor", PBGD_,
      "[tf.cast(2.0 * gamma, x.dtype) * x for x in grad]", "[tf.cast(1.0 * gamma, x.dtype) * x for x in grad]",
      "G-PBGD's penalty gradient gamma H grad_v g (drops the 2)"),
    # --------------------------------------------------------------- F2SA
    M("f2sa-v-steps-no-lambda", F2SA_,
      "grads = [a + lamb * b for a, b in zip(f_v, g_v)]", "grads = [a + b for a, b in zip(f_v, g_v)]",
      "v steps on f + g instead of f + lambda g"),
    M("f2sa-z-term-sign", F2SA_,
      "return [a + lamb * (b - c) for a, b, c in zip(f_u, g_u, g_u_z)], f, g, g_z",
      "return [a + lamb * (b + c) for a, b, c in zip(f_u, g_u, g_u_z)], f, g, g_z",
      "u-direction f_u + lambda (g_u(v) + g_u(z))"),
    M("f2sa-lambda-no-ramp", F2SA_,
      "self.lamb.assign(tf.minimum(lamb + delta, c.lamb_max))", "self.lamb.assign(lamb)",
      "lambda never increased"),
    # --------------------------------------------------------------- SOBA
    M("soba-w-without-hvp", SOBA_,
      "return lower_and_linear(autodiff.gradient_plus_hvp(lower_f, lower_g, v, w, v), status, k)",
      "return lower_and_linear(autodiff.gradient_plus_hvp(lower_f, lower_g, v, [0.0 * x for x in w], v), "
      "status, k)",
      "w steps along f_v only (drops H_vv w)"),
    M("soba-u-before-last-v-step", SOBA_,
      "        status = lower_and_linear(r, status, lower_steps - 1)\n", "",
      "the last v / w step of an iteration is skipped"),
    # --------------------------------------------------------------- base
    M("level-apply-no-projection", VARS,
      "            opt.apply(group_grads, group)\n        self.project()",
      "            opt.apply(group_grads, group)",
      "optimizer steps never projected (both levels)"),
    M("level-assign-sub-no-projection", VARS,
      "            var.assign_sub(delta)\n        self.project()",
      "            var.assign_sub(delta)",
      "plain steps (RMD) never projected"),
    M("level-lr-scale-assigns-factor", VARS,
      "self._settable(opt).assign(opt.learning_rate * factor)", "self._settable(opt).assign(factor)",
      "learning rate set to the decay factor instead of scaled"),
    M("monitor-ignores-failures", MON,
      "return tf.where(tf.logical_or(status != 0, ok), status, code)", "return status",
      "finite monitor (check) never flags a failure"),
    M("level-split-first-group", VARS,
      "out.append(list(flat[start:start + len(group)]))", "out.append(list(flat[:len(group)]))",
      "every group gets the first group's gradients"),
    M("base-loop-one-short", BASE,
      "            return k < n\n", "            return k < n - 1\n",
      "every loop runs one iteration fewer"),
    # --------------------------------------------------------------- autodiff
    M("autodiff-ignores-direction", AD,
      "targets, weights = list(lower_grad), w", "targets, weights = list(lower_grad), [tf.ones_like(x) for x in w]",
      "gradient_plus_hvp ignores the direction weights"),
    M("autodiff-drops-f", AD,
      "    if upper_value is not None:\n        targets, weights =",
      "    if False:\n        targets, weights =",
      "gradient_plus_hvp drops f"),
    M("autodiff-hvp-is-gradient", AD,
      "return gradient_plus_hvp(None, loss_fn, variables, vectors, variables).grads",
      "return gradient(loss_fn, variables)[1]",
      "hvp returns the gradient"),
    M("autodiff-squared-norm-no-square", AD,
      "tf.reduce_sum(tf.square(x)) for x in a", "tf.reduce_sum(tf.abs(x)) for x in a",
      "squared_norm sums |x| instead of x^2"),
    M("autodiff-dot-wrong", AD,
      "tf.reduce_sum(x * y) for x, y in zip(a, b)", "tf.reduce_sum(x * x) for x, y in zip(a, b)",
      "dot(a, b) = ||a||^2"),
    M("autodiff-zeros-for-missing-ones", AD,
      "[tf.zeros_like(v) if gr is None", "[tf.ones_like(v) if gr is None",
      "missing gradients become ones"),
    M("autodiff-mixed-vp-swapped", AD,
      "return grads[:len(upper_vars)], grads[len(upper_vars):]",
      "return grads[len(upper_vars):], grads[:len(upper_vars)]",
      "hvp_and_mixed_vp returns (H_vv q, H_uv q)"),
    M("autodiff-all-finite-any", AD,
      "return tf.reduce_all([tf.reduce_all(tf.math.is_finite(x)) for x in a])",
      "return tf.reduce_all([tf.reduce_any(tf.math.is_finite(x)) for x in a])",
      "all_finite true when any entry is finite"),
]


# ------------------------------------------------------------------------ mechanics


def check_snippets(mutations: list[Mutation]) -> list[str]:
    """Problems with the list: snippets not occurring exactly once, duplicate names."""
    errors = []
    names = [m.name for m in mutations]
    errors += [f"duplicate mutation name {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    for m in mutations:
        count = (REPO / m.file).read_text(encoding="utf-8").count(m.original)
        if count != 1:
            errors.append(f"{m.name}: snippet occurs {count} times in {m.file} (must be exactly once)")
        if m.original == m.replacement:
            errors.append(f"{m.name}: replacement equals the original")
    return errors


def make_copy(apply: Mutation | None = None, prepend: tuple[str, str] | None = None) -> Path:
    """A temporary copy of COPIED with ``apply`` substituted (or ``prepend`` = (file, text)
    put in front of a file)."""
    root = Path(tempfile.mkdtemp(prefix="penalty-mutate-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for item in COPIED:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, root / item, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, root / item)
    if apply is not None:
        path = root / apply.file
        text = path.read_text(encoding="utf-8")
        assert text.count(apply.original) == 1, apply.name
        path.write_text(text.replace(apply.original, apply.replacement), encoding="utf-8")
    if prepend is not None:
        path = root / prepend[0]
        path.write_text(prepend[1] + path.read_text(encoding="utf-8"), encoding="utf-8")
    return root


def environment(root: Path) -> dict[str, str]:
    """The environment of a run in the copy: the copy first on PYTHONPATH, no bytecode."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_tests(root: Path, tests: list[str]) -> tuple[int | None, float, str]:
    """(pytest exit code or None on timeout, seconds, last lines of output) in ``root``."""
    start = time.time()
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=root, env=environment(root), capture_output=True, text=True,
                              timeout=TIMEOUT)
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as error:
        code, output = None, f"timeout after {TIMEOUT} s: {error}"
    return code, time.time() - start, "\n".join(output.strip().splitlines()[-15:])


def imported_from(root: Path) -> list[str]:
    """Where ``penalty_tf`` and ``synthetic`` are imported from in the copy's environment."""
    code = "import penalty_tf, synthetic; print(penalty_tf.__file__); print(synthetic.__file__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=environment(root),
                          capture_output=True, text=True, check=True)
    return proc.stdout.split()


def first_failure(tail: str) -> str:
    """The first failing test id in pytest's short summary (or what stopped the run)."""
    for line in tail.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split()[1].replace("tests/", "")
    return tail.splitlines()[-1][:60] if tail else ""


def run_one(mutation: Mutation, tests: list[str]) -> tuple[Mutation, int | None, float, str]:
    """Run the tests on a mutated copy: first (to kill fast) the selections of FOCUS for the
    mutated file that are among ``tests``, then, if those pass, every test in ``tests``."""
    root = make_copy(apply=mutation)
    try:
        total = 0.0
        stages = [stage for stage in FOCUS.get(mutation.file, []) if stage[0] in tests] + [tests]
        for stage in stages:
            code, seconds, tail = run_tests(root, stage)
            total += seconds
            if code != 0:
                break
        return mutation, code, total, tail
    finally:
        shutil.rmtree(root, ignore_errors=True)


def sanity_checks(tests: list[str], jobs: int) -> None:
    """The copy is what gets imported, the canary is caught, the unmutated copy passes."""
    plain = make_copy()
    canary = make_copy(prepend=("penalty_tf/solvers/__init__.py", f"raise RuntimeError({CANARY!r})\n"))
    try:
        paths = imported_from(plain)
        if not all(Path(p).resolve().is_relative_to(plain.resolve()) for p in paths):
            sys.exit(f"the copy's environment imports {paths}, not the copy in {plain}")
        with concurrent.futures.ThreadPoolExecutor(max(1, min(jobs, 2))) as pool:
            plain_run = pool.submit(run_tests, plain, tests)
            canary_run = pool.submit(run_tests, canary, tests)
            (code, seconds, tail), (canary_code, _, canary_tail) = plain_run.result(), canary_run.result()
        if canary_code == 0 or CANARY not in canary_tail:
            sys.exit(f"the canary copy was not the one imported by pytest:\n{canary_tail}")
        if code != 0:
            sys.exit(f"the UNMUTATED copy fails the tests (exit {code}):\n{tail}")
        print(f"sanity: imports from the copy ({paths[0]}), canary caught, "
              f"unmutated copy passes ({seconds:.0f} s)", flush=True)
    finally:
        shutil.rmtree(plain, ignore_errors=True)
        shutil.rmtree(canary, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutations run in parallel (default 2)")
    parser.add_argument("--tests", nargs="+", default=None, help=f"test files (default {FAST_TESTS})")
    parser.add_argument("--without-one-step", action="store_true",
                        help="drop tests/test_one_step.py (the fast tests before it existed)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these mutation names")
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    args = parser.parse_args(argv)

    errors = check_snippets(MUTATIONS)
    if errors:
        print("stale mutation list:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 2
    mutations = MUTATIONS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTATIONS}
        if unknown:
            parser.error(f"unknown mutations {sorted(unknown)}")
        mutations = [m for m in MUTATIONS if m.name in args.only]
    if args.list:
        for m in mutations:
            print(f"{m.name:38s} {m.file:34s} {m.description}")
        return 0
    tests = list(args.tests or FAST_TESTS)
    if args.without_one_step:
        tests = [t for t in tests if Path(t).name != "test_one_step.py"]
    print(f"{len(mutations)} mutations, tests: {' '.join(tests)}, jobs: {args.jobs}", flush=True)

    start = time.time()
    sanity_checks(tests, args.jobs)
    rows = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, m, tests) for m in mutations]
        for future in concurrent.futures.as_completed(futures):
            mutation, code, seconds, tail = future.result()
            verdict = "survived" if code == 0 else ("killed (timeout)" if code is None else "killed")
            by = first_failure(tail) if code != 0 else ""
            rows.append((mutation, verdict, seconds, by))
            print(f"  {mutation.name:38s} {verdict:16s} {seconds:6.0f} s  {by}", flush=True)
    order = {m.name: i for i, m in enumerate(mutations)}
    rows.sort(key=lambda row: order[row[0].name])
    survivors = [m for m, verdict, _, _ in rows if verdict == "survived"]
    print("\n| mutation | file | result | time (s) | first failing test | description |\n"
          "|---|---|---|---|---|---|")
    for m, verdict, seconds, by in rows:
        description = m.description.replace("|", "\\|")   # keep the markdown table intact
        print(f"| {m.name} | {Path(m.file).name} | {verdict} | {seconds:.0f} | {by} | {description} |")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"\n{len(rows)} mutations, {len(rows) - len(survivors)} killed, {len(survivors)} survived "
          f"({', '.join(m.name for m in survivors) or 'none'}); total {time.time() - start:.0f} s wall, "
          f"{usage.ru_utime + usage.ru_stime:.0f} s CPU in the test runs")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
