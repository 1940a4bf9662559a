"""MT10 (Meta-World, 10 manipulation tasks) with multi-task SAC: FairGrad Table 4.

FairGrad (Ban & Ji 2024, section 5.2), following CAGrad, Nash-MTL and FAMO, trains one
policy for the ten MT10 tasks of Meta-World (Yu et al. 2020) with multi-task Soft
Actor-Critic in the MTRL codebase (Sodhani et al. 2021) and reports the best mean success
rate over training (evaluated every 10,000 steps, 10 seeds). This module rebuilds that
setting on metaworld 3.x (``pip install 'fairmtl[mt10]'``); the agent is
:mod:`fairmtl.bench.mtsac`.

The setting, as in MTRL (``mtrl/experiment/multitask.py``, ``mtenv``'s metaworld builder):

- one environment per task; each task gets ONE goal configuration out of metaworld's 50
  (``goals="fixed"``: chosen by the run's seed, the same for training and evaluation,
  like MTRL's ``env_id_to_task_map``); ``goals="random"`` instead draws a goal per training
  episode and evaluates on ``eval_episodes`` fixed goals per task (the same for every
  run);
- a *step* advances all ten environments once (10 transitions) and is followed by one
  gradient update; the first ``init_steps`` steps take uniform random actions, and at the
  first learning step ``init_steps`` updates are done at once (MTRL's catch-up), so a run
  makes ``steps - 1`` updates. "2M steps" (FairGrad) is 2M such steps (20M transitions);
- episodes last ``episode_length`` = 150 steps (MTRL's hard-coded horizon; metaworld 3's
  own is 500) and never terminate: time-outs bootstrap (``not_done`` = 1);
- rewards are normalised per task by a running variance (MTRL's
  ``NormalizedEnvWrapper``: ``r / sqrt(var)``, EMA rate 0.001), ``reward_normalization``;
- a replay buffer per task; each batch takes ``batch_size / 10`` transitions of every
  task (MTRL samples one shared buffer uniformly, which is balanced in expectation);
- evaluation: every ``eval_every`` steps the deterministic policy ``tanh(mean)`` runs
  ``eval_episodes`` episodes per task; an episode succeeds if ``info["success"]`` is set at
  any step (MTRL's rule). With fixed goals the simulator and the policy are deterministic,
  so every evaluation episode of a task is the same: MTRL's scripts for FairGrad, Nash-MTL
  and CAGrad pass ``num_eval_episodes=1``.

What the gradient method is applied to: the reference MTRL agents route the per-task
critic loss, actor loss and temperature loss each through the method. Here the critic's
and the actor's K losses each go through their own :class:`~fairmtl.Balancer` (two
method instances); the temperature losses take a plain backward pass: with one
``log alpha`` per task (``per_task_alpha``) each task's temperature gets its own loss's
gradient, which a method could only rescale; with one shared temperature (the reference
scripts' ``should_use_disentangled_alpha=False``, the ``paper`` configuration) it
minimises the mean over all samples. Under ``actor_balance="auto"`` the actor gets the mean of
its losses, not the method, when the method is defined for positive losses only (a
positive-only loss transform such as log, a weighting that learns from loss decreases
like FAMO, an aggregator that scales gradients by the loss values like MoCo): actor
losses ``alpha log pi - Q`` are usually negative. FAMO's own MT10 code does exactly this
(FAMO on the critic, the plain mean on the actor).

Checkpoints: at every evaluation (atomic). They hold the agent (actor, critics, targets,
log-alphas, all optimizers, both Balancers' states), the replay buffers (filled part,
sizes, insertion indices), the reward normalisers, every random state (torch, the replay
sampler, numpy's exploration and goal generators) and the evaluation history. The
training episodes in progress are ended at every evaluation (time-out, bootstrapped) and
fresh ones start after it, in an uninterrupted run as in a resumed one, so a resumed run
is identical to an uninterrupted one.

Command line: ``fairmtl mt10 --method fairgrad:alpha=2 --config cpu --seeds 0,1,2``
(see :func:`main`). The ``paper`` configuration is the published one (GPU: days per run);
``cpu`` is a reduced budget for 2 CPU cores (see docs/mt10.md for its arithmetic).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fairmtl._registry import lookup
from fairmtl.balancer import Balancer
from fairmtl.bench.base import MissingExtraError, parse_value, require
from fairmtl.bench.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_atomic
from fairmtl.bench.methods import MethodSpec, build_balancer, parse_method
from fairmtl.bench.mtsac import MTSAC, ReplayBuffers, effective_weights
from fairmtl.bench.runner import DEFAULT_CHECKPOINTS, DEFAULT_DB, config_label, run_key
from fairmtl.bench.store import ResultsStore, StoreError

__all__ = [
    "BENCH_METHODS",
    "CONFIGS",
    "NAME",
    "TASKS",
    "MT10Result",
    "RLConfig",
    "evaluate",
    "main",
    "make_envs",
    "random_baseline",
    "train",
]

NAME = "mt10"
TASKS: tuple[str, ...] = (
    "reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close",
    "button-press-topdown", "peg-insert-side", "window-open", "window-close",
)  # fmt: skip
"""The MT10 tasks in metaworld's order (environment names without the ``-vN`` suffix)."""
NUM_TASKS = len(TASKS)
OBS_DIM = 39
ACTION_DIM = 4
GOALS_PER_TASK = 50
_EVAL_GOAL_SEED = 20_240_510  # the fixed evaluation goals of goals="random"
_FORMAT = 1

