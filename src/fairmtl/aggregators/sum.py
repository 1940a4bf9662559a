"""Sum of the task gradients: linear scalarisation (LS / EW) at the gradient level."""

from __future__ import annotations

import torch
from torch import Tensor

from fairmtl._registry import register
from fairmtl.aggregators.base import GramianWeighting


@register("sum")
class Sum(GramianWeighting):
    """``d = sum_i g_i``: every weight is 1. The baseline of every paper (LS / EW)."""

    checks_finite = False  # aggregate() sums the rows without a Gram matrix

    def gram_weights(self, gram: Tensor) -> Tensor:
        return torch.ones(gram.shape[0], dtype=gram.dtype, device=gram.device)

    def fixed_weights(self, num_tasks: int) -> Tensor:
        self.last_weights = torch.ones(num_tasks)
        return self.last_weights

    def aggregate(self, jacobian: Tensor, losses: Tensor | None = None) -> Tensor:
        self.last_weights = torch.ones(
            jacobian.shape[0], dtype=jacobian.dtype, device=jacobian.device
        )
        return jacobian.sum(dim=0)
