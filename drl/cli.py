"""Shared CLI plumbing: a ``UserError`` becomes one line on stderr and exit code 2 (``--debug`` re-raises)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from drl.errors import UserError


def run_cli(prog: str, main: Callable[[list[str]], int], argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = main(argv)
    except UserError as exc:
        if "--debug" in argv:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def add_import_option(parser: argparse.ArgumentParser) -> None:
    """``--import MODULE`` (repeatable, into ``args.imports``): user modules that register envs, agents, encoders."""
    parser.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        default=[],
        help="import MODULE first (it registers envs, agents or encoders); repeatable",
    )
