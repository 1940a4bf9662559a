"""The aggregator interface shared by every method: Jacobian and Gram entry points, errors."""

from __future__ import annotations

import pytest
import torch

import fairmtl
from fairmtl.aggregators import GramianWeighting

GRAMIAN = ["sum", "mean", "mgda", "nash-mtl", "fairgrad"]


@pytest.mark.parametrize("name", GRAMIAN)
def test_direction_is_jacobian_transpose_times_weights(name: str) -> None:
    agg = fairmtl.make(name)
    assert isinstance(agg, GramianWeighting)
    jac = torch.randn(4, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = agg.weights(jac @ jac.T)
    assert w.shape == (4,) and w.dtype == torch.float64
    torch.testing.assert_close(agg(jac), jac.T @ w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", GRAMIAN)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_and_shape_follow_the_input(name: str, dtype: torch.dtype) -> None:
    jac = torch.randn(3, 17, dtype=dtype)
    out = fairmtl.make(name)(jac)
    assert out.shape == (17,) and out.dtype == dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("name", GRAMIAN)
def test_permuting_tasks_does_not_change_the_direction(name: str) -> None:
    jac = torch.randn(5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    perm = torch.tensor([3, 0, 4, 1, 2])
    agg = fairmtl.make(name)
    torch.testing.assert_close(agg(jac[perm]), agg(jac), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", GRAMIAN)
def test_bad_jacobian_is_a_clear_error(name: str) -> None:
    agg = fairmtl.make(name)
    with pytest.raises(ValueError, match="shape"):
        agg(torch.randn(3))
    bad = torch.randn(3, 4)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="task 2"):
        agg(bad)
    with pytest.raises(ValueError, match="square"):
        agg.weights(torch.randn(2, 3))


def test_make_knows_every_method_and_rejects_unknown_ones() -> None:
    assert set(GRAMIAN) <= set(fairmtl.available())
    assert repr(fairmtl.make("FairGrad", alpha=5)) == "FairGrad(alpha=5.0)"
    with pytest.raises(KeyError, match="unknown method 'fairgrd'.*fairgrad"):
        fairmtl.make("fairgrd")
    with pytest.raises(TypeError, match="make\\('mgda'\\)"):
        fairmtl.make("mgda", alpha=2.0)


@pytest.mark.parametrize("name", ["mgda", "nash-mtl", "fairgrad"])
def test_scale_option_is_validated(name: str) -> None:
    with pytest.raises(ValueError, match="scale"):
        fairmtl.make(name, scale=0.0)
    jac = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(fairmtl.make(name, scale=3.0)(jac), 3.0 * fairmtl.make(name)(jac))
