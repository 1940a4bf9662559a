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

Where the loop's passes start (:func:`task_roots`). Pass ``i`` differentiating
``objectives[i]`` runs the backward of ``torch.stack``, which hands every task's branch a
gradient, zero for all but one, and autograd then runs the backward of every head on
zeros: K passes cost K x K head backwards. When the losses are a ``torch.stack`` of K
scalars and the objectives an elementwise function of them, pass ``i`` can start at the edge
into the i-th loss's own graph instead, with the cotangent ``d objective_i / d loss_i``: the
same rows to the bit (the same products, in the same order) at the cost of one head
backward per pass. Measured with one thread, the loop's Jacobian of SegNet-MTAN (K = 3,
shared encoder) took 96 ms instead of 186 ms, and the CelebA CNN's features Jacobian
(K = 40) 2.2 ms instead of 55 ms (7-11 ms batched).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge

from fairmtl.aggregators.base import check_finite_rows

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


@dataclass(frozen=True)
class TaskRoots:
    """Where the loop's K backward passes start: pass ``i`` differentiates ``outputs[i]``
    (an edge of the autograd graph) with the cotangent ``cotangents[i]``."""

    outputs: Sequence[GradientEdge]
    cotangents: Sequence[Tensor]


def task_roots(objectives: Tensor, losses: Tensor) -> TaskRoots | None:
    """Roots that skip the stack of the losses, or None where they do not apply.

    ``losses`` must be a ``torch.stack`` of K scalars that all require grad, and
    ``objectives`` an elementwise function of ``losses`` (or ``losses`` itself): e.g.
    ``lam * T(losses)`` with constant weights ``lam``, an elementwise transform ``T`` and
    a constant loss scale. Pass ``i`` then starts at the edge into the i-th loss's graph
    with cotangent ``d objective_i / d loss_i``, from one backward pass through the
    elementwise part. Hooks registered on ``losses`` itself do not run in these passes.
    """
    node = losses.grad_fn
    if node is None or losses.ndim != 1 or node.name() != "StackBackward0":
        return None
    edges = [GradientEdge(n, nr) for n, nr in node.next_functions if n is not None]
    if len(edges) != losses.shape[0]:  # a loss without a graph
        return None
    if objectives is losses:
        slopes = torch.ones_like(losses).detach()
    else:
        (slopes,) = torch.autograd.grad(
            objectives, losses, grad_outputs=torch.ones_like(objectives), retain_graph=True
        )
    return TaskRoots(edges, slopes.unbind())


