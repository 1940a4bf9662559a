"""Random and adversarial Gram matrices for the solver tests (float64)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

ALPHAS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0)


@dataclass(frozen=True)
class GramCase:
    name: str
    gram: Tensor
    jacobian: Tensor  # (K, m)


def random_jacobian(
    k: int, cond: float, scale: float, *, hetero: bool, gen: torch.Generator, extra_dims: int = 5
) -> Tensor:
    """A (K, K + extra_dims) Jacobian with singular values spread over ``sqrt(cond)``
    decades (so its Gram has condition number ``cond``), times ``scale``; with ``hetero``,
    task rows are further scaled by factors spread log-uniformly over [1e-8, 1e8]."""
    m = k + extra_dims
    q, _ = torch.linalg.qr(torch.randn(m, k, dtype=torch.float64, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(k, k, dtype=torch.float64, generator=gen))
    sv = torch.logspace(0, -0.5 * math.log10(cond), k, dtype=torch.float64)
    jac = ((q * sv) @ v.T).T * scale
    if hetero:
        row = torch.logspace(-8, 8, k, dtype=torch.float64)[torch.randperm(k, generator=gen)]
        jac = jac * row[:, None]
    return jac


def cases(n_random: int, seed: int = 0, max_k: int = 100) -> Iterator[GramCase]:
    """``n_random`` random cases (K in [2, max_k], cond up to 1e12, scales 1e-8..1e8, some
    with per-task scales spread over 16 decades) followed by structured adversarial ones."""
    gen = torch.Generator().manual_seed(seed)
    ks = [2, 3, 4, 5, 7, 10, 16, 25, 40, 64, 100]
    ks = [k for k in ks if k <= max_k]
    for i in range(n_random):
        k = ks[i % len(ks)]
        cond = 10.0 ** float(torch.randint(0, 13, (1,), generator=gen))
        scale = 10.0 ** float(torch.empty(1).uniform_(-8, 8, generator=gen))
        hetero = bool(i % 3 == 2)
        jac = random_jacobian(k, cond, scale, hetero=hetero, gen=gen)
        yield GramCase(
            f"random{i}-K{k}-cond{cond:.0e}-s{scale:.0e}-h{int(hetero)}", jac @ jac.T, jac
        )
    for k in (2, 5, 40):
        base = torch.randn(k, 3 * k, dtype=torch.float64, generator=gen)
        dup = base.clone()
        dup[1] = dup[0]
        yield GramCase(f"duplicated-K{k}", dup @ dup.T, dup)
        low = torch.randn(k, 2, dtype=torch.float64, generator=gen) @ torch.randn(
            2, 3 * k, dtype=torch.float64, generator=gen
        )
        low = low + 1e-9 * torch.randn(k, 3 * k, dtype=torch.float64, generator=gen)
        yield GramCase(f"nearly-rank-2-K{k}", low @ low.T, low)
        near_opp = base.clone()
        near_opp[1] = -near_opp[0] + 1e-6 * torch.randn(3 * k, dtype=torch.float64, generator=gen)
        yield GramCase(f"nearly-opposite-K{k}", near_opp @ near_opp.T, near_opp)
        spread = base * torch.logspace(-8, 8, k, dtype=torch.float64)[:, None]
        yield GramCase(f"scales-1e-8..1e8-K{k}", spread @ spread.T, spread)
        aligned = torch.randn(1, 3 * k, dtype=torch.float64, generator=gen) + 1e-3 * base
        yield GramCase(f"almost-aligned-K{k}", aligned @ aligned.T, aligned)
