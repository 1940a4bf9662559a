"""Exact multi-task aggregation across data-parallel ranks (torch.distributed).

Gradient-balancing methods are non-linear in the per-task gradients, so averaging each
rank's aggregated direction (what wrapping the model in ``DistributedDataParallel``
does) is a different method. The :class:`~fairmtl.Balancer` with ``distributed=True``
instead makes every rank see the per-task quantities of the *union* of the ranks'
batches, then runs the method identically everywhere:

- the K task losses are averaged across ranks (``L_i``, the union batch's losses with
  equal per-rank batch sizes); loss weightings and loss-aware aggregators see ``L``;
- each rank differentiates ``lambda_i * T'(L_i) * l_i^(r)``, whose rank average is the
  gradient of ``lambda_i * T(L_i)``, the union objective, for any loss transform ``T``;
- the (K, m) Jacobian of the shared parameters is averaged across ranks (one
  all-reduce of K*m numbers), so every rank holds the union Jacobian and computes the
  same weights and direction; the heads' gradients are averaged like DDP's.

Random methods draw the same numbers on every rank when seeded identically; the first
distributed step checks that the method states agree across ranks and raises otherwise.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import torch
from torch import Tensor, nn

Group = Any
"""A ``torch.distributed`` process group (``None`` = the default group)."""


def is_active() -> bool:
    """Whether torch.distributed is initialised with more than one process."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size(group: Group = None) -> int:
    return torch.distributed.get_world_size(group)


def all_reduce_mean(tensor: Tensor, group: Group = None) -> Tensor:
    """The element-wise mean of ``tensor`` over the ranks (a new tensor; the input is kept)."""
    out = tensor.detach().clone()
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM, group=group)
    return out.div_(world_size(group))


def _fingerprint(state: object) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return int.from_bytes(hashlib.sha256(buffer.getvalue()).digest()[:7], "little")


def check_same_on_all_ranks(state: object, what: str, group: Group = None) -> None:
    """Raise if ``state`` (anything ``torch.save`` accepts) differs between ranks."""
    value = torch.tensor([_fingerprint(state)], dtype=torch.int64)
    if torch.distributed.get_backend(group) == "nccl":
        value = value.cuda()
    low, high = value.clone(), value.clone()
    torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN, group=group)
    torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX, group=group)
    if int(low) != int(high):
        raise RuntimeError(
            f"{what} differs across ranks (rank {torch.distributed.get_rank(group)} has "
            "another state): every rank must build the methods identically, with the same "
            "seed (e.g. seed=...) , or they would compute different directions and diverge"
        )


_DDP_MESSAGE = (
    "{what} is (or contains) a DistributedDataParallel module: DDP averages the gradients "
    "of the summed loss across ranks before any multi-task method sees the per-task "
    "gradients. Do not wrap the model in DDP; use Balancer(..., distributed=True), which "
    "reduces the per-task gradients itself and runs the method exactly on the union of "
    "the ranks' batches"
)


def reject_ddp(module: object, what: str) -> None:
    """Raise if ``module`` is, or contains, a ``DistributedDataParallel`` module.

    DDP averages the gradient of the summed loss across ranks during backward, before a
    method could see the per-task gradients; combined with a multi-task method this is
    silently a different method (or leaves DDP waiting for a reduction that never runs).
    """
    if not isinstance(module, nn.Module):
        return
    ddp = torch.nn.parallel.DistributedDataParallel
    if any(isinstance(sub, ddp) for sub in module.modules()):
        raise TypeError(_DDP_MESSAGE.format(what=what))


def reject_ddp_parameters(params: list[Tensor], what: str) -> None:
    """Raise if a live ``DistributedDataParallel`` module holds one of ``params``.

    Parameters do not know their module, so this looks through the live DDP objects
    once (the Balancer calls it on its first distributed step only).
    """
    import gc
    import warnings

    ddp = torch.nn.parallel.DistributedDataParallel
    ids = {id(p) for p in params}
    with warnings.catch_warnings():  # isinstance() on deprecated module objects warns
        warnings.simplefilter("ignore")
        owners = [obj for obj in gc.get_objects() if isinstance(obj, ddp)]
    for obj in owners:
        if any(id(p) in ids for p in obj.parameters()):
            raise TypeError(_DDP_MESSAGE.format(what=what))


def transform_slope(transform: Any, global_losses: Tensor) -> Tensor:
    """``T'(L)`` element-wise, by autograd, for any loss transform ``T``."""
    at = global_losses.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (slope,) = torch.autograd.grad(transform(at).sum(), at)
    return slope