BENCH_METHODS: tuple[str, ...] = (
    "ls", "fairgrad:alpha=2", "pcgrad", "cagrad:c=0.9", "nash-mtl", "moco", "famo:gamma=0.01",
)  # fmt: skip
"""Methods of FairGrad's Table 4, with their MT10 settings (CAGrad's MT10 script uses
c = 0.9; FAMO's MT10 regulariser is 0.01). "ls" is MTL SAC (mean of the task losses up to
a constant factor)."""
default_methods = BENCH_METHODS


@dataclass(frozen=True)
class RLConfig:
    """A named MT10 configuration ("paper", "cpu"); override fields with ``--set k=v``.

    Attributes:
        steps: training steps; one step advances all ten environments once (10
            transitions) and is followed by one update.
        batch_size: transitions per update, ``batch_size / 10`` of every task.
        eval_every: evaluate (and checkpoint) every this many steps, and at the end.
        eval_episodes: evaluation episodes per task.
        lr: Adam learning rate of actor, critics and temperatures.
        hidden: hidden layer widths of the actor and of each critic.
        multihead: one output layer per task (MH SAC) instead of a shared one.
        discount, tau: SAC's discount and the target networks' Polyak rate.
        init_temperature: the initial temperature ``alpha``.
        per_task_alpha: one learned temperature per task (else one shared).
        log_std_bounds: the policy's ``log std`` range.
        init_steps: steps of uniform random actions before learning starts.
        buffer_per_task: replay capacity of each task's buffer.
        episode_length: steps per episode (<= the environment's own limit, 500).
        reward_normalization: divide rewards by a running standard deviation (MTRL).
        goals: ``"fixed"`` (one goal per task, MTRL) or ``"random"`` (a goal per episode).
        actor_balance: ``"auto"``, ``"method"`` (the method on the actor losses too) or
            ``"mean"`` (the actor minimises the mean of its task losses).
        clip_grad_norm: clip the actor's and the critic's gradient norm (``None``: off).
        threads: ``torch.set_num_threads`` for the run (``None``: torch's default).
        task_seed: seed of ``metaworld.MT10`` (the 50 goal configurations of each task).
    """

    steps: int
    batch_size: int
    eval_every: int
    eval_episodes: int
    lr: float = 3e-4
    hidden: tuple[int, ...] = (400, 400, 400)
    multihead: bool = False
    discount: float = 0.99
    tau: float = 0.005
    init_temperature: float = 1.0
    per_task_alpha: bool = True
    log_std_bounds: tuple[float, float] = (-20.0, 2.0)
    init_steps: int = 1500
    buffer_per_task: int = 100_000
    episode_length: int = 150
    reward_normalization: bool = True
    goals: str = "fixed"
    actor_balance: str = "auto"
    clip_grad_norm: float | None = None
    threads: int | None = None
    task_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_episodes", "buffer_per_task",
                     "episode_length"):  # fmt: skip
            _positive_int(self, name)
        _positive_int(self, "init_steps", allow_zero=True)
        _positive_int(self, "task_seed", allow_zero=True)
        if self.threads is not None:
            _positive_int(self, "threads")
        if self.batch_size % NUM_TASKS:
            raise ValueError(
                f"config batch_size must be a multiple of {NUM_TASKS} (the same number of "
                f"transitions from every task), got {self.batch_size}"
            )
        for name in ("lr", "init_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"config {name} must be a positive number, got {value!r}")
        for name in ("discount", "tau"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"config {name} must be in (0, 1], got {value!r}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"config clip_grad_norm must be > 0 or null, got {self.clip_grad_norm!r}")
        if self.goals not in ("fixed", "random"):
            raise ValueError(f"config goals must be 'fixed' or 'random', got {self.goals!r}")
        if self.actor_balance not in ("auto", "method", "mean"):
            raise ValueError(
                f"config actor_balance must be 'auto', 'method' or 'mean', got {self.actor_balance!r}"
            )
        for name in ("multihead", "per_task_alpha", "reward_normalization"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"config {name} must be true or false, got {getattr(self, name)!r}")
        hidden = self.hidden
        if (not isinstance(hidden, (tuple, list)) or not hidden
                or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden)):  # fmt: skip
            raise ValueError(f"config hidden must be a list of positive ints, got {hidden!r}")
        object.__setattr__(self, "hidden", tuple(hidden))
        bounds = self.log_std_bounds
        if (not isinstance(bounds, (tuple, list)) or len(bounds) != 2
                or not float(bounds[0]) < float(bounds[1])):  # fmt: skip
            raise ValueError(f"config log_std_bounds must be [low, high] with low < high, got {bounds!r}")
        object.__setattr__(self, "log_std_bounds", (float(bounds[0]), float(bounds[1])))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy (what the results store records)."""
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        out["log_std_bounds"] = list(self.log_std_bounds)
        return out

    def with_overrides(self, overrides: Mapping[str, Any]) -> RLConfig:
        """A copy with fields replaced (ValueError naming an unknown field)."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(
                f"unknown mt10 config option {unknown[0]!r}; options: {', '.join(sorted(fields))}"
            )
        return dataclasses.replace(self, **dict(overrides))