def jacobian(
    objectives: Tensor,
    inputs: Sequence[Tensor],
    method: JacobianMethod = "auto",
    *,
    retain_graph: bool = True,
    roots: TaskRoots | None = None,
) -> Tensor:
    """Rows ``i`` = gradient of ``objectives[i]`` w.r.t. ``inputs``, flattened and concatenated.

    Inputs that an objective does not depend on contribute zeros. The result has the
    dtype of the first input (gradients are cast if inputs differ). ``roots`` (from
    :func:`task_roots`) make the loop's passes start past the stack of the losses; the
    batched call ignores them.
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
    whole = [Segment(i, 0, x.numel()) for i, x in enumerate(inputs)]
    return _block_jacobian(objectives, inputs, whole, retain_graph=retain_graph, roots=roots)


@dataclass(frozen=True)
class Segment:
    """Entries ``start:stop`` of the flattened input number ``index``."""

    index: int
    start: int
    stop: int


def input_blocks(inputs: Sequence[Tensor], num_tasks: int, max_bytes: int) -> list[list[Segment]]:
    """Consecutive column blocks of the Jacobian, each at most ``max_bytes`` (K rows).

    The columns are those of :func:`jacobian` (the flattened inputs, concatenated); a block
    is a list of segments of inputs, and a large input is split across blocks. Every
    block has at least one column, so the bound is ``max(max_bytes, K x itemsize)``.
    """
    itemsize = inputs[0].element_size() if inputs else 1
    width = max(1, max_bytes // (num_tasks * itemsize))  # columns per block
    blocks: list[list[Segment]] = [[]]
    room = width
    for index, x in enumerate(inputs):
        start, n = 0, x.numel()
        while start < n:
            if room == 0:
                blocks.append([])
                room = width
            stop = min(n, start + room)
            blocks[-1].append(Segment(index, start, stop))
            room -= stop - start
            start = stop
    return [b for b in blocks if b]


def _block_jacobian(
    objectives: Tensor,
    inputs: Sequence[Tensor],
    block: list[Segment],
    *,
    retain_graph: bool = True,
    roots: TaskRoots | None = None,
) -> Tensor:
    """The (K, columns) block of :func:`jacobian`: K backward passes to the block's inputs
    (from ``roots`` if given), each written into its row, keeping only the block's segments
    (the batched call would hold K gradients of each input). The graph is freed by the last
    pass unless ``retain_graph``."""
    k = objectives.shape[0]
    used = sorted({seg.index for seg in block})
    position = {index: j for j, index in enumerate(used)}
    width = sum(seg.stop - seg.start for seg in block)
    out = torch.empty(k, width, dtype=inputs[0].dtype, device=inputs[0].device)
    for i in range(k):
        start: Tensor | GradientEdge = objectives[i] if roots is None else roots.outputs[i]
        grads = torch.autograd.grad(
            start, [inputs[j] for j in used],
            grad_outputs=None if roots is None else [roots.cotangents[i]],
            retain_graph=retain_graph or i < k - 1, allow_unused=True, materialize_grads=True,
        )  # fmt: skip
        col = 0
        for seg in block:
            n = seg.stop - seg.start
            flat = grads[position[seg.index]].reshape(-1)
            out[i, col : col + n] = flat[seg.start : seg.stop]
            col += n
        del grads
    return out


def blockwise_gram(
    objectives: Tensor,
    inputs: Sequence[Tensor],
    max_bytes: int,
    *,
    scale: float = 1.0,
    check_rows: bool = True,
    roots: TaskRoots | None = None,
) -> Tensor:
    """The Gram matrix ``J J^T`` of :func:`jacobian` without holding ``J``.

    ``J J^T = sum_b J_b J_b^T`` over column blocks ``J_b`` of at most ``max_bytes`` each
    (:func:`input_blocks`), each computed by K backward passes and freed before the next:
    peak memory is one block plus one task's gradient of the block's inputs, at the cost of
    one K-pass Jacobian per block (a block's passes stop at its inputs, so blocks near the
    losses are cheaper). The weights of a Gramian weighting need only this matrix, and its
    direction ``J^T w`` is one more backward pass, of ``w . objectives``.

    Args:
        objectives: the (K,) objectives; their graph is retained.
        inputs: the tensors to differentiate with respect to.
        max_bytes: memory bound of a block of the Jacobian.
        scale: each block is divided by it first (the loss scale under AMP).
        check_rows: raise, naming the task, if a row has a NaN or infinite entry (decided
            per block on its Gram diagonal, see
            :func:`fairmtl.aggregators.base.check_finite_rows`); otherwise such a row makes
            the Gram diagonal non-finite (how an AMP overflow is detected).
        roots: where the passes start (:func:`task_roots`).
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
    if len(inputs) == 0:
        raise ValueError("no inputs to differentiate with respect to")
    k = objectives.shape[0]
    gram: Tensor | None = None
    for block in input_blocks(inputs, k, max_bytes):
        jac = _block_jacobian(objectives, inputs, block, roots=roots)
        if scale != 1.0:
            jac = jac / scale
        part = jac @ jac.T
        if check_rows:
            check_finite_rows(jac, part.diagonal())
        gram = part if gram is None else gram.add_(part)
        del jac
    assert gram is not None  # inputs is not empty
    return gram
