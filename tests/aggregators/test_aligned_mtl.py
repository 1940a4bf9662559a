"""Aligned-MTL: the balance transformation's defining identity, scales, ranks, TorchJD."""

from __future__ import annotations

import pytest
import torch
from adversarial import adversarial_cases, relative_error
from torch import Tensor

import fairmtl
from fairmtl.aggregators.aligned_mtl import AlignedMTL, alignment_matrix


def _jac(k: int, m: int, seed: int, spread: float = 2.0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.logspace(-spread, spread, k, dtype=torch.float64)
    return torch.randn(k, m, dtype=torch.float64, generator=gen) * rows[:, None]


def _check_identity(jac: Tensor, scale_mode: str = "min") -> None:
    """B A B = lambda_ref P: the aligned gradients (rows of B J) have Gram matrix
    lambda_ref times the projector onto the span, i.e. R orthogonal principal components
    of equal norm sqrt(lambda_ref), and they span the task gradients' space."""
    a = jac @ jac.T
    al = alignment_matrix(a, scale_mode)  # type: ignore[arg-type]
    lam, vec = torch.linalg.eigh(a)
    keep = lam > a.shape[0] * torch.finfo(a.dtype).eps * lam[-1]
    proj = vec[:, keep] @ vec[:, keep].T
    ref = {
        "min": lam[keep].min(),
        "median": lam[keep].median(),
        "rmse": lam[keep].mean(),
    }[scale_mode]
    assert al.rank == int(keep.sum())
    # Rounding: B has norm sqrt(lambda_ref / lambda_min) and A norm lambda_max; two
    # eigensolvers agree on an eigenvalue to about eps * lambda_max, not relatively.
    lam_max, lam_min = float(lam[-1]), float(lam[keep].min())
    tol = 100 * a.shape[0] * torch.finfo(a.dtype).eps
    assert al.reference == pytest.approx(float(ref), rel=1e-12, abs=tol * lam_max)
    aligned = al.matrix @ jac
    gram = aligned @ aligned.T
    atol = tol * lam_max * float(ref) / lam_min
    torch.testing.assert_close(gram, ref * proj, rtol=0, atol=atol)
    sv = torch.linalg.svdvals(aligned)
    expected = torch.full((al.rank,), float(ref) ** 0.5, dtype=sv.dtype)
    torch.testing.assert_close(sv[: al.rank], expected, rtol=tol * lam_max / lam_min, atol=0)
    if al.rank < sv.numel():
        assert float(sv[al.rank :].max()) <= (atol * al.rank) ** 0.5
    # Same span: projecting the task gradients onto the aligned ones loses nothing.
    q = torch.linalg.svd(aligned, full_matrices=False).Vh[: al.rank]
    assert relative_error(jac @ q.T @ q, jac) <= 1e-9
    assert al.info.backward_error <= tol * lam_max / lam_min


@pytest.mark.parametrize("k, m", [(2, 5), (3, 3), (5, 20), (10, 10), (40, 100)])
@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
def test_aligned_gradients_are_orthogonal_with_equal_norms(k: int, m: int, scale_mode) -> None:
    _check_identity(_jac(k, m, seed=k + m), scale_mode)


@pytest.mark.parametrize("k, m", [(5, 2), (6, 3), (10, 4)])
def test_rank_deficient_input_is_aligned_in_the_span(k: int, m: int) -> None:
    jac = _jac(k, m, seed=k * m, spread=0.5)
    _check_identity(jac)
    agg = AlignedMTL()
    d = agg(jac)
    assert agg.last_rank == m and torch.isfinite(d).all()


def test_duplicated_tasks_and_one_zero_gradient() -> None:
    jac = _jac(4, 9, seed=1, spread=0.5)
    jac[3] = jac[1]
    jac[2] = 0.0
    agg = AlignedMTL()
    d = agg(jac)
    assert agg.last_rank == 2 and torch.isfinite(d).all()
    _check_identity(jac)


def test_zero_jacobian_gives_the_zero_direction() -> None:
    with pytest.warns(fairmtl.RegularizationWarning, match="zero"):
        assert torch.equal(AlignedMTL()(torch.zeros(3, 5)), torch.zeros(5))
    al = alignment_matrix(torch.zeros(3, 3))
    assert al.rank == 0 and torch.equal(al.matrix, torch.zeros(3, 3, dtype=torch.float64))


def test_direction_is_the_mean_of_the_aligned_gradients() -> None:
    jac = _jac(4, 7, seed=2)
    b = alignment_matrix(jac @ jac.T).matrix
    torch.testing.assert_close(AlignedMTL()(jac), (b @ jac).mean(0), rtol=1e-12, atol=0)
    pref = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    torch.testing.assert_close(
        AlignedMTL(pref_vector=pref)(jac), pref @ (b @ jac), rtol=1e-12, atol=0
    )


def test_orthogonal_gradients_of_equal_norm_are_left_alone() -> None:
    jac = torch.eye(3, 5, dtype=torch.float64) * 2.0  # already aligned: B = I
    torch.testing.assert_close(AlignedMTL()(jac), jac.mean(0))
    # Unequal norms: each component is brought down to the smallest, sqrt(lambda_min) = 1.
    jac = torch.diag(torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64))
    torch.testing.assert_close(AlignedMTL()(jac), torch.full((3,), 1 / 3, dtype=torch.float64))


