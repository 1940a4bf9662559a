"""Multi-task Soft Actor-Critic (MTRL style) whose per-task losses go through a Balancer.

The agent of the MT10 benchmark (:mod:`fairmtl.bench.mt10`), as in the MTRL codebase
(Sodhani et al. 2021) that FairGrad (Ban & Ji 2024, section 5.2), Nash-MTL (Navon et al.
2022), CAGrad (Liu et al. 2021) and FAMO (Liu et al. 2023) use for their MT10 results:

- the observation is the environment's state with the task's one-hot id appended;
- a shared actor (tanh-squashed Gaussian policy; ``log_std`` squashed into
  ``[log_std_min, log_std_max]`` with ``tanh`` as MTRL does) and twin critics ``Q1, Q2``
  with Polyak-averaged target copies (``tau`` = 0.005);
- optionally multi-headed (``multihead``): a shared trunk and one output layer per task,
  for the actor and for both critics (MH SAC of Yu et al. 2020);
- a learned temperature, one ``log alpha`` per task (or one shared), target entropy
  ``-action_dim``;
- per-task losses: for task ``k`` the mean over its samples of the critic's
  ``(Q1 - y)^2 + (Q2 - y)^2`` and of the actor's ``alpha_k log pi - min(Q1, Q2)``. The K
  critic losses go through one :class:`~fairmtl.Balancer` (shared = critic trunk, task
  parameters = critic heads), the K actor losses through another one (its own method
  instance); the temperature losses are independent per task (a plain backward pass).

Everything here is plain PyTorch and runs without metaworld; the environments live in
:mod:`fairmtl.bench.mt10`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairmtl.balancer import Balancer

__all__ = ["MTSAC", "Actor", "Critic", "ReplayBuffers", "SACBatch", "TaskMLP", "effective_weights"]


class TaskMLP(nn.Module):
    """An MLP on ``[state, one-hot task]`` with a shared trunk and one or K output layers.

    ``trunk`` holds ``Linear + ReLU`` blocks of the ``hidden`` widths; the output layer is
    shared (``multihead=False``) or one ``Linear`` per task, selected by the sample's task.
    Weights are initialised orthogonally with zero biases (MTRL's ``weight_init``).
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], out_dim: int, num_tasks: int, multihead: bool
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("hidden must name at least one hidden layer width")
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            if not isinstance(h, int) or isinstance(h, bool) or h < 1:
                raise ValueError(f"hidden widths must be positive ints, got {list(hidden)!r}")
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.num_tasks = num_tasks
        self.multihead = multihead
        count = num_tasks if multihead else 1
        self.heads = nn.ModuleList(nn.Linear(width, out_dim) for _ in range(count))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.orthogonal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, task: Tensor) -> Tensor:
        z = self.trunk(x)
        if not self.multihead:
            return self.heads[0](z)
        out = torch.stack([head(z) for head in self.heads], dim=1)  # (N, K, out)
        index = task.view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        return out.gather(1, index).squeeze(1)

    def shared_parameters(self) -> list[Tensor]:
        """The trunk, and the output layer when it is shared by all tasks."""
        params: list[Tensor] = list(self.trunk.parameters())
        if not self.multihead:
            params += list(self.heads.parameters())
        return params

    def task_parameters(self) -> list[Tensor]:
        """The per-task output layers (empty when single-headed)."""
        return list(self.heads.parameters()) if self.multihead else []

    def last_shared_layer(self) -> nn.Module:
        """The last shared ``Linear`` (GradNorm's ``layer``)."""
        if not self.multihead:
            return self.heads[0]
        return [m for m in self.trunk if isinstance(m, nn.Linear)][-1]


def _one_hot_input(obs: Tensor, task: Tensor, num_tasks: int) -> Tensor:
    return torch.cat([obs, F.one_hot(task, num_tasks).to(obs.dtype)], dim=-1)