def _positive_int(cfg: RLConfig, name: str, allow_zero: bool = False) -> None:
    value = getattr(cfg, name)
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        what = "a non-negative int" if allow_zero else "a positive int"
        raise ValueError(f"config {name} must be {what}, got {value!r}")


CONFIGS: Mapping[str, RLConfig] = {
    # FairGrad section 5.2 + the MTRL settings its scripts use: 2M steps, batch 1280,
    # evaluation every 10k steps (1 episode per task), hidden 400x3, lr 3e-4, replay 1M
    # transitions in all, 1,500 random steps, 150-step episodes, one shared temperature
    # (should_use_disentangled_alpha=False).
    "paper": RLConfig(steps=2_000_000, batch_size=1280, eval_every=10_000, eval_episodes=1,
                      per_task_alpha=False),
    # Reduced for 2 CPU cores (under an hour per run, see docs/mt10.md for the
    # arithmetic): 30k steps (300k transitions, 1.5% of the paper's budget), a 256x2
    # network, batch 320, evaluation every 2k steps, one torch thread; one temperature
    # per task (learns the easy tasks sooner).
    "cpu": RLConfig(
        steps=30_000, batch_size=320, eval_every=2_000, eval_episodes=1,
        hidden=(256, 256), init_steps=1_000, buffer_per_task=30_000, threads=1,
    ),
}
"""The named configurations. ``cpu`` is a reduced budget, not the published setting."""


def get_config(name: str) -> RLConfig:
    if name not in CONFIGS:
        raise KeyError(f"mt10 has no configuration {name!r}; configurations: {', '.join(CONFIGS)}")
    return CONFIGS[name]


# ---------------------------------------------------------------------------- environments


@functools.lru_cache(maxsize=4)
def _benchmark(task_seed: int) -> Any:
    """``metaworld.MT10(seed=task_seed)`` (seconds to build: cached per process)."""
    metaworld = require("metaworld", "mt10")
    return metaworld.MT10(seed=task_seed)


def _task_name(env_name: str) -> str:
    base, sep, version = env_name.rpartition("-v")
    return base if sep and version.isdigit() else env_name