def test_scale_behaviour() -> None:
    jac = _jac(5, 8, seed=3)
    ref = AlignedMTL()(jac)
    w = AlignedMTL().weights(jac @ jac.T)
    for c in (1e-15, 1e-6, 1e6, 1e15):
        # Weights are invariant to the overall scale; the direction is linear in it.
        torch.testing.assert_close(AlignedMTL().weights(c**2 * (jac @ jac.T)), w, rtol=1e-9, atol=0)
        assert relative_error(AlignedMTL()(c * jac), c * ref) <= 1e-9
    # The reference code sums the aligned gradients: scale=K, or preferences all ones.
    torch.testing.assert_close(AlignedMTL(scale=5)(jac), 5 * ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(AlignedMTL(pref_vector=[1.0] * 5)(jac), 5 * ref, rtol=1e-12, atol=0)


def test_median_and_rmse_scale_the_direction_by_their_reference_eigenvalue() -> None:
    jac = _jac(6, 10, seed=4)
    a = jac @ jac.T
    lam = torch.linalg.eigvalsh(a)
    d_min = AlignedMTL()(jac)
    for mode, ref in (("median", lam.median()), ("rmse", lam.mean())):
        ratio = float((ref / lam.min()).sqrt())
        out = AlignedMTL(scale_mode=mode)(jac)  # type: ignore[arg-type]
        assert relative_error(out, ratio * d_min) <= 1e-10


def test_rank_tolerance_is_an_option() -> None:
    jac = _jac(4, 6, seed=5, spread=0.0)
    noise = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    jac[3] = jac[0] + 1e-5 * noise  # lambda_min ~ 1e-10 lambda_max: kept by default
    lam = torch.linalg.eigvalsh(jac @ jac.T)
    assert 1e-12 < float(lam[0] / lam[-1]) < 1e-8
    assert alignment_matrix(jac @ jac.T).rank == 4
    agg = AlignedMTL(rank_rtol=1e-8)
    agg(jac)
    assert agg.last_rank == 3


@pytest.mark.parametrize("case", adversarial_cases(), ids=[n for n, _ in adversarial_cases()])
def test_adversarial_jacobians_give_finite_directions_in_the_span(case) -> None:
    _, jac = case
    d = AlignedMTL()(jac)
    assert torch.isfinite(d).all()
    j64 = jac.double()
    if float(j64.abs().max()) > 0:
        q = torch.linalg.svd(j64, full_matrices=False)
        basis = q.Vh[q.S > q.S[0] * 1e-12]
        assert relative_error(d.double() @ basis.T @ basis, d.double()) <= 1e-4


def test_constructor_validation_and_repr() -> None:
    assert repr(AlignedMTL()) == "AlignedMTL()"
    assert repr(fairmtl.make("aligned-mtl", scale_mode="rmse", scale=3)) == (
        "AlignedMTL(scale_mode='rmse', scale=3.0)"
    )
    with pytest.raises(ValueError, match="scale_mode"):
        AlignedMTL(scale_mode="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        AlignedMTL(scale=0.0)
    with pytest.raises(ValueError, match="rank_rtol"):
        AlignedMTL(rank_rtol=-1.0)
    with pytest.raises(ValueError, match="non-negative"):
        AlignedMTL(pref_vector=[-1.0, 1.0])
    with pytest.raises(ValueError, match="2 entries for 3 tasks"):
        AlignedMTL(pref_vector=[1.0, 1.0])(torch.randn(3, 4))


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
def test_matches_torchjd(scale_mode: str) -> None:
    """Same definition and defaults as TorchJD (uniform 1/K preferences, ``min`` scaling):
    the directions agree to rounding, full-rank or not."""
    aggregation = pytest.importorskip("torchjd.aggregation")
    reference = aggregation.AlignedMTL(scale_mode=scale_mode)
    ours = AlignedMTL(scale_mode=scale_mode)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(11)
    for k in range(2, 11):
        for m in (k + 3, max(1, k // 2)):
            scale = 10 ** float(torch.empty(1).uniform_(-4, 3, generator=gen))
            jac = torch.randn(k, m, dtype=torch.float64, generator=gen) * scale
            assert relative_error(ours(jac), reference(jac)) <= 1e-9
