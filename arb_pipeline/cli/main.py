"""The ``arb`` command line: what isn't a Dagster asset.

Each subcommand lives beside the code it drives and registers itself through a
``register(subparsers)`` function; this module only dispatches and turns ArbError
into a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from arb_pipeline.errors import ArbError

COMMAND_MODULES = (
    "arb_pipeline.cli.migrate",
    "arb_pipeline.cli.generate",
    "arb_pipeline.cli.parity",
    "arb_pipeline.cli.check",
    "arb_pipeline.cli.backups",
    "arb_pipeline.cli.restore",
    "arb_pipeline.cli.demo",
    "arb_pipeline.cli.adopt",
    "arb_pipeline.cli.catalog",
    "arb_pipeline.cli.zones",
    "arb_pipeline.cli.approve",
    "arb_pipeline.cli.capture",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arb", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ArbError as exc:
        print(f"arb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
