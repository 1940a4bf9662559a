"""The runner: trains any benchmark with any method, resumably, recording into the store.

One run = (benchmark, method, configuration and its overrides, seed). Every epoch the
runner trains, evaluates on the validation and test splits, writes the epoch's rows to
the results store (idempotently, keyed by run and epoch), then writes a checkpoint
atomically. Running the same command again after a crash (even SIGKILL in the middle
of an epoch) loads the last checkpoint and re-does the interrupted epoch: the data
order of epoch ``e`` depends only on (seed, e), and the checkpoint holds the model,
the optimizer, the LR schedule, the method's state (random generators included) and
torch's global random state, so the resumed run is identical to an uninterrupted one
and the store ends with exactly one row per epoch and metric.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fairmtl.bench.base import Benchmark, TrainConfig, get_benchmark
from fairmtl.bench.checkpoint import checkpoint_path, load_checkpoint, save_atomic
from fairmtl.bench.methods import MethodSpec, build_balancer, parse_method
from fairmtl.bench.store import ResultsStore
from fairmtl.norm_stats import frozen_norm_stats

DEFAULT_DB = "results/fairmtl.db"
DEFAULT_CHECKPOINTS = "results/checkpoints"
_FORMAT = 1


@dataclass(frozen=True)
class RunResult:
    """What :func:`train` returns: the stored run and its selected metrics."""

    run_id: int
    key: str
    skipped: bool
    best_epoch: int
    final: dict[str, dict[str, float]]
    train_seconds: float


def config_label(config_name: str, overrides: Mapping[str, Any]) -> str:
    """``"cpu"``, or ``"cpu[epochs=3]"`` with overrides: runs are grouped by this label."""
    if not overrides:
        return config_name
    return config_name + "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(overrides.items())) + "]"


def run_key(benchmark: str, method: str, config_name: str, overrides: Mapping[str, Any], seed: int) -> str:
    """The identity of a run: the same command always maps to the same key."""
    return f"{benchmark}/{method}/{config_label(config_name, overrides)}/seed{seed}"


def _optimizer(config: TrainConfig, params: list[Tensor]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)  # fmt: skip
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Any | None:
    s = config.schedule
    if s is None:
        return None
    if s["type"] == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=int(s.get("step_size", 100)), gamma=float(s.get("gamma", 0.5))
        )
    if s["type"] == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=float(s.get("factor", 0.7)),
            patience=int(s.get("patience", 5)), min_lr=float(s.get("min_lr", 0.0)),
        )  # fmt: skip
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)


def _progress(total: int, desc: str, enabled: bool) -> Any | None:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the progress bar is a convenience: train without it
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)


def evaluate(
    bench: Benchmark, model: torch.nn.Module, split: Any, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """Every task's metrics on one split, as ``{"task/metric": value}``."""
    metrics = bench.new_metrics()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in bench.batches(split, config.eval_batch_size, None, device):
            bench.update_metrics(metrics, model(bench.inputs(batch)), batch)
    model.train(was_training)
    out: dict[str, float] = {}
    for task, metric in zip(bench.tasks, metrics):
        for name, value in metric.compute().items():
            out[f"{task.name}/{name}"] = float(value)
    return out


