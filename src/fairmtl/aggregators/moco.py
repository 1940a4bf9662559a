"""MoCo: stochastic multi-objective gradient correction (Fernando et al., ICLR 2023)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from fairmtl._checks import check_real
from fairmtl._registry import register
from fairmtl.aggregators.base import Aggregator

YInit = Literal["zeros", "first"]


def project_onto_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of a vector onto the probability simplex ``{w >= 0, sum w = 1}``.

    Exact sort-based algorithm (Held, Wolfe & Crowder 1974; Duchi et al. 2008): with
    ``u`` sorted decreasingly, ``r`` the largest ``j`` with ``u_j > (sum_{l<=j} u_l - 1) / j``
    and ``theta = (sum_{l<=r} u_l - 1) / r``, the projection is ``max(v - theta, 0)``.
    Runs on ``v``'s device without a host synchronisation.
    """
    if v.ndim != 1 or v.shape[0] == 0:
        raise ValueError(f"v must be a non-empty vector, got shape {tuple(v.shape)}")
    u = torch.sort(v, descending=True).values
    excess = torch.cumsum(u, dim=0) - 1
    index = torch.arange(1, v.shape[0] + 1, dtype=v.dtype, device=v.device)
    support = u - excess / index > 0  # true on a prefix; always true at j = 1
    r = torch.where(support, index, torch.zeros_like(index)).amax()
    theta = excess.gather(0, (r - 1).long().reshape(1)) / r
    return torch.clamp(v - theta, min=0)


def _unit_rows(jacobian: Tensor) -> Tensor:
    """Rows divided by their norms; a zero row stays zero (no division by zero).

    Rows are first divided by their largest entry so the norm neither under- nor overflows.
    """
    peak = jacobian.abs().amax(dim=1, keepdim=True)
    nonzero = peak > 0
    scaled = jacobian / torch.where(nonzero, peak, torch.ones_like(peak))
    norm = torch.linalg.vector_norm(scaled, dim=1, keepdim=True)  # >= 1 on non-zero rows
    return torch.where(nonzero, scaled / torch.where(nonzero, norm, torch.ones_like(norm)), 0.0)


def _tracked(y: Tensor | None, jacobian: Tensor, losses: Tensor, beta: float) -> Tensor:
    """``y - beta (y - g_hat)`` with ``g_hat_i = l_i g_i / ||g_i||`` (``y = None``: zeros).

    On a large Jacobian this is the cost of MoCo beyond the Gram matrix, so it makes no
    (K, m) temporary: the row norms are one reduction, and ``y`` (MoCo's own state, or a new
    tensor on the first step) is updated in place by one fused pass,
    ``y <- (1 - beta) y + (beta l_i / ||g_i||) g_i``. Rows whose direct norm is zero or not
    finite (a zero row, or an entry whose square under- or overflows) take
    :func:`_unit_rows` instead.
    """
    norms = torch.linalg.vector_norm(jacobian, dim=1)
    if bool((torch.isfinite(norms) & (norms > 0)).all()):
        coef = (beta * losses / norms).unsqueeze(1)
        if y is None:
            return jacobian * coef
        return y.mul_(1.0 - beta).addcmul_(jacobian, coef)
    g_hat = _unit_rows(jacobian) * losses[:, None]
    if y is None:
        return g_hat.mul_(beta)
    return y.mul_(1.0 - beta).add_(g_hat, alpha=beta)


