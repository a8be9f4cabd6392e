"""``python -m gilfree``: gilfree's command line.

    python -m gilfree bench [--quick] [--only NAME ...] [--workers N] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from gilfree.bench import cli

    parser = argparse.ArgumentParser(
        prog="python -m gilfree",
        description="gilfree: use every core from Python.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    bench = sub.add_parser(
        "bench", help="reproduce the seeds' experiments; compare with the stdlib and peers",
        description="Run every benchmark workload and print one table: gilfree against "
                    "serial execution, the stdlib equivalent and the peer libraries installed. "
                    "Progress goes to stderr, the table to stdout.")
    cli.add_arguments(bench)
    bench.set_defaults(handler=cli.run_from_args)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