def train(
    benchmark: Benchmark | str,
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
    on_step: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Train ``method`` on ``benchmark`` with a named configuration; resume if interrupted.

    Args:
        benchmark: a :class:`Benchmark` or its name.
        method: a method specification (``"fairgrad:alpha=2"``, ``"igbv1+nash-mtl"``,
            ``"stl:0"``); see :mod:`fairmtl.bench.methods`.
        config: the configuration's name (``"cpu"``, ``"paper"``, ...).
        seed: the run's seed (model initialisation, data order, random methods).
        overrides: configuration fields to replace (``{"epochs": 3, "data.train_pairs": 500}``).
        store: the results store or its path (SQLite; created if needed).
        checkpoints: folder of the per-run checkpoints.
        device: where to train.
        restart: discard this run's checkpoint and stored rows and train from scratch.
        progress: show a progress bar (needs tqdm; silently off without it).
        log: where the one-line epoch summaries go (``None``: nowhere).
        on_step: called as ``on_step(epoch, step)`` after every optimizer step.
    """
    bench = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    overrides = dict(overrides or {})
    cfg = bench.config(config).with_overrides(overrides)
    spec = parse_method(method, bench.num_tasks)
    key = run_key(bench.name, spec.text, config, overrides, seed)
    device, rank = _distributed_setup(torch.device(device))
    say = (log or (lambda _msg: None)) if rank == 0 else (lambda _msg: None)
    ckpt_file = checkpoint_path(checkpoints, key)

    # Rank 0 alone writes the store and the checkpoints; every rank reads the checkpoint
    # (under torchrun, the checkpoint folder must be visible to every node).
    db: ResultsStore | None = None
    run_id = -1
    if rank == 0:
        db = store if isinstance(store, ResultsStore) else ResultsStore(store)
        if restart:
            ckpt_file.unlink(missing_ok=True)
        run_id = db.start_run(key=key, benchmark=bench.name, method=spec.text,
                              config_name=config_label(config, overrides),
                              config=cfg.to_dict(), seed=seed)  # fmt: skip
        if restart:
            db.reset_run(run_id)
    _barrier()
    checkpoint = load_checkpoint(ckpt_file, key)
    if checkpoint is not None and checkpoint.get("done"):
        say(f"{key}: already done (best epoch {checkpoint['best']['epoch']}); --restart to train again")
        final = {"val": checkpoint["best"]["val"], "test": checkpoint["best"]["test"]}
        if db is not None:
            db.finish_run(run_id, final=final, best_epoch=checkpoint["best"]["epoch"],
                          train_seconds=checkpoint["train_seconds"])  # fmt: skip
        return RunResult(run_id, key, True, checkpoint["best"]["epoch"], final,
                         checkpoint["train_seconds"])  # fmt: skip
    try:
        return _train(bench, spec, cfg, key, seed, db, run_id, ckpt_file, checkpoint, device,
                      progress and rank == 0, say, on_step)  # fmt: skip
    except BaseException as exc:
        if db is not None and not isinstance(exc, KeyboardInterrupt):
            db.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        raise


def _distributed_setup(device: torch.device) -> tuple[torch.device, int]:
    """Join the torchrun job if there is one: ``(this rank's device, rank)``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised here (NCCL
    on CUDA, gloo on CPU) unless the caller did it; ``device="cuda"`` becomes
    ``cuda:LOCAL_RANK``. Each rank trains on its share of every batch and the
    :class:`~fairmtl.Balancer` reduces the losses and per-task gradients across ranks.
    """
    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if not (dist.is_available() and dist.is_initialized()):
        return device, 0
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device, dist.get_rank()


def _world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if _world()[1] > 1:
        torch.distributed.barrier()


def _broadcast_float(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (e.g. the validation score for the LR schedule)."""
    if _world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.broadcast(t, src=0)
    return float(t)


def _all_reduce_grads(params: list[Tensor]) -> None:
    """Average ``.grad`` across ranks (single-task baselines: a plain backward pass)."""
    if _world()[1] == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat.div_(_world()[1])
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def _train(
    bench: Benchmark,
    spec: MethodSpec,
    cfg: TrainConfig,
    key: str,
    seed: int,
    db: ResultsStore | None,
    run_id: int,
    ckpt_file: Path,
    checkpoint: dict[str, Any] | None,
    device: torch.device,
    progress: bool,
    say: Callable[[str], None],
    on_step: Callable[[int, int], None] | None,
) -> RunResult:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    data = bench.build_data(cfg)
    torch.manual_seed(seed)
    model = bench.build_model(cfg).to(device)
    stl = spec.stl_task
    if stl is None:
        params = model.shared_parameters() + model.task_parameters()
    else:
        params = model.shared_parameters() + model.task_parameters(stl)
    optimizer = _optimizer(cfg, params)
    scheduler = _scheduler(cfg, optimizer)
    balancer = None
    if stl is None:
        balancer = build_balancer(spec, seed=seed, optimizer=optimizer,
                                  layer=list(model.last_shared_layer().parameters()),
                                  num_tasks=bench.num_tasks)  # fmt: skip

    # Features mode (gradients w.r.t. the shared representation): for the methods defined
    # that way (MGDA-UB), or for any method when the configuration asks for it.
    features = balancer is not None and (cfg.features or balancer.aggregator.features_only)

    start_epoch = 0
    train_seconds = 0.0
    best: dict[str, Any] = {"epoch": -1, "score": -math.inf, "val": {}, "test": {}}
    if checkpoint is not None:
        if checkpoint.get("format") != _FORMAT:
            raise RuntimeError(f"checkpoint {ckpt_file} has format {checkpoint.get('format')!r}, expected {_FORMAT}")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        if balancer is not None:
            balancer.load_state_dict(checkpoint["balancer"])
        torch.set_rng_state(checkpoint["rng"])
        if device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(checkpoint["cuda_rng"], device)
        start_epoch = checkpoint["epoch"]
        train_seconds = checkpoint["train_seconds"]
        best = checkpoint["best"]
        say(f"{key}: resuming after epoch {start_epoch} from {ckpt_file}")

    k = bench.num_tasks
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
        weight_sum: Tensor | None = None
        steps = 0
        bar = _progress(bench.num_batches(data["train"], cfg.batch_size),
                        f"{spec.text} epoch {epoch + 1}/{cfg.epochs}", progress)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tic = time.perf_counter()
        rank, world = _world()
        for batch in bench.batches(data["train"], cfg.batch_size, gen, device):
            if world > 1:
                batch = bench.shard(batch, rank, world)
            optimizer.zero_grad(set_to_none=True)
            if features and balancer is not None:
                z = model.represent(bench.inputs(batch))
                losses = bench.losses(model.decode(z), batch)
                balancer.backward(losses, features=z, task_params=model.task_parameters())
            else:
                losses = bench.losses(model(bench.inputs(batch)), batch)
                if balancer is None:
                    losses[stl].backward()
                    _all_reduce_grads(params)
                else:
                    balancer.backward(losses, shared=model.shared_parameters(),
                                      task_params=model.task_parameters())  # fmt: skip
            if cfg.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
            optimizer.step()
            if balancer is not None:
                if balancer.needs_observe:
                    with torch.no_grad(), frozen_norm_stats(model):
                        balancer.observe(bench.losses(model(bench.inputs(batch)), batch))
                weights = _effective_weights(balancer)
                weight_sum = weights if weight_sum is None else weight_sum + weights
            loss_sum += losses.detach().double()
            steps += 1
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(epoch, steps)
        if balancer is not None:
            balancer.end_epoch()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - tic
        if bar is not None:
            bar.close()
        train_seconds += seconds

        val: dict[str, float] = {}
        test: dict[str, float] = {}
        score = 0.0
        if rank == 0:  # every rank holds the same model: one evaluates
            val = evaluate(bench, model, data["val"], cfg, device)
            # Benchmarks that report on their validation set (NYUv2, Cityscapes) pass the
            # same split twice: evaluate it once.
            test = val if data["test"] is data["val"] else evaluate(bench, model, data["test"], cfg, device)
            score = bench.val_score(val) if stl is None else _task_score(bench, val, stl)
        score = _broadcast_float(score, device)
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(score)
            else:
                scheduler.step()
        if cfg.select == "last" or score > best["score"] or best["epoch"] < 0:
            best = {"epoch": epoch + 1, "score": score, "val": val, "test": test}
        mean_losses = (loss_sum / max(steps, 1)).tolist()
        train = {f"{t.name}/loss": v for t, v in zip(bench.tasks, mean_losses)}
        task_weights = None if weight_sum is None else (weight_sum / max(steps, 1)).tolist()
        if db is not None:
            db.log_epoch(run_id, epoch=epoch + 1,
                         metrics={"train": train, "val": val, "test": test},
                         seconds=seconds, task_weights=task_weights,
                         lr=float(optimizer.param_groups[0]["lr"]))  # fmt: skip
        state = {
            "format": _FORMAT,
            "key": key,
            "epoch": epoch + 1,
            "done": False,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "balancer": None if balancer is None else balancer.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "train_seconds": train_seconds,
            "best": best,
        }
        if rank == 0:
            save_atomic(state, ckpt_file)
        _barrier()
        shown = ", ".join(f"{name} {value:.4g}" for name, value in val.items())
        say(f"{spec.text} epoch {epoch + 1}/{cfg.epochs}: {seconds:.1f}s, val {shown}")

    final = {"val": best["val"], "test": best["test"]}
    if db is not None:
        db.finish_run(run_id, final=final, best_epoch=best["epoch"], train_seconds=train_seconds)
        last = load_checkpoint(ckpt_file, key)
        if last is not None:
            last["done"] = True
            save_atomic(last, ckpt_file)
    _barrier()
    return RunResult(run_id, key, False, best["epoch"], final, train_seconds)


def _task_score(bench: Benchmark, val: Mapping[str, float], task: int) -> float:
    """Model-selection score of a single-task baseline: its own task's metrics only.

    The mean of ``+value`` (higher is better) or ``-value`` over task ``task``'s metrics;
    the other heads are untrained in such a run and must not decide its best epoch.
    """
    spec = bench.tasks[task]
    values = [val[f"{spec.name}/{m.name}"] * (1.0 if m.higher_is_better else -1.0) for m in spec.metrics]
    score = sum(values) / len(values)
    return score if math.isfinite(score) else -math.inf


def _effective_weights(balancer: Any) -> Tensor:
    """The step's task weights: loss weights times the aggregator's weights when it has them."""
    lam = balancer.last_loss_weights.detach().double()
    w = getattr(balancer.aggregator, "last_weights", None)
    if w is not None and w.shape == lam.shape:
        return lam * w.detach().to(lam)
    return lam
