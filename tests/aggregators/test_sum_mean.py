"""Sum and Mean."""

from __future__ import annotations

import torch

import fairmtl


def test_sum_and_mean() -> None:
    jac = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    torch.testing.assert_close(fairmtl.Sum()(jac), torch.tensor([4.0, -2.0]))
    torch.testing.assert_close(fairmtl.Mean()(jac), torch.tensor([2.0, -1.0]))
    torch.testing.assert_close(fairmtl.Mean().weights(jac @ jac.T), torch.tensor([0.5, 0.5]))
