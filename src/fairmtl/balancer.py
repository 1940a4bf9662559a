"""The pipeline object: losses -> transform -> loss weights -> per-task gradients ->
aggregator -> ``.grad`` (IGB, Algorithm 3; FairGrad, section 6)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fairmtl import distributed as dist
from fairmtl._registry import make
from fairmtl.aggregators.base import Aggregator, GramianWeighting, check_losses
from fairmtl.errors import InvalidLossError
from fairmtl.jacobian import METHODS as JACOBIAN_METHODS
from fairmtl.jacobian import (
    JacobianMethod,
    TaskRoots,
    blockwise_gram,
    jacobian,
    resolve_method,
    task_roots,
)
from fairmtl.transforms import Identity, LossTransform
from fairmtl.weighting.base import Weighting
from fairmtl.weighting.ls import LS


class Balancer:
    """Turns K task losses into gradients on a multi-task model.

    One step::

        balancer = fairmtl.Balancer(aggregator=fairmtl.FairGrad(alpha=2.0))
        optimizer.zero_grad()
        losses = torch.stack([loss_seg, loss_depth, loss_normal])
        balancer.backward(losses, shared=model.encoder.parameters(),
                          task_params=model.heads.parameters())
        optimizer.step()

    ``shared`` parameters receive the aggregated direction ``d`` of the per-task
    gradients of ``lambda_i * T(l_i)``; ``task_params`` (the heads) receive the gradient
    of ``sum_i lambda_i * T(l_i)``, i.e. each head the gradient of its own weighted,
    transformed loss. Gradients are accumulated into ``.grad`` like ``Tensor.backward``.

    Features mode (``features=z`` instead of ``shared``): per-task gradients are taken
    w.r.t. the shared representation ``z`` (MGDA-UB), aggregated, and back-propagated
    through the encoder in one pass: cheaper, an approximation for non-linear methods.

    Args:
        aggregator: an :class:`Aggregator` or a registered name (default ``"sum"``).
        weighting: a loss-balancing :class:`Weighting` or name (default constant ones).
        transform: a :class:`LossTransform` or name (default: the weighting's
            ``default_transform``, e.g. log for IGB and SI, else identity).
        num_tasks: K, if known; otherwise fixed by the first call.
        jacobian_method: ``"auto"`` (default: ``"loop"`` on the CPU, ``"batched"`` on
            accelerators and for a features-mode Jacobian of at most 2^20 entries unless
            the losses are a ``torch.stack``; see :mod:`fairmtl.jacobian`), ``"batched"``
            (one vmapped backward) or ``"loop"`` (K backward passes; when the losses are a
            ``torch.stack`` of the K scalar losses, each pass starts at its own loss and
            skips the other tasks' heads, see :func:`fairmtl.jacobian.task_roots`).
        check_losses: validate the losses every step (one host sync; disable for speed).
        weight_heads: give each head the gradient of its loss times the aggregator's weight
            ``w_i`` too (Nash-MTL's and MGDA-UB's reference code do this). Needs a
            :class:`GramianWeighting`; default ``False`` (heads get their own loss only).
        distributed: data-parallel training with torch.distributed (see
            :mod:`fairmtl.distributed`): the losses and the per-task gradients are averaged
            across ranks before the method runs, so every rank applies the method to the
            union of the ranks' batches and takes the same step. ``None`` (default): on
            when torch.distributed is initialised with more than one process. Do not wrap
            the model in ``DistributedDataParallel``.
        process_group: the process group (default: the default group).
        max_jacobian_bytes: memory bound for the (K, m) Jacobian of the shared parameters
            or the features (``None``, the default: no bound). When ``K x m`` would exceed it, the Gram
            matrix is accumulated over blocks of parameters, each block's Jacobian freed
            before the next (:func:`fairmtl.jacobian.blockwise_gram`; large parameters
            are split), and the direction ``J^T w`` is one more backward pass of
            ``w . objectives``: the same result for one K-pass Jacobian per block (always
            the loop: the batched call would hold K gradients of each parameter). Needs a
            :class:`GramianWeighting`; not supported with distributed training.

    Aggregators that need the loss values (``requires_losses``, e.g. MoCo) receive the
    raw task losses ``l`` of this step.
    """

    def __init__(
        self,
        aggregator: Aggregator | str = "sum",
        weighting: Weighting | str | None = None,
        transform: LossTransform | str | None = None,
        *,
        num_tasks: int | None = None,
        jacobian_method: JacobianMethod = "auto",
        check_losses: bool = True,
        weight_heads: bool = False,
        distributed: bool | None = None,
        process_group: Any | None = None,
        max_jacobian_bytes: int | None = None,
    ) -> None:
        self.aggregator: Aggregator = _resolve(aggregator, Aggregator, "aggregator")
        self.weighting: Weighting = _resolve(
            LS() if weighting is None else weighting, Weighting, "weighting"
        )
        if transform is None:
            transform = self.weighting.default_transform or Identity()
        self.transform: LossTransform = _resolve(transform, LossTransform, "transform")
        if num_tasks is not None and (not isinstance(num_tasks, int) or num_tasks < 1):
            raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
        self.num_tasks = num_tasks
        if jacobian_method not in JACOBIAN_METHODS:
            raise ValueError(
                f"jacobian_method must be one of {', '.join(map(repr, JACOBIAN_METHODS))}, "
                f"got {jacobian_method!r}"
            )
        self.jacobian_method: JacobianMethod = jacobian_method
        self.check_losses = check_losses
        if weight_heads and not isinstance(self.aggregator, GramianWeighting):
            raise ValueError(
                f"weight_heads=True needs an aggregator with task weights (a GramianWeighting); "
                f"{self.aggregator!r} is not one"
            )
        self.weight_heads = weight_heads
        self.max_jacobian_bytes = _check_max_bytes(max_jacobian_bytes, self.aggregator)
        if distributed not in (None, True, False):
            raise ValueError(f"distributed must be None, True or False, got {distributed!r}")
        self.distributed = distributed
        self.process_group = process_group
        self._ranks_checked = False
        self.last_loss_weights: Tensor | None = None

    # ------------------------------------------------------------------ validation
    def _loss_vector(self, losses: Tensor | Sequence[Tensor]) -> Tensor:
        if not isinstance(losses, Tensor):
            items = list(losses)
            for i, item in enumerate(items):
                if not isinstance(item, Tensor) or item.numel() != 1:
                    raise InvalidLossError(
                        f"loss of task {i} must be a scalar tensor, got {item!r}"
                    )
            losses = torch.stack([item.reshape(()) for item in items])
        if losses.ndim != 1:
            raise InvalidLossError(
                f"losses must be a (K,) tensor of task losses, got shape {tuple(losses.shape)}"
            )
        k = losses.shape[0]
        if self.num_tasks is None:
            if k == 0:
                raise InvalidLossError("got no losses")
            self.num_tasks = k
        elif k != self.num_tasks:
            raise InvalidLossError(f"expected {self.num_tasks} task losses, got {k}")
        if self.check_losses:
            finite = torch.isfinite(losses.detach())
            if not bool(finite.all()):
                i = int((~finite).nonzero()[0])
                raise InvalidLossError(f"loss of task {i} is not finite: {losses[i].item()!r}")
        return losses

    @staticmethod
    def _param_list(params: Iterable[Tensor] | nn.Module | None, what: str) -> list[Tensor]:
        if params is None:
            return []
        if isinstance(params, nn.Module):
            dist.reject_ddp(params, what)
            params = params.parameters()
        if isinstance(params, Tensor):
            params = [params]
        out = list(params)
        for i, p in enumerate(out):
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise ValueError(f"{what}[{i}] must be a tensor that requires grad")
        return out

    # ------------------------------------------------------------------ the step
    def backward(
        self,
        losses: Tensor | Sequence[Tensor],
        shared: Iterable[Tensor] | nn.Module | None = None,
        *,
        features: Tensor | None = None,
        task_params: Iterable[Tensor] | nn.Module | None = None,
        scaler: Any | None = None,
        retain_graph: bool = False,
    ) -> Tensor:
        """Compute and accumulate the gradients of one step; return the loss weights (K,).

        Args:
            losses: the K task losses, a (K,) tensor or a sequence of scalar tensors.
            shared: parameters shared by all tasks (gets the aggregated direction), or the
                module holding them.
            features: instead of ``shared``, the shared representation (features mode).
            task_params: task-specific parameters (heads), or their module.
            scaler: a ``torch.amp.GradScaler``: pass the *unscaled* losses and the scaler;
                the backward passes run on scaled objectives (no fp16 underflow) and the
                aggregator sees the unscaled Jacobian, so no method changes its direction
                or magnitude under AMP. Then call ``scaler.step(optimizer)`` as usual.
            retain_graph: keep the autograd graph after this call.
        """
        if (shared is None) == (features is None):
            raise ValueError(
                "pass exactly one of shared= (parameters) or features= (representation)"
            )
        losses = self._loss_vector(losses)
        if features is not None:
            if not isinstance(features, Tensor) or not features.requires_grad:
                raise ValueError(
                    "features must be a tensor that requires grad (the shared representation)"
                )
            inputs = [features]
        else:
            if self.aggregator.features_only:
                raise ValueError(
                    f"{self.aggregator!r} is defined on gradients w.r.t. the shared "
                    "representation: pass features=z (the encoder output) instead of shared="
                )
            inputs = self._param_list(shared, "shared")
            if not inputs:
                raise ValueError("the list of shared parameters is empty")
        heads = self._param_list(task_params, "task_params")
        shared_ids = {id(p) for p in inputs}
        for i, p in enumerate(heads):
            if id(p) in shared_ids:
                raise ValueError(f"task_params[{i}] is also among the shared parameters")

        if self._distributed_on():
            lam = self._backward_distributed(losses, inputs, heads, features, scaler, retain_graph)
            self.last_loss_weights = lam
            return lam

        transformed = self.transform(losses)
        given = losses if self.weighting.requires_graph else losses.detach()
        lam = self.weighting.weights(given).detach().to(transformed.dtype)
        if lam.shape != losses.shape:
            raise RuntimeError(
                f"{self.weighting!r} returned weights of shape {tuple(lam.shape)}, expected {tuple(losses.shape)}"
            )
        objectives = lam * transformed
        if scaler is not None:
            objectives = scaler.scale(objectives)  # also initialises a fresh scaler's state

        fixed = self.aggregator.fixed_weights(losses.shape[0])
        if fixed is not None:
            # Heads and shared parameters want the same weights when the heads are weighted
            # too or every weight is 1 (decided on the host tensor: no device sync).
            same = not heads or self.weight_heads or bool((fixed == 1).all())
            fixed = fixed.to(objectives)
            if features is None and same:
                # Weights that do not depend on the gradients (LS, mean): one backward pass.
                torch.autograd.backward(
                    (fixed * objectives).sum(), inputs=inputs + heads, retain_graph=retain_graph
                )
                self.last_loss_weights = lam
                return lam
            grads = torch.autograd.grad(
                (fixed * objectives).sum(), inputs, retain_graph=True, materialize_grads=True
            )
            direction = torch.cat([g.reshape(-1) for g in grads])
        else:
            direction = self._aggregate(objectives, inputs, losses, scaler, features is not None)

        if heads:
            head_grads = torch.autograd.grad(
                self._head_objective(objectives).sum(),
                heads,
                retain_graph=retain_graph or features is not None,
                allow_unused=True,
                materialize_grads=True,
            )
            for p, g in zip(heads, head_grads):
                _accumulate(p, g)
        if features is not None:
            features.backward(
                direction.view_as(features).to(features.dtype), retain_graph=retain_graph
            )
        else:
            _accumulate_flat(inputs, direction)
        self.last_loss_weights = lam
        return lam

    # ------------------------------------------------------------------ distributed
    def _distributed_on(self) -> bool:
        if self.distributed is None:
            return dist.is_active()
        if self.distributed and not dist.is_active():
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                return False  # a single process: nothing to reduce
            raise RuntimeError(
                "Balancer(distributed=True) needs torch.distributed to be initialised "
                "(torch.distributed.init_process_group, e.g. under torchrun)"
            )
        return bool(self.distributed)

    def _backward_distributed(
        self,
        losses: Tensor,
        inputs: list[Tensor],
        heads: list[Tensor],
        features: Tensor | None,
        scaler: Any | None,
        retain_graph: bool,
    ) -> Tensor:
        """One step on the union of the ranks' batches (see :mod:`fairmtl.distributed`)."""
        if features is not None:
            raise NotImplementedError(
                "features mode is not supported with distributed training: each rank's "
                "representation holds other samples; pass shared= (the encoder's parameters)"
            )
        if self.max_jacobian_bytes is not None:
            raise NotImplementedError(
                "max_jacobian_bytes (the blockwise Jacobian) is not supported with "
                "distributed training"
            )
        if self.weighting.requires_graph:
            raise NotImplementedError(
                f"{self.weighting!r} differentiates through the losses' graph on one rank's "
                "batch only; it is not supported with distributed training"
            )
        group = self.process_group
        if not self._ranks_checked:
            dist.reject_ddp_parameters(inputs + heads, "the model being trained")
            dist.check_same_on_all_ranks(self.state_dict(), f"the state of {self!r}", group)
            self._ranks_checked = True
        union = dist.all_reduce_mean(losses.detach(), group)
        lam = self.weighting.weights(union).detach().to(losses.dtype)
        if lam.shape != losses.shape:
            raise RuntimeError(
                f"{self.weighting!r} returned weights of shape {tuple(lam.shape)}, expected {tuple(losses.shape)}"
            )
        slope = dist.transform_slope(self.transform, union).to(losses.dtype)
        objectives = lam * slope * losses  # rank mean of its gradient = grad of lam * T(union)
        if scaler is not None:
            objectives = scaler.scale(objectives)
        keep = retain_graph or bool(heads)
        fixed = self.aggregator.fixed_weights(losses.shape[0])
        if fixed is not None:
            fixed = fixed.to(objectives)
            grads = torch.autograd.grad(
                (fixed * objectives).sum(), inputs, retain_graph=keep, materialize_grads=True
            )
            direction = torch.cat([g.reshape(-1) for g in grads])
            same = self.weight_heads or bool((fixed == 1).all())
            head_objective = fixed * objectives if same else objectives
            if heads:
                # Shared and head gradients in one all-reduce, as DDP would.
                head_grads = torch.autograd.grad(
                    head_objective.sum(), heads, retain_graph=retain_graph,
                    allow_unused=True, materialize_grads=True,
                )  # fmt: skip
                flat = torch.cat([direction] + [g.reshape(-1) for g in head_grads])
                flat = dist.all_reduce_mean(flat, group)
                direction, rest = flat[: direction.numel()], flat[direction.numel() :]
                _accumulate_flat(heads, rest)
            else:
                direction = dist.all_reduce_mean(direction, group)
        else:
            method, roots = self._jacobian_plan(objectives, inputs, losses, features=False)
            jac = jacobian(objectives, inputs, method, retain_graph=keep, roots=roots)
            torch.distributed.all_reduce(jac, group=group)
            jac.div_(dist.world_size(group))
            scale = 1.0 if scaler is None else float(scaler.get_scale())
            if scale != 1.0:
                jac = jac / scale
            if scaler is not None and _overflowed(jac):
                direction = torch.full(
                    (jac.shape[1],), float("inf"), dtype=jac.dtype, device=jac.device
                )
            else:
                direction = self.aggregator(jac, union) * scale
            if heads:
                head_grads = torch.autograd.grad(
                    self._head_objective(objectives).sum(), heads, retain_graph=retain_graph,
                    allow_unused=True, materialize_grads=True,
                )  # fmt: skip
                flat = torch.cat([g.reshape(-1) for g in head_grads])
                _accumulate_flat(heads, dist.all_reduce_mean(flat, group))
        _accumulate_flat(inputs, direction)
        return lam

    def _head_objective(self, objectives: Tensor) -> Tensor:
        """What the heads differentiate: the objectives, times the aggregator's weights
        under ``weight_heads``."""
        weights = getattr(self.aggregator, "last_weights", None)
        if self.weight_heads and weights is not None:
            return objectives * weights.detach().to(objectives)
        return objectives

    def _aggregate(
        self,
        objectives: Tensor,
        inputs: list[Tensor],
        losses: Tensor,
        scaler: Any | None,
        features: bool,
    ) -> Tensor:
        """The aggregated direction (flat) from the Jacobian of the (scaled) objectives."""
        scale = 1.0 if scaler is None else float(scaler.get_scale())
        if self._blockwise(objectives.shape[0], inputs):
            return self._aggregate_blockwise(objectives, inputs, losses, scale, scaler is not None)
        method, roots = self._jacobian_plan(objectives, inputs, losses, features)
        jac = jacobian(objectives, inputs, method, retain_graph=True, roots=roots)
        if scale != 1.0:
            jac = jac / scale
        if scaler is not None and _overflowed(jac):
            # An overflow the scaler will see and skip: no method is asked to aggregate it.
            return torch.full((jac.shape[1],), float("inf"), dtype=jac.dtype, device=jac.device)
        direction = self.aggregator(jac, losses.detach())
        return direction * scale if scale != 1.0 else direction

    def _jacobian_plan(
        self, objectives: Tensor, inputs: list[Tensor], losses: Tensor, features: bool
    ) -> tuple[JacobianMethod, TaskRoots | None]:
        """The Jacobian's method and, for the loop, where its passes start.

        The loop starts past the stack of the losses where it can (:func:`task_roots`).
        Otherwise ``"auto"`` also takes the batched call for a small Jacobian of the
        features (features mode): the representation's gradients run through the heads
        only, where one vmapped call beats K autograd calls that each run every head
        (CelebA CNN, K = 40, 2 x 512 features, CPU: 7-11 ms against 32-55 ms; the loop
        from the stack's edges takes 2.2 ms).
        """
        method = self.jacobian_method
        if resolve_method(method, inputs[0].device) == "loop":
            roots = task_roots(objectives, losses)
            if roots is not None or method == "loop":
                return "loop", roots
        if (
            method == "auto"
            and features
            and objectives.shape[0] * inputs[0].numel() <= FEATURES_BATCHED_MAX
        ):
            return "batched", None
        return method, None

    def _blockwise(self, num_tasks: int, inputs: list[Tensor]) -> bool:
        """Whether the (K, m) Jacobian would exceed ``max_jacobian_bytes``."""
        if self.max_jacobian_bytes is None:
            return False
        m = sum(x.numel() for x in inputs)
        return num_tasks * m * inputs[0].element_size() > self.max_jacobian_bytes

    def _aggregate_blockwise(
        self, objectives: Tensor, inputs: list[Tensor], losses: Tensor, scale: float, amp: bool
    ) -> Tensor:
        """:meth:`_aggregate` from the blockwise Gram matrix and one more backward pass."""
        aggregator = self.aggregator
        assert isinstance(aggregator, GramianWeighting) and self.max_jacobian_bytes is not None
        gram = blockwise_gram(
            objectives, inputs, self.max_jacobian_bytes, scale=scale, check_rows=not amp,
            roots=task_roots(objectives, losses),
        )  # fmt: skip
        if amp and not bool(torch.isfinite(gram.diagonal()).all()):
            m = sum(x.numel() for x in inputs)
            return torch.full((m,), float("inf"), dtype=gram.dtype, device=gram.device)
        given = losses.detach()
        if aggregator.requires_losses:
            given = check_losses(given, objectives.shape[0], type(aggregator).__name__)
        w = aggregator.combination(gram, given).to(objectives)
        grads = torch.autograd.grad(
            (w * objectives).sum(), inputs, retain_graph=True, allow_unused=True,
            materialize_grads=True,
        )  # fmt: skip
        return torch.cat([g.reshape(-1) for g in grads])  # J^T w of the scaled objectives

    def observe(self, losses: Tensor | Sequence[Tensor]) -> None:
        """Pass the losses of the same batch, measured after the optimizer step.

        Methods that learn from the effect of a step (FAMO) need them; for the others this
        is a no-op, so a training loop can always call it. Compute them without updating
        BatchNorm statistics a second time (see :func:`fairmtl.frozen_norm_stats`)::

            optimizer.step()
            with torch.no_grad(), fairmtl.frozen_norm_stats(model):
                balancer.observe(compute_losses(model, batch))
        """
        observed = self._loss_vector(losses).detach()
        if self._distributed_on():
            observed = dist.all_reduce_mean(observed, self.process_group)
        self.weighting.observe(observed)

    @property
    def needs_observe(self) -> bool:
        """Whether :meth:`observe` matters for this pipeline (else the loop may skip it)."""
        return self.weighting.needs_observe

    def end_epoch(self) -> None:
        """Tell epoch-based methods (DWA, IGB) that a training epoch ended."""
        self.weighting.end_epoch()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: the methods' states and K."""
        return {
            "num_tasks": self.num_tasks,
            "weighting": self.weighting.state_dict(),
            "aggregator": self.aggregator.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_tasks = state["num_tasks"]
        self.weighting.load_state_dict(state["weighting"])
        self.aggregator.load_state_dict(state["aggregator"])

    def __repr__(self) -> str:
        return f"Balancer(aggregator={self.aggregator!r}, weighting={self.weighting!r}, transform={self.transform!r})"


def _resolve(spec: object, base: type, what: str) -> Any:
    """A method object from itself or its registered name, checked to be a ``base``."""
    obj = make(spec) if isinstance(spec, str) else spec
    if not isinstance(obj, base):
        raise TypeError(f"{what} must be a {base.__name__} or a registered name, got {spec!r}")
    return obj


FEATURES_BATCHED_MAX = 1 << 20  # entries of a features-mode Jacobian taken batched by "auto"


def _check_max_bytes(max_bytes: int | None, aggregator: Aggregator) -> int | None:
    if max_bytes is None:
        return None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(
            f"max_jacobian_bytes must be None or a positive int (bytes), got {max_bytes!r}"
        )
    if not isinstance(aggregator, GramianWeighting):
        raise TypeError(
            f"max_jacobian_bytes needs an aggregator whose direction is J^T w with weights "
            f"from the Gram matrix (a GramianWeighting); {aggregator!r} needs the whole "
            "Jacobian"
        )
    return max_bytes


def _overflowed(jac: Tensor) -> bool:
    """Whether a scaled-loss Jacobian has a NaN or infinite entry (an AMP overflow).

    Decided on the row sums, which are non-finite whenever an entry is: one read of the
    Jacobian instead of a K x m ``isfinite`` (2 s on a 40 x 5.2M Jacobian on one CPU
    thread). Finite rows whose sum overflows count as an overflow too, which the scaler
    then treats as one (it skips the step and lowers the scale).
    """
    return not bool(torch.isfinite(jac.sum(dim=1)).all())


def _accumulate_flat(params: list[Tensor], flat: Tensor) -> None:
    """Add consecutive slices of ``flat`` to the parameters' ``.grad``."""
    offset = 0
    for p in params:
        n = p.numel()
        _accumulate(p, flat[offset : offset + n].view_as(p))
        offset += n


def _accumulate(p: Tensor, g: Tensor) -> None:
    g = g.to(p.dtype)
    if p.grad is None:
        p.grad = g.detach().clone()
    else:
        p.grad.add_(g)
