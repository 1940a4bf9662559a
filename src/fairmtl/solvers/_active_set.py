"""Active-set crossover shared by the interior-point solvers on the simplex.

An interior-point method identifies the optimum's support (the tasks with a positive
weight) long before its iterates reach full accuracy. On a given support ``S`` the optimum
of a smooth problem on the simplex solves a small system in closed form; when the support
is right, that point is the exact optimum, certified by each solver's own test. This is
the classic crossover from an interior-point method to an active-set step (e.g. Wright,
*Primal-Dual Interior-Point Methods*, 1997, ch. 7 on finite termination).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fairmtl.solvers._gram import cholesky_apply

ROUNDS = 4  # support corrections per try of active_set

Face = Callable[[Tensor], "tuple[Tensor, Tensor] | None"]
"""``face(index)``: the stationary point with ``w_i = 0`` off the positions ``index`` and the
multipliers ``grad_i - lam`` of the inequality constraints there, or None if the face has
no such point."""


class SupportTrials:
    """Which of an interior-point method's supports to try: at most ``limit`` of them, and
    never the same support twice in a row (nothing changed since the last failure)."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.last: Tensor | None = None

    def new(self, support: Tensor) -> bool:
        """Whether to try ``support`` (counted as tried if so)."""
        if self.left <= 0 or (self.last is not None and torch.equal(support, self.last)):
            return False
        self.left -= 1
        self.last = support
        return True


def active_set(
    face: Face, keep: Tensor, tol: float, rounds: int = ROUNDS
) -> tuple[Tensor, Tensor] | None:
    """A primal-dual active-set method from the support ``keep``: solve on the support, drop
    the tasks with negative weights and add those whose multiplier is below ``-tol``, at most
    ``rounds`` times. Returns ``(weights, multipliers)`` of the first consistent face (every
    weight >= 0, every multiplier >= -tol), for the caller to certify, else None."""
    for _ in range(rounds):
        index = keep.nonzero().squeeze(1)
        if index.numel() == 0:
            return None
        found = face(index)
        if found is None:
            return None
        w, multiplier = found
        negative = w < 0
        violated = (multiplier < -tol) & ~keep
        wrong, missing = torch.stack([negative.any(), violated.any()]).tolist()
        if not (wrong or missing):
            return w, multiplier
        keep = (keep & ~negative) | violated
    return None


def cholesky_solve_on(m: Tensor, index: Tensor, rhs: Tensor) -> Tensor | None:
    """``M_SS^{-1} rhs`` for the principal submatrix on ``index`` (Cholesky), or None if
    that submatrix is not numerically positive definite."""
    factor, info = torch.linalg.cholesky_ex(m[index][:, index])
    if int(info) != 0:
        return None
    return cholesky_apply(factor, rhs)
