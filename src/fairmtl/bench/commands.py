"""The ``fairmtl train``, ``suite``, ``report`` and ``list`` commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fairmtl.bench.base import DatasetError, MissingExtraError, benchmark_names, parse_value

DEFAULT_DB = "results/fairmtl.db"
DEFAULT_CHECKPOINTS = "results/checkpoints"
DEFAULT_OUT = "results"


def _overrides(items: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", help=f"one of: {', '.join(benchmark_names())}")
    parser.add_argument("--config", default="cpu", help="named configuration (default: cpu)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration field (epochs=3, lr=1e-4, data.NAME=...); repeatable")  # fmt: skip
    parser.add_argument("--db", default=DEFAULT_DB, help=f"results database (default: {DEFAULT_DB})")
    parser.add_argument("--checkpoints", default=DEFAULT_CHECKPOINTS,
                        help=f"checkpoint folder (default: {DEFAULT_CHECKPOINTS})")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--restart", action="store_true",
                        help="discard existing checkpoints and rows of these runs, train from scratch")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _guard(parser: argparse.ArgumentParser, fn: Callable[[], int]) -> int:
    """Run a command; known user errors become one clear line and exit status 1 or 2."""
    from fairmtl.bench.checkpoint import CheckpointError
    from fairmtl.bench.store import StoreError

    try:
        return fn()
    except KeyError as exc:  # unknown benchmark, configuration or method
        parser.error(str(exc.args[0]) if exc.args else str(exc))
    except (DatasetError, MissingExtraError, CheckpointError, StoreError, LookupError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as exc:  # bad option values
        parser.error(str(exc))
    return 2  # pragma: no cover - parser.error exits


def _train_one(args: argparse.Namespace, method: str, seed: int, overrides: dict[str, Any]) -> None:
    from fairmtl.bench.runner import train

    train(args.benchmark, method, args.config, seed=seed, overrides=overrides, store=args.db,
          checkpoints=args.checkpoints, device=args.device, restart=args.restart,
          progress=not args.no_progress)  # fmt: skip


def train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fairmtl train",
        description="Train one method on one benchmark (resumes automatically after a crash).",
    )
    _common(parser)
    parser.add_argument("--method", required=True,
                        help="method spec: 'ls', 'fairgrad:alpha=2', 'igbv1+nash-mtl', 'stl:0' (single-task baseline of task 0)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    args = parser.parse_args(argv)
    overrides = _overrides(args.set, parser)
    def run() -> int:
        _train_one(args, args.method, args.seed, overrides)
        return 0

    return _guard(parser, run)


def _seeds(text: str, parser: argparse.ArgumentParser) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds expects comma-separated ints, got {text!r}")
    return []  # pragma: no cover


def suite_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fairmtl suite",
        description="Train the single-task baselines and several methods, then print and write the report.",
    )
    _common(parser)
    parser.add_argument("--methods", default=None,
                        help="comma-separated method specs (default: the benchmark's list, see 'fairmtl list')")  # fmt: skip
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--no-stl", action="store_true", help="skip the single-task baselines")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default: {DEFAULT_OUT}/<benchmark>)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    overrides = _overrides(args.set, parser)
    seeds = _seeds(args.seeds, parser)

    def run() -> int:
        from fairmtl.bench.base import get_benchmark
        from fairmtl.bench.methods import parse_method

        bench = get_benchmark(args.benchmark)
        bench.config(args.config)
        methods = args.methods.split(",") if args.methods else list(bench.default_methods)
        methods = [m.strip() for m in methods if m.strip()]
        for m in methods:  # fail before training anything
            parse_method(m, bench.num_tasks)
        if not args.no_stl:
            methods = [f"stl:{k}" for k in range(bench.num_tasks)] + methods
        for seed in seeds:
            for method in methods:
                _train_one(args, method, seed, overrides)
        return _report(args, bench, overrides)

    return _guard(parser, run)


def _report(args: argparse.Namespace, bench: Any, overrides: dict[str, Any]) -> int:
    from fairmtl.bench.report import to_markdown, write_report
    from fairmtl.bench.runner import config_label
    from fairmtl.bench.store import ResultsStore

    out = Path(args.out) / bench.name
    with ResultsStore(args.db) as store:
        report, paths = write_report(store, bench, config_label(args.config, overrides), out,
                                     plots=not args.no_plots)  # fmt: skip
    print(to_markdown(report))
    for path in paths:
        print(f"wrote {path}")
    return 0


_SUCCESS_BENCHMARKS = ("mt10",)
"""Benchmarks trained by their own loop (``fairmtl mt10``) and reported by success rate."""


def _success_report(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from fairmtl.bench.report import success_report
    from fairmtl.bench.runner import config_label
    from fairmtl.bench.store import ResultsStore

    if not Path(args.db).exists():
        raise LookupError(f"results database {args.db} does not exist (train something first)")
    with ResultsStore(args.db) as store:
        text, paths = success_report(store, args.benchmark, config_label(args.config, overrides),
                                     Path(args.out) / args.benchmark, plots=not args.no_plots)  # fmt: skip
    print(text)
    for path in paths:
        print(f"wrote {path}")
    return 0


def report_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fairmtl report",
        description="Write the comparison table (Markdown, CSV) and plots of a benchmark from the results database.",
    )
    parser.add_argument("benchmark", help=f"one of: {', '.join([*benchmark_names(), *_SUCCESS_BENCHMARKS])}")
    parser.add_argument("--config", default="cpu", help="configuration (default: cpu)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="the overrides the runs were trained with")  # fmt: skip
    parser.add_argument("--db", default=DEFAULT_DB, help=f"results database (default: {DEFAULT_DB})")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default: {DEFAULT_OUT}/<benchmark>)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    overrides = _overrides(args.set, parser)

    def run() -> int:
        from fairmtl.bench.base import get_benchmark

        if args.benchmark in _SUCCESS_BENCHMARKS:  # reinforcement learning: its own loop
            return _success_report(args, overrides)
        bench = get_benchmark(args.benchmark)
        if not Path(args.db).exists():
            raise LookupError(f"results database {args.db} does not exist (train something first)")
        return _report(args, bench, overrides)

    return _guard(parser, run)


def list_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fairmtl list", description="List the benchmarks, their configurations and the methods."
    )
    parser.parse_args(argv)
    import fairmtl
    from fairmtl.bench.base import get_benchmark

    print("benchmarks:")
    for name in benchmark_names():
        bench = get_benchmark(name)
        names = [t.name for t in bench.tasks]
        shown = ", ".join(names) if len(names) <= 12 else f"{', '.join(names[:3])}, ..., {names[-1]}"
        print(f"  {name}: {len(names)} tasks ({shown}); configurations {', '.join(bench.configs)}")
        print(f"    default methods: {', '.join(bench.default_methods)}")
    print("methods (compose with '+', options with ':key=value,...'; 'stl:K' = single-task baseline):")
    print("  " + ", ".join(fairmtl.available()))
    return 0
