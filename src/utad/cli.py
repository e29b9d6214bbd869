"""The ``utad`` command line: each subcommand parses its arguments, builds a config and calls one library function.

User errors (``UtadError``) print one line, ``utad: error: <file>: <problem>``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from utad import __version__
from utad.errors import UtadError


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from utad.data.inspect import format_report, inspect_mvtec

    report = inspect_mvtec(args.path, args.category)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if report["problems"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="utad",
        description="Unsupervised Two-stage Anomaly Detection: train on good images, find and outline defects.",
    )
    parser.add_argument("--version", action="version", version=f"utad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = sub.add_parser("data", help="inspect and check datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    insp = data_sub.add_parser(
        "inspect", help="count images and masks of an MVTec-layout folder and list every problem found"
    )
    insp.add_argument("path", help="MVTec AD category folder (train/good, test/<type>, ground_truth/<type>)")
    insp.add_argument("--category", help="category name when PATH is the dataset root")
    insp.add_argument("--json", action="store_true", help="print the report as JSON")
    insp.set_defaults(func=_cmd_data_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except UtadError as exc:
        print(f"utad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("utad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