class _TaskEnv:
    """One MT10 task's environment: goal selection, episode length, reward normaliser."""

    def __init__(self, env: Any, tasks: Sequence[Any], episode_length: int, normalize: bool) -> None:
        self.env = env
        self.tasks = list(tasks)
        self.episode_length = episode_length
        self.normalize = normalize
        self.reward_mean = 0.0
        self.reward_var = 1.0
        self.goal = -1
        self.t = 0

    def set_goal(self, goal: int) -> None:
        if goal != self.goal:
            self.env.set_task(self.tasks[goal])
            self.goal = goal

    def reset(self) -> np.ndarray:
        if hasattr(self.env, "_did_see_sim_exception"):
            # metaworld never clears this flag; a fresh episode must not inherit it
            self.env._did_see_sim_exception = False
        obs, _ = self.env.reset()
        self.t = 0
        return np.asarray(obs, dtype=np.float64)

    def step(self, action: np.ndarray, learn: bool) -> tuple[np.ndarray, float, bool, bool, bool]:
        """``(obs, reward, success, terminated, episode_over)``; ``learn`` updates the normaliser."""
        obs, reward, terminated, _, info = self.env.step(action)
        self.t += 1
        reward = float(reward)
        if learn and self.normalize:
            rate = 0.001
            self.reward_mean = (1 - rate) * self.reward_mean + rate * reward
            self.reward_var = (1 - rate) * self.reward_var + rate * (reward - self.reward_mean) ** 2
            reward = reward / (math.sqrt(self.reward_var) + 1e-8)
        over = bool(terminated) or self.t >= self.episode_length
        return (np.asarray(obs, dtype=np.float64), reward, bool(info.get("success", 0.0)),
                bool(terminated), over)  # fmt: skip


def make_envs(cfg: RLConfig, seed: int) -> list[_TaskEnv]:
    """The ten task environments of a run (``MissingExtraError`` without metaworld)."""
    bench = _benchmark(cfg.task_seed)
    names = [_task_name(n) for n in bench.train_classes]
    if tuple(names) != TASKS:
        raise RuntimeError(f"metaworld's MT10 has tasks {names}, expected {list(TASKS)}")
    envs = []
    for k, (env_name, env_cls) in enumerate(bench.train_classes.items()):
        tasks = [t for t in bench.train_tasks if t.env_name == env_name]
        if len(tasks) != GOALS_PER_TASK:
            raise RuntimeError(
                f"metaworld's MT10 has {len(tasks)} goals for {env_name}, expected {GOALS_PER_TASK}"
            )
        env = env_cls()
        limit = int(getattr(env, "max_path_length", cfg.episode_length))
        if cfg.episode_length > limit:
            raise ValueError(
                f"config episode_length {cfg.episode_length} exceeds {env_name}'s own limit {limit}"
            )
        env.set_task(tasks[0])
        env.seed(int(seed) * 1000 + k)
        envs.append(_TaskEnv(env, tasks, cfg.episode_length, cfg.reward_normalization))
    return envs


def _training_goals(seed: int) -> list[int]:
    """The fixed goal (0..49) of each task for a run with this seed (goals="fixed")."""
    return [int(g) for g in np.random.default_rng([seed, 7]).integers(GOALS_PER_TASK, size=NUM_TASKS)]


def _evaluation_goals(cfg: RLConfig, seed: int) -> list[list[int]]:
    """``[task][episode]`` goal indices of an evaluation (the same at every evaluation)."""
    if cfg.goals == "fixed":
        return [[g] * cfg.eval_episodes for g in _training_goals(seed)]
    out = []
    for k in range(NUM_TASKS):
        order = np.random.default_rng([_EVAL_GOAL_SEED, k]).permutation(GOALS_PER_TASK)
        out.append([int(order[e % GOALS_PER_TASK]) for e in range(cfg.eval_episodes)])
    return out


def _run_episodes(
    envs: Sequence[_TaskEnv],
    goals: Sequence[Sequence[int]],
    policy: Callable[[np.ndarray], np.ndarray],
) -> list[float]:
    """Success rate per task over ``goals[k]`` episodes; all tasks step together."""
    episodes = len(goals[0])
    wins = [0] * len(envs)
    for e in range(episodes):
        obs = []
        for env, g in zip(envs, goals):
            env.set_goal(g[e])
            obs.append(env.reset())
        done = [False] * len(envs)
        success = [False] * len(envs)
        state = np.stack(obs)
        while not all(done):
            actions = policy(state)
            for k, env in enumerate(envs):
                if done[k]:
                    continue
                o, _, ok, _, over = env.step(actions[k], learn=False)
                state[k] = o
                success[k] = success[k] or ok
                done[k] = over
        wins = [w + int(s) for w, s in zip(wins, success)]
    return [w / episodes for w in wins]


