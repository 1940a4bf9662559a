"""Validation and scaling of K x K Gram matrices shared by the dense solvers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SolverInfo:
    """Diagnostic returned by every dense solver.

    Attributes:
        iterations: iterations used (all attempts together).
        backward_error: normwise backward error of the returned weights for the problem as
            posed on the *unregularised* Gram matrix (see each solver for its residual).
        regularization: ridge added, relative to the Gram matrix's diagonal (0.0 if none).
        converged: whether the stopping test was met.
        zero_gram: the Gram matrix was zero (every task gradient vanished).
    """

    iterations: int
    backward_error: float
    regularization: float
    converged: bool
    zero_gram: bool = False

    @property
    def regularized(self) -> bool:
        return self.regularization > 0.0 or self.zero_gram


def check_gram(gram: Tensor, *, name: str = "gram") -> Tensor:
    """Check that ``gram`` is a finite, symmetric K x K matrix; return it symmetrised in float64."""
    return check_gram_diagonal(gram, name=name)[0]


def check_gram_diagonal(gram: Tensor, *, name: str = "gram") -> tuple[Tensor, float, float]:
    """:func:`check_gram`, also returning the smallest and largest diagonal entries (read
    in the same host round trip)."""
    if not isinstance(gram, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(gram).__name__}")
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty square (K, K) matrix, got shape {tuple(gram.shape)}"
        )
    if not gram.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {gram.dtype}")
    tol = symmetry_tolerance(gram.dtype)
    a = gram.detach().to(torch.float64)
    at = a.T
    # One host round trip on the good path; the details only when something is wrong.
    # (The extremes of A are NaN or inf exactly when an entry is; a NaN fails every
    # comparison. A - A^T is antisymmetric: its largest entry is its largest magnitude.)
    low_a, high_a, asym, low, high = torch.stack(
        [*torch.aminmax(a), (a - at).max(), *torch.aminmax(a.diagonal())]
    ).tolist()
    scale = max(-low_a, high_a) if not math.isnan(low_a) else low_a  # NaN stays NaN
    if not (math.isfinite(scale) and asym <= tol * scale and low >= -1e-8 * scale):
        _raise_bad_gram(a, name, tol)
    return (a + at).mul_(0.5), low, high


def symmetry_tolerance(dtype: torch.dtype) -> float:
    """Largest accepted ``max |A - A^T| / max |A|`` for a Gram matrix held in ``dtype``.

    ``J @ J.T`` is not exactly symmetric in floating point: a BLAS may sum entry (i, j)
    and entry (j, i) in different orders, which differ by up to about ``m eps`` relative
    (seen: 1.3e-6 in float32 on a QM9 Jacobian). 1e-6 in float64, ``1000 eps`` in lower
    precisions (1.2e-4 in float32), at most 1e-2.
    """
    return min(max(1e-6, 1000.0 * torch.finfo(dtype).eps), 1e-2)


def _raise_bad_gram(a: Tensor, name: str, tol: float) -> None:
    finite = torch.isfinite(a)
    if not bool(finite.all()):
        i, j = (~finite).nonzero()[0].tolist()
        raise ValueError(f"{name} has a non-finite entry {a[i, j].item()} at ({i}, {j})")
    scale = a.abs().max()
    asym = (a - a.T).abs().max()
    if bool(asym > tol * scale):
        raise ValueError(
            f"{name} is not symmetric: max |A - A^T| = {asym.item():.3g} "
            f"vs max |A| = {scale.item():.3g}"
        )
    i = int((a.diagonal() < -1e-8 * scale).nonzero()[0])
    raise ValueError(
        f"{name} is not positive semi-definite: diagonal entry {i} is {a[i, i].item():.3g} < 0"
    )


def normwise_residual_error(a: Tensor, w: Tensor, rhs: Tensor) -> float:
    """Upper bound on ||A w - rhs|| / (||A||_2 ||w|| + ||rhs||) (vector 2-norms).

    ``||A||_F / sqrt(K) <= ||A||_2`` stands in for the spectral norm, which keeps the
    bound cheap (no SVD) and conservative.
    """
    norm = torch.linalg.vector_norm
    res, a_fro, w_norm, rhs_norm = torch.stack(
        [norm(a @ w - rhs), torch.linalg.matrix_norm(a), norm(w), norm(rhs)]
    ).tolist()  # one host round trip
    denom = a_fro / a.shape[0] ** 0.5 * w_norm + rhs_norm
    return 0.0 if denom == 0 else res / denom


def cholesky_apply(factor: Tensor, rhs: Tensor) -> Tensor:
    """``(L L^T)^{-1} rhs`` from a lower Cholesky factor ``L`` (..., K, K), for ``rhs``
    (..., K, n): two triangular solves. ``torch.cholesky_solve`` computes the same but also
    checks an error code (slower on tiny matrices, and a synchronisation on accelerators)."""
    y = torch.linalg.solve_triangular(factor, rhs, upper=False)
    return torch.linalg.solve_triangular(factor.mT, y, upper=True)


@contextmanager
def single_threaded(device: torch.device) -> Iterator[None]:
    """On the CPU, run the body with one intra-op thread, then restore the setting.

    The solver's work is many tiny batched factorisations: threads gain little on them,
    and when the cores are busy (data-loader workers, other jobs) OpenMP oversubscription
    made them 5 to 25 times slower in our measurements (K = 40-64, two shared cores).
    ``torch.set_num_threads`` is process-wide: other Python threads running torch CPU ops
    during the call also see one thread.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
