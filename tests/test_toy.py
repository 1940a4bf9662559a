"""Tests of the two-task toy benchmark (FairGrad Fig. 1) and the ``fairmtl`` CLI."""

from __future__ import annotations

import math

import pytest
import torch

from fairmtl.bench import cli, toy


def _hand_losses(x1: float, x2: float) -> tuple[float, float]:
    """The toy losses written out from the definition, with math only."""
    c1 = max(math.tanh(0.5 * x2), 0.0)
    c2 = max(math.tanh(-0.5 * x2), 0.0)
    f1 = math.log(max(abs(0.5 * (-x1 - 7) - math.tanh(-x2)), 5e-6)) + 6
    f2 = math.log(max(abs(0.5 * (-x1 + 3) + math.tanh(-x2) + 2), 5e-6)) + 6
    h1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    h2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    return 0.1 * (c1 * f1 + c2 * h1), c1 * f2 + c2 * h2


@pytest.mark.parametrize("point", [(1.0, 2.0), (-2.5, -3.0), (9.0, 9.0), (-7.0, 0.3)])
def test_toy_losses_match_definition(point: tuple[float, float]) -> None:
    got = toy.toy_losses(torch.tensor(point, dtype=torch.float64))
    assert got.shape == (2,)
    expected = _hand_losses(*point)
    assert got.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_toy_losses_batched() -> None:
    pts = torch.tensor([[1.0, 2.0], [-2.5, -3.0], [0.0, 0.0]], dtype=torch.float64)
    got = toy.toy_losses(pts.reshape(3, 1, 2))
    assert got.shape == (3, 1, 2)
    for row, p in zip(got.reshape(3, 2), pts.tolist()):
        assert row.tolist() == pytest.approx(_hand_losses(*p), rel=1e-12, abs=1e-12)


def test_jacobian_matches_two_autograd_calls() -> None:
    for point in [(1.0, 2.0), (-2.5, -3.0), (-8.5, 7.5)]:
        x = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        losses = toy.toy_losses(x)
        (g1,) = torch.autograd.grad(losses[0], x, retain_graph=True)
        (g2,) = torch.autograd.grad(losses[1], x)
        got_losses, jac = toy.losses_and_jacobian(x)
        torch.testing.assert_close(jac, torch.stack((g1, g2)), rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(got_losses, losses.detach(), rtol=0, atol=0)
        assert x.grad is None


def test_pareto_stationarity_closed_form() -> None:
    g = torch.tensor([3.0, -4.0], dtype=torch.float64)
    assert toy.pareto_stationarity(torch.stack((g, -g))) == pytest.approx(0.0, abs=1e-15)
    assert toy.pareto_stationarity(torch.stack((g, g))) == pytest.approx(5.0)
    # Orthogonal unit gradients: the closest point of the segment is their midpoint.
    eye = torch.eye(2, dtype=torch.float64)
    assert toy.pareto_stationarity(eye) == pytest.approx(math.sqrt(0.5))
    # Endpoint case: g2 = 2 g1 -> the minimum is at g1.
    assert toy.pareto_stationarity(torch.stack((g, 2 * g))) == pytest.approx(5.0)


def test_pareto_stationarity_general_k_agrees() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    assert toy.pareto_stationarity(jac) == pytest.approx(math.sqrt(0.5), rel=1e-8)


def test_short_ls_run_decreases_total_loss() -> None:
    run = toy.run_toy("LS", (-8.5, 7.5), max_iter=3000)
    assert run.iterations == 3000
    assert run.xs.shape == run.losses.shape == (301, 2)
    assert run.losses[-1].sum() < run.losses[0].sum() - 0.1
    assert run.final_losses.tolist() == run.losses[-1].tolist()
    assert run.xs[0].tolist() == [-8.5, 7.5]


def test_runs_accept_registered_names() -> None:
    run = toy.run_toy(("fairgrad", {"alpha": 2.0}), (0.0, 0.0), max_iter=20, record_every=7)
    assert run.label == "fairgrad(alpha=2.0)"
    assert run.iterations == 20
    assert len(run.xs) == 4  # steps 0, 7, 14 and the final point 20


def test_format_table() -> None:
    runs = toy.run_all({"LS": toy.METHODS["LS"]}, [(0.0, 0.0)], max_iter=5)
    table = toy.format_table(runs)
    lines = table.strip().splitlines()
    assert lines[0] == "| method | start | L1 | L2 | stationarity | iterations |"
    assert lines[2].startswith("| LS | (0, 0) |")
    assert lines[2].endswith("| 5 |")


def test_cli_writes_png_and_table(tmp_path, capsys) -> None:
    out = tmp_path / "toy"
    code = cli.main(
        [
            "toy",
            "--out",
            str(out),
            "--max-iter",
            "30",
            "--methods",
            "LS",
            "fairgrad-a=2",
            "--starts",
            "0",
            "3",
            "--quiet",
        ]
    )
    assert code == 0
    png = out / "toy_trajectories.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "toy_results.md").read_text()
    assert table.count("\n") == 2 + 4
    assert "FairGrad a=2" in table
    assert capsys.readouterr().out == table


def test_cli_unknown_method_exits_nonzero(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["toy", "--methods", "no-such-method"])
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert "no-such-method" in err and "Nash-MTL" in err


def test_cli_help(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert "toy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        cli.main(["toy", "--help"])
    assert info.value.code == 0
    assert "--max-iter" in capsys.readouterr().out


@pytest.mark.slow
def test_full_toy_acceptance() -> None:
    """Every MGDA, Nash-MTL and FairGrad run ends Pareto stationary (<= 1e-3), and from at
    least 3 of the 5 starts LS ends with a lower L2 and a higher L1 than FairGrad(alpha=2)."""
    runs = toy.run_all(max_iter=35_000, stop_tol=1e-4)
    by_key = {(r.label, r.start): r for r in runs}
    for r in runs:
        if r.label != "LS":
            assert r.stationarity <= 1e-3, (r.label, r.start, r.stationarity)
    ls_trades = 0
    for start in toy.STARTS:
        ls = by_key["LS", start].final_losses
        fair = by_key["FairGrad a=2", start].final_losses
        ls_trades += bool(ls[1] < fair[1] and ls[0] > fair[0])
    assert ls_trades >= 3, toy.format_table(runs)
