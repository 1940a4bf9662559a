"""MGDA: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

from torch import Tensor

from fairmtl._registry import register
from fairmtl.aggregators.base import GramianWeighting, check_scale
from fairmtl.solvers import min_norm_simplex


@register("mgda")
class MGDA(GramianWeighting):
    """Multiple-gradient descent (Sener & Koltun, NeurIPS 2018, eq. 3; Desideri 2012).

    ``w = argmin_{w in simplex} ||G w||^2`` and ``d = G w``, solved exactly by an
    interior-point method (:func:`fairmtl.solvers.min_norm_simplex`) instead of the
    reference's 250 Frank-Wolfe steps. Guarantee: ``g_i . d >= ||d||^2`` for every task.

    Args:
        scale: multiply the direction by this factor. The reference code multiplies by K
            (``scale=K``); the paper's definition is ``scale=1`` (default).
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = check_scale(scale)

    def gram_weights(self, gram: Tensor) -> Tensor:
        sol = min_norm_simplex(gram)
        self._record(sol.info)
        return (self.scale * sol.weights).to(device=gram.device)

    def __repr__(self) -> str:
        return "MGDA()" if self.scale == 1.0 else f"MGDA(scale={self.scale})"
