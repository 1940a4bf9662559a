"""Mean of the task gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from fairmtl._registry import register
from fairmtl.aggregators.base import GramianWeighting


@register("mean")
class Mean(GramianWeighting):
    """``d = (1/K) sum_i g_i``: every weight is 1/K."""

    checks_finite = False  # aggregate() sums the rows without a Gram matrix

    def gram_weights(self, gram: Tensor) -> Tensor:
        k = gram.shape[0]
        return torch.full((k,), 1.0 / k, dtype=gram.dtype, device=gram.device)

    def fixed_weights(self, num_tasks: int) -> Tensor:
        self.last_weights = torch.full((num_tasks,), 1.0 / num_tasks)
        return self.last_weights

    def aggregate(self, jacobian: Tensor, losses: Tensor | None = None) -> Tensor:
        k = jacobian.shape[0]
        self.last_weights = torch.full((k,), 1.0 / k, dtype=jacobian.dtype, device=jacobian.device)
        return jacobian.mean(dim=0)
