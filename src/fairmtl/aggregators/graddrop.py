"""GradDrop: gradient sign dropout (Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov,
NeurIPS 2020)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from fairmtl._checks import check_real
from fairmtl._random import RandomStream
from fairmtl._registry import register
from fairmtl.aggregators.base import Aggregator


def _check_leak(leak: float | Sequence[float]) -> float | tuple[float, ...]:
    values = [leak] if isinstance(leak, (int, float)) else list(leak)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"leak must be a number or a sequence of numbers, got {leak!r}")
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"leak values must be in [0, 1], got {leak!r}")
    if isinstance(leak, (int, float)):
        return float(leak)
    if not values:
        raise ValueError("leak must not be an empty sequence")
    return tuple(float(v) for v in values)


_BLOCK_BYTES = 1 << 20  # CPU: the Jacobian in column blocks of about this many bytes


@register("graddrop")
class GradDrop(Aggregator):
    """GradDrop (Chen et al., NeurIPS 2020, section 3: sign purity ``P``, masks, masked sum).

    Per coordinate, ``P = 0.5 (1 + sum_i g_i / (sum_i |g_i| + eps))`` and ``U ~ U(0, 1)``;
    task ``i`` keeps ``g_i`` where ``(P > U and g_i > 0)`` or ``(P < U and g_i < 0)`` (the
    paper's ``f`` is the identity), and ``d = sum_i (leak_i + (1 - leak_i) M_i) g_i``; the
    paper's default is no leak (``leak = 0``). Draw order: one ``torch.rand(m)`` per call from
    this instance's seeded stream on the Jacobian's device, in float64 for a float64
    Jacobian and float32 otherwise (``P`` is computed in that dtype too). ``eps`` guards 0/0
    and is absolute: where ``sum_i |g_i|`` is far below it, ``P`` tends to 0.5 (coin flips).

    Difference from the paper: it inserts GradDrop as a layer acting on the gradients with
    respect to an activation tensor; here it acts on the Jacobian's coordinates, i.e. the
    shared parameters, or the shared representation in the Balancer's ``features=`` mode.

    Args:
        leak: ``leak_i`` in [0, 1], one number for every task or one per task (1 lets the
            task's gradient through unmasked).
        eps: the constant in ``P``'s denominator (> 0, default 1e-8).
        seed: seed of the mask stream (``None``: drawn from torch's global generator).
    """

    deterministic = False

    def __init__(
        self, leak: float | Sequence[float] = 0.0, eps: float = 1e-8, seed: int | None = None
    ) -> None:
        self.leak = _check_leak(leak)
        self.eps = check_real("eps", eps, 0.0, low_open=True)
        self._stream = RandomStream(seed)

    def aggregate(self, jacobian: Tensor, losses: Tensor | None = None) -> Tensor:
        k, m = jacobian.shape
        work = torch.float64 if jacobian.dtype == torch.float64 else torch.float32
        gen = self._stream.generator(jacobian.device)
        u = torch.rand(m, generator=gen, device=jacobian.device, dtype=work)
        leak: Tensor | float
        if isinstance(self.leak, tuple):
            if len(self.leak) != k:
                raise ValueError(f"leak has {len(self.leak)} values but there are {k} tasks")
            leak = torch.tensor(self.leak, dtype=work, device=jacobian.device)[:, None]
        else:
            leak = self.leak
        # Every coordinate is independent: on the CPU, blocks of columns whose K x width
        # temporaries stay in cache (the same formula, float32 sums may round differently;
        # 40 x 5.2M on one thread: 1.3 s against 6.9 s, and no K x m temporaries); one
        # block elsewhere (fewer kernel launches).
        width = m if jacobian.device.type != "cpu" else max(1024, _BLOCK_BYTES // (4 * k))
        out = torch.empty(m, dtype=work, device=jacobian.device)
        for start in range(0, m, width):
            cols = slice(start, min(m, start + width))
            out[cols] = self._masked_sum(jacobian[:, cols].to(work), u[cols], leak)
        return out.to(jacobian.dtype)

    def _masked_sum(self, g: Tensor, u: Tensor, leak: Tensor | float) -> Tensor:
        """``sum_i (leak_i + (1 - leak_i) M_i) g_i`` on a block of columns."""
        purity = 0.5 * (1.0 + g.sum(dim=0) / (g.abs().sum(dim=0) + self.eps))
        keep = ((purity > u) & (g > 0)) | ((purity < u) & (g < 0))
        if isinstance(leak, Tensor) or leak > 0.0:
            factor = leak + (1.0 - leak) * keep.to(g.dtype)
            return (factor * g).sum(dim=0)
        return torch.where(keep, g, 0.0).sum(dim=0)

    def state_dict(self) -> dict[str, Any]:
        return {"random": self._stream.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "random" not in state:
            raise KeyError("GradDrop state lacks ['random']")
        self._stream.load_state_dict(state["random"])

    def __repr__(self) -> str:
        extra = "" if self.leak == 0.0 else f"leak={self.leak}, "
        return f"GradDrop({extra}eps={self.eps}, seed={self._stream.seed})"