@register("moco")
class MoCo(Aggregator):
    """MoCo (Fernando et al., ICLR 2023, Algorithm 1: the tracking and weight updates).

    Each call ``t = 1, 2, ...`` tracks the normalised gradients and takes one projected
    gradient step on the MGDA weights::

        g_hat_i = l_i g_i / ||g_i||           (g_hat_i = 0 when g_i = 0)
        y_i    <- y_i - beta_t (y_i - g_hat_i),            beta_t  = beta / t^sigma_beta
        lambda <- Proj_simplex(lambda - gamma_t (Y^T Y + rho I) lambda),
                                                           gamma_t = gamma / t^sigma_gamma
        d       = Y lambda

    The paper's updates start from given ``y_0`` and ``lambda_0``; like the authors' code,
    ``lambda_0 = 1/K`` and ``y_0 = 0`` (so ``y_1 = beta g_hat_1``); ``y_init="first"`` starts
    from ``y_0 = g_hat_1`` instead (then ``y_1 = g_hat_1``). Differences from the authors'
    code (as in LibMTL): the weights are the exact Euclidean projection onto the simplex that
    the paper specifies, where that code applies a softmax; a zero gradient gives
    ``g_hat = 0`` instead of dividing by ``||g|| + 1e-8``. ``l_i`` is the raw task loss (the
    Balancer passes it), so the direction is invariant to rescaling the gradients.

    Args:
        beta: tracking step size, in (0, 1] (``y`` stays a convex combination).
        sigma_beta: decay exponent of ``beta_t`` (>= 0).
        gamma: step size of the weights (> 0).
        sigma_gamma: decay exponent of ``gamma_t`` (>= 0).
        rho: ridge on ``Y^T Y`` in the weights' step (>= 0).
        y_init: ``"zeros"`` (authors' code) or ``"first"`` (``y_0`` = the first ``g_hat``).
    """

    requires_losses = True
    # Stateful, but a fresh instance is a function of the Jacobian and the losses, and
    # permuting the tasks permutes Y and lambda: the direction does not change.
    deterministic = True

    def __init__(
        self,
        beta: float = 0.5,
        sigma_beta: float = 0.5,
        gamma: float = 0.1,
        sigma_gamma: float = 0.5,
        rho: float = 0.0,
        y_init: YInit = "zeros",
    ) -> None:
        self.beta = check_real("beta", beta, 0.0, 1.0, low_open=True)
        self.sigma_beta = check_real("sigma_beta", sigma_beta, 0.0, low_open=False)
        self.gamma = check_real("gamma", gamma, 0.0, low_open=True)
        self.sigma_gamma = check_real("sigma_gamma", sigma_gamma, 0.0, low_open=False)
        self.rho = check_real("rho", rho, 0.0, low_open=False)
        if y_init not in ("zeros", "first"):
            raise ValueError(f"y_init must be 'zeros' or 'first', got {y_init!r}")
        self.y_init: YInit = y_init
        self.step = 0
        self._y: Tensor | None = None
        self._lambda: Tensor | None = None

    def aggregate(self, jacobian: Tensor, losses: Tensor | None = None) -> Tensor:
        if losses is None:  # __call__ checks; a direct aggregate() call must not slip through
            raise ValueError("MoCo needs the task losses: call it as agg(jacobian, losses=...)")
        k, m = jacobian.shape
        dtype, device = jacobian.dtype, jacobian.device
        if self._y is not None and self._y.shape != (k, m):
            raise ValueError(
                f"MoCo tracks gradients of shape {tuple(self._y.shape)} but got a Jacobian "
                f"of shape {(k, m)}; use a fresh instance for another model or task count"
            )
        t = self.step + 1
        beta_t = self.beta / t**self.sigma_beta
        gamma_t = self.gamma / t**self.sigma_gamma
        losses = losses.to(device=device, dtype=dtype)
        if self._y is None or self._lambda is None:
            lam = torch.full((k,), 1.0 / k, dtype=dtype, device=device)
            # y_0 = 0 gives y_1 = beta_1 g_hat_1; y_init="first" gives y_1 = g_hat_1.
            y = _tracked(None, jacobian, losses, 1.0 if self.y_init == "first" else beta_t)
        else:
            lam = self._lambda.to(device=device, dtype=dtype)
            y = _tracked(self._y.to(device=device, dtype=dtype), jacobian, losses, beta_t)
        gram = y @ y.T
        lam = project_onto_simplex(lam - gamma_t * (gram @ lam + self.rho * lam))
        self._y, self._lambda, self.step = y, lam, t
        return lam @ y

    @property
    def last_weights(self) -> Tensor | None:
        """The current simplex weights ``lambda`` (``None`` before the first call)."""
        return None if self._lambda is None else self._lambda.clone()

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "y": None if self._y is None else self._y.clone(),
            "lambda": None if self._lambda is None else self._lambda.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"step", "y", "lambda"} - set(state)
        if missing:
            raise KeyError(f"MoCo state lacks {sorted(missing)}")
        y, lam = state["y"], state["lambda"]
        if (y is None) != (lam is None):
            raise ValueError("MoCo state must hold both y and lambda, or neither")
        self.step = int(state["step"])
        self._y = None if y is None else torch.as_tensor(y).clone()
        self._lambda = None if lam is None else torch.as_tensor(lam).clone()

    def __repr__(self) -> str:
        extra = "" if self.y_init == "zeros" else ", y_init='first'"
        return (
            f"MoCo(beta={self.beta}, sigma_beta={self.sigma_beta}, gamma={self.gamma}, "
            f"sigma_gamma={self.sigma_gamma}, rho={self.rho}{extra})"
        )
