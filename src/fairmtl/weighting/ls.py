"""Linear scalarisation: constant loss weights."""

from __future__ import annotations

import torch
from torch import Tensor

from fairmtl._registry import register
from fairmtl.weighting.base import Weighting


@register("ls")
class LS(Weighting):
    """LS / EW: ``lambda_i = 1`` for every task (the sum of the losses)."""

    def weights(self, losses: Tensor) -> Tensor:
        return torch.ones_like(losses)
