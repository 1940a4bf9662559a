"""The ``fairmtl`` command line.

``fairmtl train`` trains one method on one benchmark, ``fairmtl suite`` the baselines and
several methods followed by the report, ``fairmtl report`` writes the tables and plots
from the results database, ``fairmtl list`` shows what exists, and ``fairmtl toy`` runs
the two-task toy of FairGrad's Figure 1. ``fairmtl COMMAND --help`` lists the options.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

_COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("fairmtl.bench.commands", "train_main", "train one method on one benchmark (resumable)"),
    "suite": ("fairmtl.bench.commands", "suite_main", "train baselines + methods, then report"),
    "report": ("fairmtl.bench.commands", "report_main", "tables and plots from the results database"),
    "list": ("fairmtl.bench.commands", "list_main", "benchmarks, configurations and methods"),
    "mt10": ("fairmtl.bench.mt10", "main", "multi-task SAC on Meta-World MT10 (FairGrad Table 4)"),
    "toy": ("fairmtl.bench.toy", "main", "two-task toy benchmark (FairGrad Fig. 1, Nash-MTL, CAGrad)"),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairmtl",
        description="fairmtl benchmarks. Run 'fairmtl COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, _, summary) in _COMMANDS.items():
        # The subcommand parses its own options (including --help), so pass them through.
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def _command_main(name: str) -> Callable[[list[str] | None], int]:
    """Import the subcommand's module lazily, so ``fairmtl --help`` stays fast."""
    import importlib

    module, function, _ = _COMMANDS[name]
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fairmtl`` script; returns the process exit code."""
    args, rest = _build_parser().parse_known_args(argv)
    return _command_main(args.command)(rest)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
