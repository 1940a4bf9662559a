"""Per-task gradients: the (K, m) Jacobian of K objectives w.r.t. a list of tensors.

Two ways that agree to float tolerance:

- ``"loop"``: K reverse-mode passes, one per task (the reference implementations' way),
  each written straight into its row of a preallocated (K, m) matrix;
- ``"batched"``: one call to :func:`torch.autograd.grad` with ``is_grads_batched=True``,
  which vectorises the K backward passes with vmap.

``"auto"`` (the default) takes the loop on the CPU and the batched call elsewhere. On the
CPU, vmap gains nothing over the loop and costs more time and memory: measured with one
thread (``benchmarks/speed_suite.py`` shapes), the CelebA CNN (K = 40, batch 2) took
6.1 s batched against 4.7 s looped, LeNet (K = 2) 78 against 75 ms, SegNet-MTAN (K = 3)
245 against 247 ms; the batched call also holds every per-parameter (K, ...) gradient
and their concatenation at once. On accelerators one vectorised pass saves K - 1 rounds
of kernel launches.

Features mode (MGDA-UB, Sener & Koltun 2018, section 3.3) is the same call with the
shared representation as the only input; see :class:`fairmtl.Balancer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

JacobianMethod = Literal["auto", "loop", "batched"]
METHODS: tuple[str, ...] = get_args(JacobianMethod)


def resolve_method(method: str, device: torch.device) -> str:
    """``"loop"`` or ``"batched"`` for a requested method on ``device`` (``"auto"``: loop
    on the CPU, batched elsewhere)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if method == "auto":
        return "loop" if device.type == "cpu" else "batched"
    return method


def jacobian(
    objectives: Tensor,
    inputs: Sequence[Tensor],
    method: JacobianMethod = "auto",
    *,
    retain_graph: bool = True,
) -> Tensor:
    """Rows ``i`` = gradient of ``objectives[i]`` w.r.t. ``inputs``, flattened and concatenated.

    Inputs that an objective does not depend on contribute zeros. The result has the
    dtype of the first input (gradients are cast if inputs differ).
    """
    if objectives.ndim != 1:
        raise ValueError(f"objectives must be a (K,) tensor, got shape {tuple(objectives.shape)}")
    if len(inputs) == 0:
        raise ValueError("no inputs to differentiate with respect to")
    k = objectives.shape[0]
    dtype = inputs[0].dtype
    if resolve_method(method, inputs[0].device) == "batched":
        eye = torch.eye(k, dtype=objectives.dtype, device=objectives.device)
        grads = torch.autograd.grad(
            objectives,
            list(inputs),
            grad_outputs=eye,
            is_grads_batched=True,
            retain_graph=retain_graph,
            allow_unused=True,
            materialize_grads=True,
        )
        return torch.cat([g.reshape(k, -1).to(dtype) for g in grads], dim=1)
    m = sum(x.numel() for x in inputs)
    out = torch.empty(k, m, dtype=dtype, device=inputs[0].device)
    for i in range(k):
        grads = torch.autograd.grad(
            objectives[i],
            list(inputs),
            retain_graph=retain_graph or i < k - 1,
            allow_unused=True,
            materialize_grads=True,
        )
        torch.cat([g.reshape(-1).to(dtype) for g in grads], out=out[i])
    return out
