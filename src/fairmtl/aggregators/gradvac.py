"""GradVac: Gradient Vaccine (Wang, Tsvetkov, Firat & Cao, ICLR 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from fairmtl._checks import check_real
from fairmtl._random import RandomStream
from fairmtl._registry import register
from fairmtl.aggregators.base import Aggregator, check_gram_shape, gram_matrix


def gradvac_coefficients(
    gram: Tensor, phi_hat: Tensor, beta: float, orders: Tensor | Sequence[Sequence[int]]
) -> tuple[Tensor, Tensor]:
    """One GradVac pass on a Gram matrix: the coefficients ``C`` and the updated targets.

    Row ``i`` of ``C`` (K, K) expresses the vaccinated gradient as ``g_i' = sum_k C_ik g_k``;
    task ``i`` visits the tasks ``orders[i]`` (a (K, K) tensor of permutations) in that
    order, skipping ``i`` itself (a list of per-task orders of the other tasks works too). All inner products come from ``A = gram``:
    ``g_i' . g_j = (C_i A)_j`` and ``||g_i'||^2 = C_i A C_i^T``. The rows are independent,
    so round ``t`` updates every task's ``t``-th pair at once: K rounds of O(K^2) tensor
    work in float64 on the Gram matrix's device, no host synchronisation. A pair where
    ``g_i'`` or ``g_j`` is zero is skipped and its target left unchanged; a target of
    exactly 1 (a zero angle, unreachable by a finite step) triggers no correction.
    """
    a = gram.detach().to(torch.float64)
    k = a.shape[0]
    target = phi_hat.detach().to(device=a.device, dtype=torch.float64).clone()
    if target.shape != (k, k):
        raise ValueError(f"phi_hat must have shape {(k, k)}, got {tuple(target.shape)}")
    if not isinstance(orders, Tensor):
        orders = torch.tensor([list(o) + [i] * (k - len(o)) for i, o in enumerate(orders)])
    orders = orders.to(a.device)
    norms = a.diagonal().clamp(min=0).sqrt()
    coef = torch.eye(k, dtype=a.dtype, device=a.device)
    rows = torch.arange(k, device=a.device)
    for t in range(k):
        j = orders[:, t]
        dots = (coef @ a)[rows, j]  # g_i' . g_j
        norm_i = ((coef @ a) * coef).sum(dim=1).clamp(min=0).sqrt()
        norm_j = norms[j]
        live = (j != rows) & (norm_i > 0) & (norm_j > 0)
        denom = torch.where(live, norm_i * norm_j, 1.0)
        phi = (dots / denom).clamp(-1.0, 1.0)
        goal = target[rows, j]
        sin_goal = (1.0 - goal * goal).clamp(min=0).sqrt()
        sin_phi = (1.0 - phi * phi).clamp(min=0).sqrt()
        fix = live & (phi < goal) & (sin_goal > 0)
        step = (
            norm_i * (goal * sin_phi - phi * sin_goal) / (torch.where(fix, norm_j * sin_goal, 1.0))
        )
        coef[rows, j] += torch.where(fix, step, 0.0)
        target[rows, j] = torch.where(live, (1.0 - beta) * goal + beta * phi, goal)
    return coef, target


@register("gradvac")
class GradVac(Aggregator):
    """Gradient Vaccine (Wang et al., ICLR 2021, Algorithm 1, whole-model granularity).

    For every task ``i``, ``g_i' = g_i``; for the other tasks ``j`` in a random order,
    with ``phi_ij = cos(g_i', g_j)``: if ``phi_ij < phi_hat_ij`` then
    ``g_i' += ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
    / (||g_j|| sqrt(1 - phi_hat^2)) g_j`` (which makes ``cos(g_i', g_j) = phi_hat_ij``);
    then ``phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij`` with the ``phi_ij`` measured
    before the correction. ``d = sum_i g_i'``; ``phi_hat`` starts at 0 and is kept as state.

    Every ``g_i'`` is a combination of the original gradients, so the whole pass runs on the
    (K, K) Gram matrix (:func:`gradvac_coefficients`) and ``d = G w`` with ``w = C^T 1``.
    Random order: each call draws ``U = torch.rand(K, K)`` (float32, from this instance's
    seeded stream on the Jacobian's device) and task ``i`` visits ``j != i`` by increasing
    ``U[i, j]``. Differences from the paper: a single parameter group (the paper also
    vaccinates per layer or per matrix); zero gradients are skipped instead of adding an
    ``eps`` to the denominators (TorchJD adds 1e-8). ``beta`` defaults to the paper's 1e-2
    (LibMTL and TorchJD default to 0.5). Not a :class:`GramianWeighting`: with a random
    order, two fresh instances give different weights, which that interface rules out.

    Args:
        beta: EMA rate of the similarity targets, in (0, 1].
        seed: seed of the order stream (``None``: drawn from torch's global generator).
    """

    checks_finite = True  # through gram_matrix()

    deterministic = False

    def __init__(self, beta: float = 0.01, seed: int | None = None) -> None:
        self.beta = check_real("beta", beta, 0.0, 1.0, low_open=True)
        self._stream = RandomStream(seed)
        self._phi_hat: Tensor | None = None

    def weights(self, gram: Tensor) -> Tensor:
        """The K weights ``w = C^T 1`` for a (K, K) Gram matrix; advances the state."""
        check_gram_shape(gram)
        k = gram.shape[0]
        if self._phi_hat is None:
            phi_hat = torch.zeros(k, k, dtype=torch.float64)
        elif self._phi_hat.shape != (k, k):
            raise ValueError(
                f"GradVac holds targets for {self._phi_hat.shape[0]} tasks but got {k}; "
                "use a fresh instance for another task count"
            )
        else:
            phi_hat = self._phi_hat
        gen = self._stream.generator(gram.device)
        u = torch.rand(k, k, generator=gen, device=gram.device, dtype=torch.float32)
        orders = torch.argsort(u, dim=1, stable=True)
        coef, target = gradvac_coefficients(gram, phi_hat, self.beta, orders)
        self._phi_hat = target.cpu()
        return coef.sum(dim=0).to(device=gram.device, dtype=gram.dtype)

    def aggregate(self, jacobian: Tensor, losses: Tensor | None = None) -> Tensor:
        return self.weights(gram_matrix(jacobian)) @ jacobian

    @property
    def phi_hat(self) -> Tensor | None:
        """The similarity targets (K, K) in float64 (``None`` before the first call)."""
        return None if self._phi_hat is None else self._phi_hat.clone()

    def state_dict(self) -> dict[str, Any]:
        return {
            "phi_hat": None if self._phi_hat is None else self._phi_hat.clone(),
            "random": self._stream.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"phi_hat", "random"} - set(state)
        if missing:
            raise KeyError(f"GradVac state lacks {sorted(missing)}")
        phi = state["phi_hat"]
        self._phi_hat = (
            None if phi is None else torch.as_tensor(phi, dtype=torch.float64).cpu().clone()
        )
        self._stream.load_state_dict(state["random"])

    def __repr__(self) -> str:
        return f"GradVac(beta={self.beta}, seed={self._stream.seed})"
