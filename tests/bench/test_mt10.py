"""MT10 multi-task SAC: the agent, the real Meta-World environments, resume, the command."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from fairmtl.bench import mt10
from fairmtl.bench.base import MissingExtraError
from fairmtl.bench.methods import build_balancer, parse_method
from fairmtl.bench.mtsac import MTSAC, Actor, Critic, ReplayBuffers, TaskMLP
from fairmtl.bench.store import ResultsStore

K = mt10.NUM_TASKS
# A few hundred environment steps: 2 evaluations of 60 steps, 30 random steps first.
TINY: dict[str, Any] = {
    "steps": 120, "eval_every": 60, "eval_episodes": 1, "batch_size": 20, "hidden": [16, 16],
    "init_steps": 30, "episode_length": 40, "buffer_per_task": 200, "threads": 1,
}  # fmt: skip


def _needs_metaworld() -> None:
    pytest.importorskip("metaworld")


def _train(method: str, tmp: Path, **kw: Any) -> mt10.MT10Result:
    return mt10.train(method, "cpu", seed=kw.pop("seed", 0), overrides=kw.pop("overrides", TINY),
                      store=kw.pop("store", tmp / "r.db"), checkpoints=kw.pop("ck", tmp / "ck"),
                      progress=False, log=None, **kw)  # fmt: skip


# ---------------------------------------------------------------------------- no metaworld


def test_configurations_and_overrides() -> None:
    paper, cpu = mt10.CONFIGS["paper"], mt10.CONFIGS["cpu"]
    assert (paper.steps, paper.batch_size, paper.eval_every, paper.hidden) == (
        2_000_000, 1280, 10_000, (400, 400, 400))
    assert paper.lr == 3e-4 and paper.tau == 0.005 and paper.discount == 0.99
    assert cpu.steps < paper.steps and cpu.batch_size % K == 0
    cfg = cpu.with_overrides({"hidden": [8, 8], "goals": "random"})
    assert cfg.hidden == (8, 8) and cfg.goals == "random"
    assert cfg.to_dict()["hidden"] == [8, 8]
    with pytest.raises(ValueError, match="unknown mt10 config option 'nope'"):
        cpu.with_overrides({"nope": 1})
    with pytest.raises(ValueError, match="multiple of 10"):
        cpu.with_overrides({"batch_size": 25})
    with pytest.raises(ValueError, match="goals"):
        cpu.with_overrides({"goals": "some"})
    with pytest.raises(KeyError, match="configurations: paper, cpu"):
        mt10.get_config("gpu")


def test_networks_shapes_and_parameter_split() -> None:
    torch.manual_seed(0)
    obs, task = torch.randn(6, 39), torch.tensor([0, 3, 3, 9, 1, 0])
    for multihead in (False, True):
        actor = Actor(39, 4, K, (16, 16), multihead)
        action, log_pi = actor.sample(obs, task)
        assert action.shape == (6, 4) and log_pi.shape == (6, 1)
        assert bool((action.abs() < 1).all()) and bool(torch.isfinite(log_pi).all())
        assert actor.act(obs, task).shape == (6, 4)
        critic = Critic(39, 4, K, (16, 16), multihead)
        q1, q2 = critic(obs, action, task)
        assert q1.shape == q2.shape == (6, 1)
        for net in (actor.net, critic):
            shared = {id(p) for p in net.shared_parameters()}
            heads = {id(p) for p in net.task_parameters()}
            assert not shared & heads
            assert shared | heads == {id(p) for p in net.parameters()}
            assert bool(heads) == multihead
    net = TaskMLP(5, (8,), 2, K, multihead=True)
    x, t = torch.randn(4, 5), torch.tensor([2, 7, 7, 0])
    expected = torch.stack([net.heads[int(k)](net.trunk(x[i])) for i, k in enumerate(t)])
    assert torch.allclose(net(x, t), expected)


def test_log_prob_matches_the_change_of_variables() -> None:
    torch.manual_seed(1)
    actor = Actor(39, 4, K, (16,), False)
    obs, task = torch.randn(3, 39), torch.tensor([0, 1, 2])
    noise = torch.randn(3, 4)
    action, log_pi = actor.sample(obs, task, noise)
    mu, log_std = actor.distribution(obs, task)
    mu, log_std, noise = mu.double(), log_std.double(), noise.double()  # the naive formula
    u = mu + noise * log_std.exp()  # loses float32 precision near saturation
    normal = torch.distributions.Normal(mu, log_std.exp())
    expected = (normal.log_prob(u) - torch.log(1 - torch.tanh(u) ** 2)).sum(-1, keepdim=True)
    assert torch.allclose(log_pi.double(), expected, rtol=1e-5, atol=1e-4)
    assert torch.allclose(action.double(), torch.tanh(u), atol=1e-6)


def test_replay_buffers_are_task_balanced_and_resume_exactly() -> None:
    buf = ReplayBuffers(K, capacity=5, obs_dim=39, action_dim=4)
    for i in range(7):  # wraps around: the oldest two transitions are overwritten
        obs = torch.arange(K).float().view(K, 1).expand(K, 39) + 100 * i
        buf.add(obs, torch.zeros(K, 4), torch.full((K,), float(i)), obs, torch.ones(K))
    assert buf.size.tolist() == [5] * K and buf.index.tolist() == [2] * K
    batch = buf.sample(4, torch.Generator().manual_seed(0))
    assert batch.obs.shape == (4 * K, 39)
    assert batch.task.tolist() == [k for k in range(K) for _ in range(4)]
    assert bool(((batch.obs[:, 0] % 100) == batch.task).all())  # each row is its own task's
    assert batch.reward.min() >= 2  # overwritten transitions are gone
    copy = ReplayBuffers(K, capacity=5, obs_dim=39, action_dim=4)
    copy.load_state_dict(buf.state_dict())
    a = buf.sample(3, torch.Generator().manual_seed(5))
    b = copy.sample(3, torch.Generator().manual_seed(5))
    assert torch.equal(a.obs, b.obs) and torch.equal(a.reward, b.reward)


def _agent_with(method: str) -> MTSAC:
    agent = MTSAC(39, 4, K, hidden=(16, 16), multihead=True, lr=1e-3, discount=0.99, tau=0.005,
                  init_temperature=1e-3, per_task_alpha=True)  # fmt: skip
    spec = parse_method(method, K)
    critic = build_balancer(spec, seed=1, optimizer=agent.critic_opt, num_tasks=K,
                            layer=list(agent.critic.q1.last_shared_layer().parameters()))  # fmt: skip
    actor = build_balancer(spec, seed=0, optimizer=agent.actor_opt, num_tasks=K,
                           layer=list(agent.actor.net.last_shared_layer().parameters()))  # fmt: skip
    agent.set_balancers(actor if mt10._actor_gets_method(actor, "auto") else None, critic)
    return agent


def test_every_default_method_updates_on_negative_actor_losses() -> None:
    """Q near 100 makes the actor losses alpha log pi - Q negative (with a small temperature:
    a fresh policy is narrow, log pi is about +30)."""
    buf = ReplayBuffers(K, capacity=50, obs_dim=39, action_dim=4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        buf.add(torch.randn(K, 39, generator=gen), torch.rand(K, 4, generator=gen) * 2 - 1,
                torch.full((K,), 50.0), torch.randn(K, 39, generator=gen), torch.ones(K))  # fmt: skip
    for method in mt10.BENCH_METHODS:
        torch.manual_seed(0)
        agent = _agent_with(method)
        with torch.no_grad():  # Q starts near 100
            for net in (agent.critic, agent.critic_target):
                for head in [*net.q1.heads, *net.q2.heads]:
                    head.bias.fill_(100.0)
        before = [p.detach().clone() for p in agent.actor.parameters()]
        target = [p.detach().clone() for p in agent.critic_target.parameters()]
        for _ in range(5):
            out = agent.update(buf.sample(2, gen))
        assert out["critic_loss"].shape == out["actor_loss"].shape == out["alpha"].shape == (K,)
        assert bool(torch.isfinite(out["critic_loss"]).all()), method
        assert float(out["actor_loss"].max()) < 0, method  # the negative regime is exercised
        assert any(not torch.equal(a, p) for a, p in zip(before, agent.actor.parameters()))
        assert any(not torch.equal(a, p) for a, p in zip(target, agent.critic_target.parameters()))
        state = copy.deepcopy(agent.state_dict())  # (Adam's load_state_dict would alias it)
        clone = _agent_with(method)
        clone.load_state_dict(state)
        torch.manual_seed(3)
        a = agent.update(buf.sample(2, torch.Generator().manual_seed(9)))
        torch.manual_seed(3)
        b = clone.update(buf.sample(2, torch.Generator().manual_seed(9)))
        assert torch.equal(a["actor_loss"], b["actor_loss"]), method


def test_missing_metaworld_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "metaworld", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'fairmtl\[mt10\]'"):
        _train(mt10.BENCH_METHODS[0], tmp_path)
    assert not (tmp_path / "r.db").exists()  # nothing is recorded for a run that cannot start
    code = mt10.main(["--method", mt10.BENCH_METHODS[0], "--db", str(tmp_path / "r.db"),
                      "--checkpoints", str(tmp_path / "ck"), "--no-progress"])  # fmt: skip
    assert code == 1 and "fairmtl[mt10]" in capsys.readouterr().err


def test_unknown_method_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KeyError, match="unknown method 'no-such-method'; available:"):
        _train("no-such-method", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        mt10.main(["--method", "no-such-method", "--db", str(tmp_path / "r.db")])
    assert exit_info.value.code == 2
    assert "unknown method 'no-such-method'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mt10.main(["--method", mt10.BENCH_METHODS[0], "--set", "steps=-1"])
    assert "steps must be a positive int" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        mt10.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fairmtl mt10") and "--seeds" in out and "--random-baseline" in out


# ---------------------------------------------------------------------------- real environments


def _eval_rows(store: ResultsStore, run_id: int) -> dict[str, list[tuple[int, float]]]:
    return store.epoch_metrics(run_id)["eval"]


def test_two_methods_train_on_the_real_environments(tmp_path: Path) -> None:
    _needs_metaworld()
    for method in mt10.BENCH_METHODS[:2]:
        result = _train(method, tmp_path)
        with ResultsStore(tmp_path / "r.db") as store:
            run = store.run(result.run_id)
            assert run.status == "finished" and run.best_epoch == result.best_epoch
            evals = _eval_rows(store, run.id)
            assert set(evals) == {f"{t}/success" for t in mt10.TASKS} | {"mean/success"}
            assert all([e for e, _ in curve] == [1, 2] for curve in evals.values())
            assert all(0.0 <= v <= 1.0 for curve in evals.values() for _, v in curve)
            train = store.epoch_metrics(run.id)["train"]
            assert [v for _, v in train["env_steps"]] == [60.0 * K, 120.0 * K]
            # learning starts at step 30 with 30 updates at once (MTRL's catch-up), then one
            # update per step: steps - 1 updates in all
            assert [v for _, v in train["updates"]] == [59.0, 119.0]
            for t in mt10.TASKS:
                for name in ("critic_loss", "actor_loss", "alpha"):
                    assert all(math.isfinite(v) for _, v in train[f"{t}/{name}"])
            final = store.final_metrics(run.id)
            assert final["best"]["mean/success"] == max(v for _, v in evals["mean/success"])
            assert final["final"]["mean/success"] == evals["mean/success"][-1][1]


def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    _needs_metaworld()
    method = mt10.BENCH_METHODS[1]
    straight = _train(method, tmp_path, store=tmp_path / "a.db", ck=tmp_path / "a")

    def stop(step: int) -> None:
        if step == 75:  # after the first evaluation and its checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(method, tmp_path, store=tmp_path / "b.db", ck=tmp_path / "b", on_step=stop)
    with ResultsStore(tmp_path / "b.db") as store:
        assert store.run(1).status == "running"
        assert [e for e, _ in _eval_rows(store, 1)["mean/success"]] == [1]
    resumed = _train(method, tmp_path, store=tmp_path / "b.db", ck=tmp_path / "b")
    assert resumed.key == straight.key and not resumed.skipped
    with ResultsStore(tmp_path / "a.db") as a, ResultsStore(tmp_path / "b.db") as b:
        assert b.run(resumed.run_id).status == "finished"
        ea, eb = a.epoch_metrics(straight.run_id), b.epoch_metrics(resumed.run_id)
        assert [e for e, _ in eb["eval"]["mean/success"]] == [1, 2]  # each evaluation once
        assert ea["eval"] == eb["eval"]
        assert ea["train"] == eb["train"]  # losses bit for bit: the resume is exact
    again = _train(method, tmp_path, store=tmp_path / "b.db", ck=tmp_path / "b")
    assert again.skipped and again.best_success == resumed.best_success


def test_command_line_trains_and_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _needs_metaworld()
    short = {**TINY, "steps": 40, "eval_every": 40, "init_steps": 20}
    sets = [x for key, value in short.items()
            for x in ("--set", f"{key}={value}".replace(" ", ""))]  # fmt: skip
    code = mt10.main(["--method", mt10.BENCH_METHODS[0], "--config", "paper", *sets,
                      "--set", "multihead=true", "--seeds", "0,1", "--db", str(tmp_path / "r.db"),
                      "--checkpoints", str(tmp_path / "ck"), "--no-progress"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "seed0: best mean success" in out and "seed1: best mean success" in out
    with ResultsStore(tmp_path / "r.db") as store:
        runs = store.runs(benchmark="mt10")
        assert sorted(r.seed for r in runs) == [0, 1]
        assert all(r.status == "finished" and r.config["hidden"] == [16, 16] for r in runs)
        assert all(r.config["multihead"] is True and r.config["lr"] == 3e-4 for r in runs)


def test_random_policy_baseline() -> None:
    _needs_metaworld()
    rates = mt10.random_baseline("cpu", seed=0, episodes=2, overrides={"episode_length": 30})
    assert set(rates) == {f"{t}/success" for t in mt10.TASKS} | {"mean/success"}
    assert all(rates[f"{t}/success"] in (0.0, 0.5, 1.0) for t in mt10.TASKS)
    assert rates["mean/success"] == pytest.approx(sum(rates[f"{t}/success"] for t in mt10.TASKS) / K)
