"""Nash-MTL: the Nash bargaining solution of the tasks (Navon et al., ICML 2022)."""

from __future__ import annotations

from torch import Tensor

from fairmtl._registry import register
from fairmtl.aggregators.base import GramianWeighting, check_scale
from fairmtl.solvers import solve_alpha_fair


@register("nash-mtl")
class NashMTL(GramianWeighting):
    """Nash-MTL (Navon et al. 2022, eq. 3 / Claim 3.1): ``d = G w`` with ``A w = 1 / w``.

    This is FairGrad at alpha = 1 and shares its exact solver. The reference solves a
    sequence of convex approximations with cvxpy on ``A / ||A||_F`` (so its weights are
    ``sqrt(||A||_F)`` times these, the same direction) and silently keeps the previous
    weights when the solver fails; here every step is solved to float64 precision.

    Args:
        scale: multiply the direction by this factor (1.0 = the paper's definition).
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = check_scale(scale)

    def gram_weights(self, gram: Tensor) -> Tensor:
        sol = solve_alpha_fair(gram, 1.0)
        self._record(sol.info)
        return self.scale * sol.weights

    def __repr__(self) -> str:
        return "NashMTL()" if self.scale == 1.0 else f"NashMTL(scale={self.scale})"
