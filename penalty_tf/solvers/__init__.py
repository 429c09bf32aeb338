"""The bilevel solvers, all on one interface (see `base.BilevelSolver`), and their factory.

``make(name, problem, config)`` builds any registered solver on a `BilevelProblem`;
``config_class(name)`` is its settings dataclass.
"""

from penalty_tf.optimizers import tf1_adam
from penalty_tf.problem import BilevelProblem
from penalty_tf.solvers.aid import AID, AIDConfig
from penalty_tf.solvers.approxgrad import ApproxGrad, ApproxGradConfig
from penalty_tf.solvers.base import BilevelSolver
from penalty_tf.solvers.bome import BOME, BOMEConfig
from penalty_tf.solvers.f2sa import F2SA, F2SAConfig
from penalty_tf.solvers.gd import GD, GDConfig
from penalty_tf.solvers.monitor import NonFiniteError
from penalty_tf.solvers.pbgd import GPBGD, VPBGD, GPBGDConfig, VPBGDConfig
from penalty_tf.solvers.penalty import Penalty, PenaltyConfig, PenaltySchedule
from penalty_tf.solvers.registry import config_class, make, make_config, names, register
from penalty_tf.solvers.rmd import RMD, RMDConfig
from penalty_tf.solvers.soba import SOBA, SOBAConfig

register("penalty", Penalty, PenaltyConfig)
register("approxgrad", ApproxGrad, ApproxGradConfig)
register("gd", GD, GDConfig)
register("rmd", RMD, RMDConfig)
register("aid", AID, AIDConfig)
register("bome", BOME, BOMEConfig)
register("v-pbgd", VPBGD, VPBGDConfig)
register("g-pbgd", GPBGD, GPBGDConfig)
register("f2sa", F2SA, F2SAConfig)
register("soba", SOBA, SOBAConfig)

__all__ = ["AID", "AIDConfig", "ApproxGrad", "ApproxGradConfig", "BilevelProblem", "BilevelSolver", "GD", "GDConfig",
           "NonFiniteError", "Penalty", "PenaltyConfig", "PenaltySchedule", "RMD", "RMDConfig",
           "config_class", "make", "make_config", "names", "register", "tf1_adam"]
__all__ += ["F2SA", "F2SAConfig", "SOBA", "SOBAConfig"]
__all__ += ["BOME", "BOMEConfig", "GPBGD", "GPBGDConfig", "VPBGD", "VPBGDConfig"]
