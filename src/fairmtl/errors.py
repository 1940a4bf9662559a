"""Exceptions and warnings raised by fairmtl."""

from __future__ import annotations


class InvalidLossError(ValueError):
    """A task loss is unusable: NaN or infinite, non-positive under a log-based transform,
    or the wrong number of losses. The message names the task index and the value."""


class RegularizationWarning(UserWarning):
    """A dense solver had to regularise a singular (or zero) Gram matrix to return weights.

    This happens at (or numerically at) a Pareto-stationary point, where some convex
    combination of the task gradients vanishes and the unregularised problem has no
    solution. The returned diagnostic says how much ridge was added.
    """
