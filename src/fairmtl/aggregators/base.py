"""Aggregator interfaces: a (K, m) Jacobian in, an m-dimensional update direction out."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from fairmtl.errors import RegularizationWarning
from fairmtl.solvers import SolverInfo


def check_jacobian(jacobian: Tensor) -> Tensor:
    """Check that ``jacobian`` is a floating (K, m) matrix with K >= 1, m >= 1.

    Finiteness is checked by :func:`check_finite_rows` on a (K,) summary of the rows
    (the Gram matrix's diagonal, or the row sums), not on the K x m entries: ``isfinite``
    over a 40 x 5.2M Jacobian took 2 s on one CPU thread, half the cost of computing it.
    """
    if not isinstance(jacobian, Tensor):
        raise TypeError(f"jacobian must be a torch.Tensor, got {type(jacobian).__name__}")
    if jacobian.ndim != 2 or jacobian.shape[0] == 0 or jacobian.shape[1] == 0:
        raise ValueError(
            f"jacobian must be a non-empty (K, m) matrix, got shape {tuple(jacobian.shape)}"
        )
    if not jacobian.dtype.is_floating_point:
        raise TypeError(f"jacobian must be floating point, got {jacobian.dtype}")
    return jacobian


def check_finite_rows(jacobian: Tensor, summary: Tensor | None = None) -> None:
    """Raise a ValueError naming the first task whose gradient has a NaN or infinite entry.

    ``summary`` is a (K,) vector that is finite whenever the rows are and non-finite
    whenever a row is not: the row sums (the default; one read of the Jacobian) or the
    Gram matrix's diagonal ``||g_i||^2`` (free once the Gram matrix exists). Only when it
    is not finite are the entries themselves examined: a finite row whose sum or squared
    norm overflows is not an error here (a Gram matrix that overflows is one for the
    solvers, which say so).
    """
    if summary is None:
        summary = jacobian.sum(dim=1)
    if bool(torch.isfinite(summary).all()):
        return
    finite = torch.isfinite(jacobian).all(dim=1)
    if not bool(finite.all()):
        task = int((~finite).nonzero()[0])
        raise ValueError(f"the gradient of task {task} has non-finite entries")


def gram_matrix(jacobian: Tensor) -> Tensor:
    """``J J^T`` of a Jacobian, after checking its rows are finite (:func:`check_finite_rows`)."""
    gram = jacobian @ jacobian.T
    check_finite_rows(jacobian, gram.diagonal())
    return gram


def check_gram_shape(gram: Tensor) -> Tensor:
    """Check that ``gram`` is a square (K, K) tensor (the ``weights(gram)`` entry point)."""
    if not isinstance(gram, Tensor) or gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        shape = tuple(gram.shape) if isinstance(gram, Tensor) else type(gram).__name__
        raise ValueError(f"gram must be a square (K, K) tensor, got {shape}")
    return gram


def check_scale(scale: float) -> float:
    """Validate a direction scale factor (a positive finite number)."""
    value = float(scale)
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return value


def check_losses(losses: Tensor | None, num_tasks: int, owner: str) -> Tensor:
    """Check that ``losses`` holds the K finite task losses an aggregator asked for."""
    if losses is None:
        raise ValueError(
            f"{owner} needs the task losses: call it as agg(jacobian, losses=...) "
            "(the Balancer passes them)"
        )
    if not isinstance(losses, Tensor) or losses.shape != (num_tasks,):
        shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(f"{owner}: losses must have shape ({num_tasks},), got {shape}")
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        task = int((~finite).nonzero()[0])
        raise ValueError(f"{owner}: the loss of task {task} is not finite ({losses[task].item()})")
    return losses.detach()


class Aggregator(ABC):
    """Maps the per-task gradients (rows of a (K, m) Jacobian) to one update direction (m,).

    Class attributes describe a method to the pipeline and to the shared property tests
    without anyone testing its name:

    - ``requires_losses``: ``aggregate`` needs the K loss values (MoCo); the Balancer
      always passes them, a direct call must give ``losses=``.
    - ``features_only``: the method is defined on gradients w.r.t. the shared
      representation (MGDA-UB); the Balancer refuses it with ``shared=``.
    - ``deterministic``: the direction is a function of the Jacobian alone (no random
      draws, no state), so permuting the tasks leaves it unchanged.

    Stateful methods override ``state_dict`` / ``load_state_dict`` (torch.optim style).
    """

    registered_name: str = ""
    requires_losses: bool = False
    features_only: bool = False
    deterministic: bool = True
    checks_finite: bool = False
    """``aggregate`` checks the rows' finiteness itself (through :func:`gram_matrix`) before
    it changes any state; otherwise ``__call__`` checks the row sums first."""

    def __call__(self, jacobian: Tensor, losses: Tensor | None = None) -> Tensor:
        jacobian = check_jacobian(jacobian)
        if not self.checks_finite:
            check_finite_rows(jacobian)
        if self.requires_losses:
            losses = check_losses(losses, jacobian.shape[0], type(self).__name__)
        return self.aggregate(jacobian, losses)

    @abstractmethod
    def aggregate(self, jacobian: Tensor, losses: Tensor | None = None) -> Tensor:
        """The direction for a validated Jacobian (``losses`` given when ``requires_losses``)."""

    def fixed_weights(self, num_tasks: int) -> Tensor | None:
        """Weights (a CPU tensor) that do not depend on the gradients, if any (else None).

        The Balancer then skips the Jacobian: one backward pass of the weighted losses.
        """
        return None

    def state_dict(self) -> dict[str, Any]:
        """The method's state (empty for stateless methods)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a stateless method accepts only an empty state."""
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GramianWeighting(Aggregator):
    """An aggregator whose direction is ``d = G w`` with weights ``w = f(A)``, ``A = G^T G``.

    Subclasses implement :meth:`gram_weights`. ``weights(gram)`` returns the weights for a
    Gram matrix; calling the aggregator on a Jacobian forms the Gram matrix and returns
    ``jacobian.T @ weights``. The latest solver diagnostic, when there is one, is kept
    in :attr:`last_info`; a regularised solve warns once per aggregator instance. The
    weights of the latest call on a Jacobian are kept in :attr:`last_weights` (the
    Balancer's ``weight_heads`` option applies them to the task heads).
    """

    def __init__(self) -> None:
        self.last_info: SolverInfo | None = None
        self.last_weights: Tensor | None = None
        self._warned = False

    def weights(self, gram: Tensor) -> Tensor:
        """The K weights for a (K, K) Gram matrix, in the Gram matrix's dtype and device."""
        check_gram_shape(gram)
        return self.gram_weights(gram).to(gram.dtype)

    @abstractmethod
    def gram_weights(self, gram: Tensor) -> Tensor:
        """Weights (K,) for a (K, K) Gram matrix (any floating dtype)."""

    checks_finite = True

    def aggregate(self, jacobian: Tensor, losses: Tensor | None = None) -> Tensor:
        gram = gram_matrix(jacobian)
        return self.combination(gram, losses) @ jacobian

    def combination(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        """The weights ``w`` of the direction ``d = J^T w``, for the Gram matrix
        ``A = J J^T`` of a checked Jacobian (and the losses, for methods that use them),
        kept in :attr:`last_weights`. The Balancer's chunked Jacobian (``max_jacobian_bytes``)
        calls it with a Gram matrix accumulated block by block, never holding ``J``.
        """
        w = self.loss_gram_weights(gram, losses).to(gram.dtype)
        self.last_weights = w
        return w

    def loss_gram_weights(self, gram: Tensor, losses: Tensor | None) -> Tensor:
        """:meth:`gram_weights`, for methods whose weights may also depend on the losses
        (``requires_losses``), which override this."""
        return self.gram_weights(gram)

    def _record(self, info: SolverInfo) -> None:
        """Keep a solver diagnostic and warn (once per instance) if it regularised."""
        self.last_info = info
        if info.regularized and not self._warned:
            self._warned = True
            what = (
                "zero"
                if info.zero_gram
                else f"singular (ridge {info.regularization:.0e} x diag(A))"
            )
            warnings.warn(
                f"{type(self).__name__}: the Gram matrix of the task gradients is {what}, "
                "i.e. the point is (numerically) Pareto stationary; the weights were regularised. "
                "See .last_info for the diagnostic; this warning is shown once.",
                RegularizationWarning,
                stacklevel=3,
            )