def evaluate(agent: MTSAC, envs: Sequence[_TaskEnv], cfg: RLConfig, seed: int) -> dict[str, float]:
    """Success rates of the deterministic policy: ``{"<task>/success": r, "mean/success": m}``."""
    device = agent.device
    tasks = torch.arange(NUM_TASKS, device=device)

    def policy(state: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(state, dtype=torch.float32, device=device)
        return agent.act(obs, tasks).cpu().numpy().astype(np.float64)

    rates = _run_episodes(envs, _evaluation_goals(cfg, seed), policy)
    out = {f"{t}/success": r for t, r in zip(TASKS, rates)}
    out["mean/success"] = float(np.mean(rates))
    return out


def random_baseline(
    config: str = "cpu",
    *,
    seed: int = 0,
    episodes: int = 10,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Success rate of a uniform random policy on each MT10 task (and their mean).

    Uses the goals a run of ``config`` with ``seed`` is evaluated on (with ``goals="fixed"``
    the run's goal of each task), ``episodes`` episodes of ``episode_length`` steps per
    task, actions uniform in [-1, 1]^4 from ``numpy.random.default_rng(seed)``.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    cfg = get_config(config).with_overrides({**dict(overrides or {}), "eval_episodes": episodes})
    envs = make_envs(cfg, seed)
    rng = np.random.default_rng(seed)

    def policy(state: np.ndarray) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(state.shape[0], ACTION_DIM))

    rates = _run_episodes(envs, _evaluation_goals(cfg, seed), policy)
    out = {f"{t}/success": r for t, r in zip(TASKS, rates)}
    out["mean/success"] = float(np.mean(rates))
    return out


# ---------------------------------------------------------------------------- training


@dataclass(frozen=True)
class MT10Result:
    """What :func:`train` returns."""

    run_id: int
    key: str
    skipped: bool
    best_epoch: int
    best_success: float
    final_success: float
    train_seconds: float


def _check_method(method: str) -> MethodSpec:
    """Parse a method spec and refuse what the mt10 agent cannot train (clear errors)."""
    spec = parse_method(method, NUM_TASKS)
    if spec.is_stl:
        raise ValueError(
            f"{spec.text!r}: single-task baselines are not trained by the mt10 command "
            "(the published STL SAC row is in fairmtl.bench.published)"
        )
    for part in spec.parts:
        if getattr(lookup(part.name), "features_only", False):
            raise ValueError(
                f"{spec.text!r}: {part.name!r} is defined on gradients w.r.t. a shared "
                "representation (features mode), which the mt10 agent does not provide"
            )
    return spec


def _actor_gets_method(balancer: Balancer, mode: str) -> bool:
    """Whether the actor's (usually negative) losses go through the method too."""
    if mode != "auto":
        return mode == "method"
    positive_only = (
        balancer.transform.requires_positive
        or balancer.weighting.needs_observe
        or bool(getattr(balancer.aggregator, "requires_losses", False))
    )
    return not positive_only


def _progress(total: int, desc: str, enabled: bool) -> Any | None:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the progress bar is a convenience
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)


def train(
    method: str,
    config: str = "cpu",
    *,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    store: ResultsStore | str | Path = DEFAULT_DB,
    checkpoints: str | Path = DEFAULT_CHECKPOINTS,
    device: str | torch.device = "cpu",
    restart: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    on_step: Callable[[int], None] | None = None,
) -> MT10Result:
    """Train multi-task SAC on MT10 with a method; resume if interrupted.

    Args:
        method: a method specification (``"fairgrad:alpha=2"``, ``"ls"``, ...).
        config: ``"paper"`` or ``"cpu"``.
        seed: the run's seed (networks, exploration, replay sampling, fixed goals).
        overrides: configuration fields to replace (``{"steps": 5000}``).
        store: the results store or its path.
        checkpoints: folder of the per-run checkpoints.
        device: where the networks and the replay buffers live.
        restart: discard this run's checkpoint and rows, train from scratch.
        progress: show a progress bar (needs tqdm).
        log: where the per-evaluation summaries go (``None``: nowhere).
        on_step: called as ``on_step(step)`` after every environment step (and its update).
    """
    overrides = dict(overrides or {})
    cfg = get_config(config).with_overrides(overrides)
    spec = _check_method(method)
    require("metaworld", "mt10")
    key = run_key(NAME, spec.text, config, overrides, seed)
    say = log or (lambda _msg: None)
    ckpt_file = checkpoint_path(checkpoints, key)
    threads = torch.get_num_threads()  # the run's cfg.threads is undone afterwards
    db = store if isinstance(store, ResultsStore) else ResultsStore(store)
    if restart:
        ckpt_file.unlink(missing_ok=True)
    run_id = db.start_run(key=key, benchmark=NAME, method=spec.text,
                          config_name=config_label(config, overrides), config=cfg.to_dict(),
                          seed=seed)  # fmt: skip
    if restart:
        db.reset_run(run_id)
    try:
        checkpoint = load_checkpoint(ckpt_file, key)
        if checkpoint is not None and checkpoint.get("done"):
            best = checkpoint["best"]
            say(f"{key}: already done (best mean success {best['eval']['mean/success']:.3f} "
                f"at evaluation {best['epoch']}); --restart to train again")  # fmt: skip
            final = {"best": best["eval"], "final": checkpoint["last"]}
            db.finish_run(run_id, final=final, best_epoch=best["epoch"],
                          train_seconds=checkpoint["train_seconds"])  # fmt: skip
            return MT10Result(run_id, key, True, best["epoch"], best["eval"]["mean/success"],
                              checkpoint["last"]["mean/success"], checkpoint["train_seconds"])  # fmt: skip
        return _train(spec, cfg, key, seed, db, run_id, ckpt_file, checkpoint,
                      torch.device(device), progress, say, on_step)  # fmt: skip
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt):
            db.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        torch.set_num_threads(threads)


