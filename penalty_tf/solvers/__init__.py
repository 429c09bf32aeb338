"""The four bilevel solvers, all with the same interface (see `base.BilevelSolver`)."""

from penalty_tf.solvers.approxgrad import ApproxGrad
from penalty_tf.solvers.base import BilevelSolver, NonFiniteError, tf1_adam
from penalty_tf.solvers.gd import GD
from penalty_tf.solvers.penalty import Penalty, PenaltySchedule
from penalty_tf.solvers.rmd import RMD

__all__ = ["ApproxGrad", "BilevelSolver", "GD", "NonFiniteError", "Penalty",
           "PenaltySchedule", "RMD", "tf1_adam"]
