"""MGDA: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from fairmtl._registry import register
from fairmtl.aggregators.base import GramianWeighting, check_scale
from fairmtl.solvers import min_norm_simplex

Normalization = Literal["none", "l2", "loss", "loss+"]
_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@register("mgda")
class MGDA(GramianWeighting):
    """Multiple-gradient descent (Sener & Koltun, NeurIPS 2018, eq. 3; Desideri 2012).

    ``w = argmin_{w in simplex} ||G w||^2`` and ``d = G w``, solved exactly by an
    interior-point method (:func:`fairmtl.solvers.min_norm_simplex`) instead of the
    reference's 250 Frank-Wolfe steps. Guarantee: ``g_i . d >= ||d||^2`` for every task.

    Args:
        scale: multiply the direction by this factor. The reference code multiplies by K
            (``scale=K``); the paper's definition is ``scale=1`` (default).
        normalization: Sener & Koltun's code option: solve for ``w`` on the gradients
            divided by ``||g_i||`` (``"l2"``), by the loss (``"loss"``) or by both
            (``"loss+"``, their MultiMNIST setting), then apply ``w`` to the raw
            gradients. ``"none"`` (default) is the paper's definition; the guarantee
            above holds only for it.
    """

    def __init__(self, scale: float = 1.0, normalization: Normalization = "none") -> None:
        super().__init__()
        self.scale = check_scale(scale)
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}"
            )
        self.normalization = normalization
        self.requires_losses = normalization in ("loss", "loss+")

    def gram_weights(self, gram: Tensor) -> Tensor:
        if self.requires_losses:
            raise ValueError(
                f"normalization={self.normalization!r} needs the losses: call the aggregator "
                "on the Jacobian with losses=..."
            )
        return self._solve(gram, None)

    def loss_gram_weights(self, gram: Tensor, losses: Tensor | None) -> Tensor:
        return self._solve(gram, losses)

    def _solve(self, gram: Tensor, losses: Tensor | None) -> Tensor:
        a = gram.to(torch.float64)
        if self.normalization != "none":
            norm = torch.ones_like(a.diagonal())
            if self.normalization in ("l2", "loss+"):
                norm = norm * a.diagonal().clamp(min=0).sqrt()
            if losses is not None and self.normalization in ("loss", "loss+"):
                norm = norm * losses.to(a).abs()
            inv = torch.where(norm > 0, 1.0 / torch.where(norm > 0, norm, 1.0), 0.0)
            a = inv[:, None] * a * inv[None, :]
        sol = min_norm_simplex(a)
        self._record(sol.info)
        return (self.scale * sol.weights).to(device=gram.device)

    def __repr__(self) -> str:
        args = []
        if self.scale != 1.0:
            args.append(f"scale={self.scale}")
        if self.normalization != "none":
            args.append(f"normalization={self.normalization!r}")
        return f"{type(self).__name__}({', '.join(args)})"
