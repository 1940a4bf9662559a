"""fairmtl: multi-task learning optimisation for PyTorch.

The data path of one step: losses -> transform -> loss weights -> per-task gradients ->
aggregator -> ``.grad``. Every aggregator is usable alone (``fairmtl.FairGrad(2.0)(jacobian)``),
Gramian weightings expose ``.weights(gram)``, and ``fairmtl.make(name, **kwargs)`` builds any
registered method.
"""

from fairmtl._registry import available, make, register
from fairmtl.aggregators import MGDA, Aggregator, FairGrad, GramianWeighting, Mean, NashMTL, Sum
from fairmtl.balancer import Balancer
from fairmtl.errors import InvalidLossError, RegularizationWarning
from fairmtl.jacobian import jacobian
from fairmtl.solvers import SolverInfo, min_norm_simplex, solve_alpha_fair
from fairmtl.transforms import AlphaFairLoss, Identity, Log, LossTransform
from fairmtl.weighting import LS, Weighting

__version__ = "0.1.0"

__all__ = [
    "LS",
    "MGDA",
    "Aggregator",
    "AlphaFairLoss",
    "Balancer",
    "FairGrad",
    "GramianWeighting",
    "Identity",
    "InvalidLossError",
    "Log",
    "LossTransform",
    "Mean",
    "NashMTL",
    "RegularizationWarning",
    "SolverInfo",
    "Sum",
    "Weighting",
    "available",
    "jacobian",
    "make",
    "min_norm_simplex",
    "register",
    "solve_alpha_fair",
]