def _train(
    spec: MethodSpec,
    cfg: RLConfig,
    key: str,
    seed: int,
    db: ResultsStore,
    run_id: int,
    ckpt_file: Path,
    checkpoint: dict[str, Any] | None,
    device: torch.device,
    progress: bool,
    say: Callable[[str], None],
    on_step: Callable[[int], None] | None,
) -> MT10Result:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    k = NUM_TASKS
    envs = make_envs(cfg, seed)
    torch.manual_seed(seed)
    agent = MTSAC(OBS_DIM, ACTION_DIM, k, hidden=cfg.hidden, multihead=cfg.multihead, lr=cfg.lr,
                  discount=cfg.discount, tau=cfg.tau, init_temperature=cfg.init_temperature,
                  per_task_alpha=cfg.per_task_alpha, log_std_bounds=cfg.log_std_bounds,
                  clip_grad_norm=cfg.clip_grad_norm, device=device)  # fmt: skip
    critic_balancer = build_balancer(
        spec, seed=seed + 1, optimizer=agent.critic_opt,
        layer=list(agent.critic.q1.last_shared_layer().parameters()), num_tasks=k,
    )  # fmt: skip
    actor_balancer: Balancer | None = build_balancer(
        spec, seed=seed, optimizer=agent.actor_opt,
        layer=list(agent.actor.net.last_shared_layer().parameters()), num_tasks=k,
    )  # fmt: skip
    assert actor_balancer is not None
    if not _actor_gets_method(actor_balancer, cfg.actor_balance):
        actor_balancer = None
    agent.set_balancers(actor_balancer, critic_balancer)
    buffers = ReplayBuffers(k, min(cfg.buffer_per_task, cfg.steps), OBS_DIM, ACTION_DIM, device)
    sampler = torch.Generator().manual_seed(seed * 1_000_003 + 11)
    explore_rng = np.random.default_rng([seed, 1])
    goal_rng = np.random.default_rng([seed, 2])
    fixed_goals = _training_goals(seed)

    step = 0
    updates = 0
    epoch = 0
    train_seconds = 0.0
    best: dict[str, Any] = {"epoch": -1, "eval": {}}
    last: dict[str, float] = {}
    if checkpoint is not None:
        if checkpoint.get("format") != _FORMAT:
            raise CheckpointError(
                f"checkpoint {ckpt_file} has format {checkpoint.get('format')!r}, expected {_FORMAT}"
            )
        agent.load_state_dict(checkpoint["agent"])
        buffers.load_state_dict(checkpoint["buffers"])
        for env, (mean, var) in zip(envs, checkpoint["reward_norm"]):
            env.reward_mean, env.reward_var = mean, var
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], device)
        sampler.set_state(checkpoint["rng"]["sampler"])
        explore_rng.bit_generator.state = checkpoint["rng"]["explore"]
        goal_rng.bit_generator.state = checkpoint["rng"]["goals"]
        step, updates, epoch = checkpoint["step"], checkpoint["updates"], checkpoint["epoch"]
        train_seconds = checkpoint["train_seconds"]
        best, last = checkpoint["best"], checkpoint["last"]
        say(f"{key}: resuming after step {step} (evaluation {epoch}) from {ckpt_file}")

    tasks = torch.arange(k, device=device)
    per_task = cfg.batch_size // k

    def start_episodes() -> np.ndarray:
        obs = []
        for j, env in enumerate(envs):
            env.set_goal(fixed_goals[j] if cfg.goals == "fixed" else int(goal_rng.integers(GOALS_PER_TASK)))
            obs.append(env.reset())
        return np.stack(obs)

    state = start_episodes()
    while step < cfg.steps:
        period_end = min((step // cfg.eval_every + 1) * cfg.eval_every, cfg.steps)
        sums = {name: torch.zeros(k, dtype=torch.float64) for name in ("critic_loss", "actor_loss")}
        weight_sums: dict[str, Tensor] = {}
        alpha = agent.log_alpha.detach().exp().double().cpu().expand(k)
        n_period = 0
        bar = _progress(period_end - step, f"{spec.text} evaluation {epoch + 1}", progress)
        tic = time.perf_counter()
        while step < period_end:
            if step < cfg.init_steps:
                action = explore_rng.uniform(-1.0, 1.0, size=(k, ACTION_DIM))
            else:
                obs_t = torch.as_tensor(state, dtype=torch.float32, device=device)
                action = agent.explore(obs_t, tasks).cpu().numpy().astype(np.float64)
                n_up = cfg.init_steps if (step == cfg.init_steps and cfg.init_steps > 0) else 1
                for _ in range(n_up):
                    out = agent.update(buffers.sample(per_task, sampler))
                    updates += 1
                    n_period += 1
                    for name in sums:
                        sums[name] += out[name].double().cpu()
                    alpha = out["alpha"].double().cpu()
                    for name, bal in (("actor", agent.actor_balancer), ("critic", critic_balancer)):
                        w = None if bal is None else effective_weights(bal)
                        if w is not None:
                            weight_sums[name] = weight_sums.get(name, torch.zeros(k, dtype=torch.float64)) + w
            next_state = np.empty_like(state)
            rewards = np.empty(k)
            not_done = np.empty(k)
            over = [False] * k
            for j, env in enumerate(envs):
                o, r, _, terminated, over[j] = env.step(action[j], learn=True)
                next_state[j], rewards[j], not_done[j] = o, r, 0.0 if terminated else 1.0
            buffers.add(torch.as_tensor(state), torch.as_tensor(action), torch.as_tensor(rewards),
                        torch.as_tensor(next_state), torch.as_tensor(not_done))  # fmt: skip
            state = next_state
            for j, env in enumerate(envs):
                if over[j]:
                    env.set_goal(fixed_goals[j] if cfg.goals == "fixed"
                                 else int(goal_rng.integers(GOALS_PER_TASK)))  # fmt: skip
                    state[j] = env.reset()
            step += 1
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(step)
        seconds = time.perf_counter() - tic
        train_seconds += seconds
        if bar is not None:
            bar.close()
        for bal in (agent.actor_balancer, critic_balancer):
            if bal is not None:
                bal.end_epoch()

        epoch += 1
        result = evaluate(agent, envs, cfg, seed)
        last = result
        if best["epoch"] < 0 or result["mean/success"] > best["eval"]["mean/success"]:
            best = {"epoch": epoch, "eval": result}
        train_metrics: dict[str, float] = {"steps": float(step), "env_steps": float(step * k),
                                           "updates": float(updates)}  # fmt: skip
        for j, t in enumerate(TASKS):
            if n_period:
                train_metrics[f"{t}/critic_loss"] = float(sums["critic_loss"][j] / n_period)
                train_metrics[f"{t}/actor_loss"] = float(sums["actor_loss"][j] / n_period)
            train_metrics[f"{t}/alpha"] = float(alpha[j])
            for name, total in weight_sums.items():
                train_metrics[f"{t}/{name}_weight"] = float(total[j] / n_period)
        actor_w = weight_sums.get("actor")
        db.log_epoch(run_id, epoch=epoch, metrics={"train": train_metrics, "eval": result},
                     seconds=seconds, lr=cfg.lr,
                     task_weights=None if actor_w is None else (actor_w / n_period).tolist())  # fmt: skip
        ckpt = {
            "format": _FORMAT,
            "key": key,
            "done": False,
            "step": step,
            "updates": updates,
            "epoch": epoch,
            "agent": agent.state_dict(),
            "buffers": buffers.state_dict(),
            "reward_norm": [(env.reward_mean, env.reward_var) for env in envs],
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "sampler": sampler.get_state(),
                "explore": explore_rng.bit_generator.state,
                "goals": goal_rng.bit_generator.state,
            },
            "train_seconds": train_seconds,
            "best": best,
            "last": last,
        }
        save_atomic(ckpt, ckpt_file)
        losses = ""
        if n_period:
            losses = (f", critic loss {float(sums['critic_loss'].mean()) / n_period:.4g}, "
                      f"actor loss {float(sums['actor_loss'].mean()) / n_period:.4g}")  # fmt: skip
        say(f"{spec.text} step {step}/{cfg.steps} ({seconds:.1f}s): mean success "
            f"{result['mean/success']:.3f} (best {best['eval']['mean/success']:.3f}){losses}")  # fmt: skip
        # the episodes in progress end here, in an uninterrupted run as after a resume
        state = start_episodes()

    db.finish_run(run_id, final={"best": best["eval"], "final": last}, best_epoch=best["epoch"],
                  train_seconds=train_seconds)  # fmt: skip
    done = load_checkpoint(ckpt_file, key)
    if done is not None:
        done["done"] = True
        save_atomic(done, ckpt_file)
    return MT10Result(run_id, key, False, best["epoch"], best["eval"]["mean/success"],
                      last["mean/success"], train_seconds)  # fmt: skip


# ---------------------------------------------------------------------------- command line


def _overrides(items: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def _seeds(text: str, parser: argparse.ArgumentParser) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds expects comma-separated ints, got {text!r}")
    if not seeds:
        parser.error("--seeds names no seed")
    return seeds


def main(argv: list[str] | None = None) -> int:
    """``fairmtl mt10``: train multi-task SAC on MT10 with a method, one run per seed."""
    parser = argparse.ArgumentParser(
        prog="fairmtl mt10",
        description="Multi-task SAC on Meta-World MT10 (FairGrad Table 4); resumes automatically. "
        "Needs: pip install 'fairmtl[mt10]'.",
    )
    parser.add_argument("--method", help="method spec, e.g. 'fairgrad:alpha=2' "
                        f"(the published ones: {', '.join(BENCH_METHODS)})")  # fmt: skip
    parser.add_argument("--config", default="cpu", help=f"configuration: {', '.join(CONFIGS)} (default: cpu)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="one seed (default: 0)")
    seeds.add_argument("--seeds", default=None, help="comma-separated seeds, one run each (e.g. 0,1,2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration field (steps=5000, hidden=[256,256], goals=random); repeatable")  # fmt: skip
    parser.add_argument("--db", default=DEFAULT_DB, help=f"results database (default: {DEFAULT_DB})")
    parser.add_argument("--checkpoints", default=DEFAULT_CHECKPOINTS,
                        help=f"checkpoint folder (default: {DEFAULT_CHECKPOINTS})")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--restart", action="store_true", help="discard these runs' checkpoints and rows")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--random-baseline", action="store_true",
                        help="print the success rate of a uniform random policy per task instead of training")  # fmt: skip
    parser.add_argument("--episodes", type=int, default=10,
                        help="episodes per task for --random-baseline (default: 10)")  # fmt: skip
    args = parser.parse_args(argv)
    overrides = _overrides(args.set, parser)
    seed_list = _seeds(args.seeds, parser) if args.seeds is not None else [args.seed or 0]
    if not args.random_baseline and not args.method:
        parser.error("--method is required (or --random-baseline)")
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")

    try:  # option errors: one usage line, exit status 2
        get_config(args.config).with_overrides(overrides)
        if not args.random_baseline:
            _check_method(args.method)
    except KeyError as exc:  # unknown configuration or method
        parser.error(str(exc.args[0]) if exc.args else str(exc))
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    try:
        if args.random_baseline:
            for seed in seed_list:
                rates = random_baseline(args.config, seed=seed, episodes=args.episodes,
                                        overrides=overrides)  # fmt: skip
                print(f"random policy, seed {seed}, {args.episodes} episodes per task:")
                for name, value in rates.items():
                    print(f"  {name}: {value:.3f}")
            return 0
        for seed in seed_list:
            result = train(args.method, args.config, seed=seed, overrides=overrides, store=args.db,
                           checkpoints=args.checkpoints, device=args.device, restart=args.restart,
                           progress=not args.no_progress)  # fmt: skip
            print(f"{result.key}: best mean success {result.best_success:.3f} "
                  f"(evaluation {result.best_epoch}), final {result.final_success:.3f}")  # fmt: skip
    except (MissingExtraError, CheckpointError, StoreError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0
