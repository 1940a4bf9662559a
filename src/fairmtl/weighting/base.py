"""Loss-balancing methods: loss weights lambda (K,) from the loss values and their history."""

from __future__ import annotations

from typing import Any

from torch import Tensor


class Weighting:
    """Base class of loss-balancing methods.

    ``weights(losses)`` returns the (K,) weights applied to the transformed losses of this
    step; they are treated as constants (detached). Stateful subclasses override
    ``state_dict`` / ``load_state_dict``; methods that learn from the losses after the
    optimizer step override ``observe``.
    """

    registered_name: str = ""

    def weights(self, losses: Tensor) -> Tensor:
        raise NotImplementedError

    def observe(self, losses: Tensor) -> None:
        """Losses measured after the optimizer step (default: ignored)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
