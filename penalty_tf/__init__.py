"""penalty-tf: bilevel optimisation by the penalty method in TensorFlow 2 / Keras 3.

A port of the research code of Mehra & Hamm, "Penalty Method for Inversion-Free Deep
Bilevel Optimization" (ACML 2021). A bilevel problem

    min_u f(u, v*(u))   subject to   v*(u) = argmin_v g(u, v)

is given as two callables ``upper_loss(batch) -> f`` and ``lower_loss(batch) -> g`` over
Keras models / `tf.Variable`s; every solver exposes ``step(batch, lower_steps=T)``, one
compiled upper-level iteration::

    import penalty_tf as ptf
    solver = ptf.Penalty(upper_loss, lower_loss, upper_vars=[u], lower_vars=model.trainable_variables,
                         upper_optimizer=1e-3, lower_optimizer=1e-4)
    for batch in data:
        out = solver.step(batch, lower_steps=10)
"""

__version__ = "0.1.0"

# The public names are loaded on first use (PEP 562), so that light modules such as
# `penalty_tf.paper.experiment` import without TensorFlow.
_LAZY = {
    "gradient_plus_hvp": "penalty_tf.autodiff", "hvp": "penalty_tf.autodiff",
    "hvp_and_mixed_vp": "penalty_tf.autodiff", "mixed_vp": "penalty_tf.autodiff",
    "AID": "penalty_tf.solvers", "AIDConfig": "penalty_tf.solvers",
    "F2SA": "penalty_tf.solvers", "F2SAConfig": "penalty_tf.solvers",
    "SOBA": "penalty_tf.solvers", "SOBAConfig": "penalty_tf.solvers",
    "BOME": "penalty_tf.solvers", "BOMEConfig": "penalty_tf.solvers",
    "VPBGD": "penalty_tf.solvers", "VPBGDConfig": "penalty_tf.solvers",
    "GPBGD": "penalty_tf.solvers", "GPBGDConfig": "penalty_tf.solvers",
    "ApproxGrad": "penalty_tf.solvers", "BilevelSolver": "penalty_tf.solvers", "GD": "penalty_tf.solvers",
    "NonFiniteError": "penalty_tf.solvers", "Penalty": "penalty_tf.solvers",
    "PenaltySchedule": "penalty_tf.solvers", "RMD": "penalty_tf.solvers", "tf1_adam": "penalty_tf.optimizers",
    "ApproxGradConfig": "penalty_tf.solvers", "GDConfig": "penalty_tf.solvers",
    "PenaltyConfig": "penalty_tf.solvers", "RMDConfig": "penalty_tf.solvers",
    "make": "penalty_tf.solvers", "BilevelProblem": "penalty_tf.problem",
    "RunCheckpoint": "penalty_tf.checkpoints",
}

#: Submodules reachable as attributes (``ptf.callbacks.TensorBoard``, ``ptf.losses``, ...).
_SUBMODULES = ("autodiff", "callbacks", "checkpoints", "datasets", "diagnostics", "losses", "models",
               "optimizers", "problem", "solvers", "training", "validation")

__all__ = sorted(_LAZY) + list(_SUBMODULES) + ["__version__"]


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"penalty_tf.{name}")
    raise AttributeError(f"module 'penalty_tf' has no attribute {name!r}")


def __dir__():
    return __all__