def _log1m_tanh_sq(u: Tensor) -> Tensor:
    """``log(1 - tanh(u)^2)``, computed stably as ``2 (log 2 - u - softplus(-2u))``."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy on ``[state, one-hot task]`` (SAC, Haarnoja et al. 2018)."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_tasks: int,
        hidden: Sequence[int],
        multihead: bool,
        log_std_bounds: tuple[float, float] = (-20.0, 2.0),
    ) -> None:
        super().__init__()
        low, high = log_std_bounds
        if not low < high:
            raise ValueError(f"log_std_bounds must be (low, high) with low < high, got {log_std_bounds!r}")
        self.num_tasks = num_tasks
        self.action_dim = action_dim
        self.log_std_bounds = (float(low), float(high))
        self.net = TaskMLP(obs_dim + num_tasks, hidden, 2 * action_dim, num_tasks, multihead)

    def distribution(self, obs: Tensor, task: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, log_std)`` of the pre-squash Gaussian."""
        mu, raw = self.net(_one_hot_input(obs, task, self.num_tasks), task).chunk(2, dim=-1)
        low, high = self.log_std_bounds
        log_std = low + 0.5 * (high - low) * (torch.tanh(raw) + 1.0)
        return mu, log_std

    def sample(
        self, obs: Tensor, task: Tensor, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """A reparameterised action ``tanh(mu + std * noise)`` and its log-probability (N, 1).

        ``noise`` (standard normal, shape (N, action_dim)) is drawn from torch's global
        generator when not given; passing it re-evaluates the same sample.
        """
        mu, log_std = self.distribution(obs, task)
        if noise is None:
            noise = torch.randn_like(mu)
        u = mu + noise * log_std.exp()
        gauss = (-0.5 * noise.pow(2) - log_std).sum(-1, keepdim=True) - 0.5 * math.log(
            2 * math.pi
        ) * self.action_dim
        log_pi = gauss - _log1m_tanh_sq(u).sum(-1, keepdim=True)
        return torch.tanh(u), log_pi

    def act(self, obs: Tensor, task: Tensor) -> Tensor:
        """The deterministic action ``tanh(mean)`` (evaluation)."""
        mu, _ = self.distribution(obs, task)
        return torch.tanh(mu)


class Critic(nn.Module):
    """Twin Q networks ``Q1, Q2`` on ``[state, one-hot task, action]``."""

    def __init__(
        self, obs_dim: int, action_dim: int, num_tasks: int, hidden: Sequence[int], multihead: bool
    ) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        in_dim = obs_dim + num_tasks + action_dim
        self.q1 = TaskMLP(in_dim, hidden, 1, num_tasks, multihead)
        self.q2 = TaskMLP(in_dim, hidden, 1, num_tasks, multihead)

    def forward(self, obs: Tensor, action: Tensor, task: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([_one_hot_input(obs, task, self.num_tasks), action], dim=-1)
        return self.q1(x, task), self.q2(x, task)

    def shared_parameters(self) -> list[Tensor]:
        return self.q1.shared_parameters() + self.q2.shared_parameters()

    def task_parameters(self) -> list[Tensor]:
        return self.q1.task_parameters() + self.q2.task_parameters()


@dataclass
class SACBatch:
    """A task-balanced batch: ``per_task`` samples of task 0, then of task 1, ...."""

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    not_done: Tensor
    task: Tensor
    per_task: int


class ReplayBuffers:
    """One FIFO replay buffer per task in preallocated tensors (K, capacity, ...).

    :meth:`sample` draws ``per_task`` transitions uniformly from every task's buffer (a
    task-balanced batch), with the given generator. ``state_dict`` holds only the filled
    part of each buffer with its size and insertion index.
    """

    def __init__(
        self,
        num_tasks: int,
        capacity: int,
        obs_dim: int,
        action_dim: int,
        device: torch.device | str = "cpu",
    ) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.num_tasks = num_tasks
        self.capacity = capacity
        self.device = torch.device(device)
        shape = (num_tasks, capacity)
        kw: dict[str, Any] = {"dtype": torch.float32, "device": self.device}
        self.obs = torch.zeros(*shape, obs_dim, **kw)
        self.next_obs = torch.zeros(*shape, obs_dim, **kw)
        self.action = torch.zeros(*shape, action_dim, **kw)
        self.reward = torch.zeros(*shape, 1, **kw)
        self.not_done = torch.zeros(*shape, 1, **kw)
        self.size = torch.zeros(num_tasks, dtype=torch.long)
        self.index = torch.zeros(num_tasks, dtype=torch.long)

    _FIELDS = ("obs", "next_obs", "action", "reward", "not_done")

    def add(
        self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, not_done: Tensor
    ) -> None:
        """Append one transition for every task (row ``k`` of each argument is task ``k``)."""
        k = self.num_tasks
        rows = torch.arange(k)
        cols = self.index.clone()
        for name, value in zip(self._FIELDS, (obs, next_obs, action, reward, not_done)):
            getattr(self, name)[rows, cols] = value.reshape(k, -1).to(self.device, torch.float32)
        self.index = (self.index + 1) % self.capacity
        self.size = torch.clamp(self.size + 1, max=self.capacity)

    def sample(self, per_task: int, generator: torch.Generator) -> SACBatch:
        if int(self.size.min()) < 1:
            raise RuntimeError("cannot sample from an empty replay buffer")
        k = self.num_tasks
        u = torch.rand(k, per_task, generator=generator, dtype=torch.float64)
        idx = (u * self.size.view(k, 1)).long().clamp_(max=self.capacity - 1).to(self.device)
        rows = torch.arange(k, device=self.device).view(k, 1).expand(k, per_task)

        def take(t: Tensor) -> Tensor:
            return t[rows, idx].reshape(k * per_task, -1)

        task = torch.arange(k, device=self.device).repeat_interleave(per_task)
        return SACBatch(take(self.obs), take(self.action), take(self.reward),
                        take(self.next_obs), take(self.not_done), task, per_task)  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        n = int(self.size.max())
        out: dict[str, Any] = {"size": self.size.clone(), "index": self.index.clone(),
                               "capacity": self.capacity}  # fmt: skip
        for name in self._FIELDS:
            out[name] = getattr(self, name)[:, :n].cpu().clone()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"replay buffer capacity {self.capacity} differs from the checkpoint's {state['capacity']}"
            )
        n = state["obs"].shape[1]
        for name in self._FIELDS:
            getattr(self, name)[:, :n] = state[name].to(self.device)
        self.size = state["size"].clone()
        self.index = state["index"].clone()


def effective_weights(balancer: Balancer) -> Tensor | None:
    """The last step's task weights: loss weights times the aggregator's weights if any."""
    lam = balancer.last_loss_weights
    if lam is None:
        return None
    lam = lam.detach().double().cpu()
    w = getattr(balancer.aggregator, "last_weights", None)
    if isinstance(w, Tensor) and w.shape == lam.shape:
        return lam * w.detach().double().cpu()
    return lam


class MTSAC:
    """The multi-task SAC agent: networks, optimizers, temperature and the update step.

    Args:
        obs_dim, action_dim, num_tasks: the problem's sizes.
        hidden: hidden layer widths of the actor and of each critic.
        multihead: one output layer per task (actor and critics).
        lr: Adam learning rate of actor, critic and temperature.
        discount, tau: SAC's discount and the target networks' Polyak rate.
        init_temperature: initial ``alpha``.
        per_task_alpha: one ``log alpha`` per task (else one shared).
        actor_balancer, critic_balancer: the methods; ``actor_balancer=None`` trains the
            actor on the mean of its task losses.
        clip_grad_norm: clip the actor's and the critic's gradient norms (``None``: off).
        device: where the networks live.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_tasks: int,
        *,
        hidden: Sequence[int],
        multihead: bool,
        lr: float,
        discount: float,
        tau: float,
        init_temperature: float,
        per_task_alpha: bool,
        log_std_bounds: tuple[float, float] = (-20.0, 2.0),
        clip_grad_norm: float | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_tasks = num_tasks
        self.action_dim = action_dim
        self.discount = discount
        self.tau = tau
        self.clip_grad_norm = clip_grad_norm
        self.per_task_alpha = per_task_alpha
        self.device = torch.device(device)
        self.target_entropy = -float(action_dim)
        self.actor = Actor(obs_dim, action_dim, num_tasks, hidden, multihead, log_std_bounds).to(
            self.device
        )
        self.critic = Critic(obs_dim, action_dim, num_tasks, hidden, multihead).to(self.device)
        self.critic_target = copy.deepcopy(self.critic)
        for p in self.critic_target.parameters():
            p.requires_grad_(False)
        n_alpha = num_tasks if per_task_alpha else 1
        self.log_alpha = torch.full(
            (n_alpha,), math.log(init_temperature), device=self.device, requires_grad=True
        )
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)
        self.actor_balancer: Balancer | None = None
        self.critic_balancer: Balancer | None = None

    def set_balancers(self, actor: Balancer | None, critic: Balancer) -> None:
        self.actor_balancer = actor
        self.critic_balancer = critic

    def alpha(self, task: Tensor) -> Tensor:
        """Each sample's temperature, shape (N, 1)."""
        a = self.log_alpha.exp()
        return (a[task] if self.per_task_alpha else a.expand(task.shape[0])).unsqueeze(1)

    @torch.no_grad()
    def explore(self, obs: Tensor, task: Tensor) -> Tensor:
        return self.actor.sample(obs, task)[0]

    @torch.no_grad()
    def act(self, obs: Tensor, task: Tensor) -> Tensor:
        return self.actor.act(obs, task)

    # ------------------------------------------------------------------ the update
    def _critic_losses(self, batch: SACBatch, target_q: Tensor) -> Tensor:
        q1, q2 = self.critic(batch.obs, batch.action, batch.task)
        per_sample = (q1 - target_q).pow(2) + (q2 - target_q).pow(2)
        return per_sample.view(self.num_tasks, batch.per_task).mean(dim=1)

    def _actor_losses(self, batch: SACBatch, noise: Tensor) -> tuple[Tensor, Tensor]:
        action, log_pi = self.actor.sample(batch.obs, batch.task, noise)
        q1, q2 = self.critic(batch.obs, action, batch.task)
        per_sample = self.alpha(batch.task).detach() * log_pi - torch.min(q1, q2)
        return per_sample.view(self.num_tasks, batch.per_task).mean(dim=1), log_pi

    def update(self, batch: SACBatch) -> dict[str, Tensor]:
        """One SAC update (critic, then actor and temperature, then the targets).

        Returns the detached (K,) ``critic_loss``, ``actor_loss`` and ``alpha`` of the step.
        """
        if self.critic_balancer is None:
            raise RuntimeError("call set_balancers() before update()")
        with torch.no_grad():
            next_action, next_log_pi = self.actor.sample(batch.next_obs, batch.task)
            tq1, tq2 = self.critic_target(batch.next_obs, next_action, batch.task)
            target_v = torch.min(tq1, tq2) - self.alpha(batch.task) * next_log_pi
            target_q = batch.reward + batch.not_done * self.discount * target_v

        # critic
        critic_losses = self._critic_losses(batch, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        self.critic_balancer.backward(critic_losses, shared=self.critic.shared_parameters(),
                                      task_params=self.critic.task_parameters() or None)  # fmt: skip
        if self.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.critic.parameters(), self.clip_grad_norm)
        self.critic_opt.step()
        if self.critic_balancer.needs_observe:
            with torch.no_grad():
                self.critic_balancer.observe(self._critic_losses(batch, target_q))

        # actor
        noise = torch.randn(batch.obs.shape[0], self.action_dim, device=batch.obs.device)
        actor_losses, log_pi = self._actor_losses(batch, noise)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_params = list(self.actor.parameters())
        if self.actor_balancer is None:
            torch.autograd.backward(actor_losses.mean(), inputs=actor_params)
        else:
            net = self.actor.net
            self.actor_balancer.backward(actor_losses, shared=net.shared_parameters(),
                                         task_params=net.task_parameters() or None)  # fmt: skip
        if self.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(actor_params, self.clip_grad_norm)
        self.actor_opt.step()
        if self.actor_balancer is not None and self.actor_balancer.needs_observe:
            with torch.no_grad():
                self.actor_balancer.observe(self._actor_losses(batch, noise)[0])

        # temperature: independent per-task losses alpha_k * (-log pi - target entropy)
        slack = (-log_pi - self.target_entropy).detach()
        alpha_losses = (self.alpha(batch.task) * slack).view(self.num_tasks, batch.per_task)
        alpha_loss = alpha_losses.mean(dim=1).sum() if self.per_task_alpha else alpha_losses.mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        # targets
        with torch.no_grad():
            src: list[Tensor] = list(self.critic.parameters())
            dst: list[Tensor] = list(self.critic_target.parameters())
            torch._foreach_mul_(dst, 1.0 - self.tau)
            torch._foreach_add_(dst, src, alpha=self.tau)

        alphas = self.log_alpha.detach().exp()
        if not self.per_task_alpha:
            alphas = alphas.expand(self.num_tasks)
        return {"critic_loss": critic_losses.detach(), "actor_loss": actor_losses.detach(),
                "alpha": alphas.clone()}  # fmt: skip

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "actor_balancer": None if self.actor_balancer is None else self.actor_balancer.state_dict(),
            "critic_balancer": None if self.critic_balancer is None else self.critic_balancer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        if self.actor_balancer is not None and state["actor_balancer"] is not None:
            self.actor_balancer.load_state_dict(state["actor_balancer"])
        if self.critic_balancer is not None:
            self.critic_balancer.load_state_dict(state["critic_balancer"])
