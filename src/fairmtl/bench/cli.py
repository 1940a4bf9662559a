"""The ``fairmtl`` command line: one subcommand per benchmark.

``fairmtl toy [...]`` runs the two-task toy of FairGrad's Figure 1
(:mod:`fairmtl.bench.toy`); ``fairmtl toy --help`` lists its options.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

_COMMANDS: dict[str, tuple[str, str]] = {
    "toy": ("fairmtl.bench.toy", "two-task toy benchmark (FairGrad Fig. 1, Nash-MTL, CAGrad)"),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairmtl",
        description="fairmtl benchmarks. Run 'fairmtl COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, summary) in _COMMANDS.items():
        # The subcommand parses its own options (including --help), so pass them through.
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def _command_main(name: str) -> Callable[[list[str] | None], int]:
    """Import the subcommand's module lazily, so ``fairmtl --help`` stays fast."""
    import importlib

    return importlib.import_module(_COMMANDS[name][0]).main


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fairmtl`` script; returns the process exit code."""
    args, rest = _build_parser().parse_known_args(argv)
    return _command_main(args.command)(rest)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
