"""Per-task gradients: the (K, m) Jacobian of K objectives w.r.t. a list of tensors.

Two ways that agree to float tolerance:

- ``"loop"``: K reverse-mode passes, one per task (the reference implementations' way);
- ``"batched"``: one call to :func:`torch.autograd.grad` with ``is_grads_batched=True``,
  which vectorises the K backward passes with vmap.

Features mode (MGDA-UB, Sener & Koltun 2018, section 3.3) is the same call with the
shared representation as the only input; see :class:`fairmtl.Balancer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

JacobianMethod = Literal["loop", "batched"]


def jacobian(
    objectives: Tensor,
    inputs: Sequence[Tensor],
    method: JacobianMethod = "batched",
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
    if method == "batched":
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
    if method == "loop":
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
    raise ValueError(f"method must be 'loop' or 'batched', got {method!r}")
