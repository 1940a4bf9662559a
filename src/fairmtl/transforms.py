"""Loss transforms, applied elementwise to the K task losses before weighting.

- :class:`Identity`: ``T(l) = l``.
- :class:`Log` (the "SI" paradigm of the IGB paper): ``T(l) = log(l + offset)``.
- :class:`AlphaFairLoss` (FairGrad, Ban & Ji 2024, eq. 5):
  ``T(l) = (l + offset)^(1 - a) / (1 - a)`` for ``a < 1``; its gradient is
  ``g / (l + offset)^a``. ``a = 0`` is the identity, ``a -> 1`` the log.

The log-based transforms need positive losses: a non-positive or non-finite value is an
:class:`~fairmtl.errors.InvalidLossError` naming the task and the value. ``offset`` shifts
the losses first (e.g. minus a known lower bound, as FAMO's toy does).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fairmtl._registry import register
from fairmtl.errors import InvalidLossError


class LossTransform:
    """Base class: ``__call__(losses)`` maps a (K,) tensor of losses to (K,) transformed ones."""

    registered_name: str = ""
    requires_positive: bool = False

    def __init__(self, offset: float = 0.0) -> None:
        offset = float(offset)
        if not math.isfinite(offset):
            raise ValueError(f"offset must be finite, got {offset!r}")
        self.offset = offset

    def check(self, losses: Tensor) -> None:
        """Raise :class:`InvalidLossError` if a shifted loss is not positive (when required)."""
        if not self.requires_positive:
            return
        shifted = losses.detach() + self.offset
        bad = ~(shifted > 0)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            hint = "" if self.offset else " (pass offset=... if your losses can be <= 0)"
            raise InvalidLossError(
                f"{type(self).__name__} needs positive losses, but task {i} has loss "
                f"{losses[i].item()!r}{' + offset ' + repr(self.offset) if self.offset else ''}{hint}"
            )

    def __call__(self, losses: Tensor) -> Tensor:
        self.check(losses)
        return self.transform(losses + self.offset if self.offset else losses)

    def transform(self, losses: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'' if not self.offset else f'offset={self.offset}'})"


@register("identity")
class Identity(LossTransform):
    """``T(l) = l + offset``."""

    def transform(self, losses: Tensor) -> Tensor:
        return losses


@register("log")
class Log(LossTransform):
    """``T(l) = log(l + offset)``: scale-invariant losses (SI; IGB paper, section 3)."""

    requires_positive = True

    def transform(self, losses: Tensor) -> Tensor:
        return torch.log(losses)


@register("alpha-fair-loss")
class AlphaFairLoss(LossTransform):
    """``T(l) = (l + offset)^(1-a) / (1-a)``, ``a < 1`` (FairGrad eq. 5; Fair-X uses a = 0.5)."""

    def __init__(self, a: float = 0.5, offset: float = 0.0) -> None:
        super().__init__(offset)
        a = float(a)
        if not (a < 1.0) or math.isnan(a):
            raise ValueError(
                f"AlphaFairLoss needs a < 1 (a -> 1 is the log transform), got a={a!r}"
            )
        self.a = a
        self.requires_positive = a != 0.0

    def transform(self, losses: Tensor) -> Tensor:
        if self.a == 0.0:
            return losses
        return losses.pow(1.0 - self.a) / (1.0 - self.a)

    def __repr__(self) -> str:
        return f"AlphaFairLoss(a={self.a}{'' if not self.offset else f', offset={self.offset}'})"
