"""Command-line options of ``python -m gilfree bench`` and of the scripts in
``benchmarks/``, which share them so every entry point behaves the same."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterable, Optional

from . import runner, table
from .workloads import Config

EXIT_OK = 0
EXIT_FAILED = 1  # --strict with an error row, or --check-targets with a miss
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser, only: bool = True) -> argparse.ArgumentParser:
    """Add the bench options to ``parser`` (``only=False``: no ``--only``,
    for a script that runs fixed workloads)."""
    parser.add_argument("--quick", action="store_true",
                        help="~10x smaller sizes, 2 runs per row: a smoke test (~20 s)")
    if only:
        parser.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                            choices=runner.families(),
                            help=f"run only these workloads (a family name such as "
                                 f"'processes' selects all of its parts): "
                                 f"{', '.join(runner.families())}")
    parser.add_argument("--workers", type=_positive_int, metavar="N",
                        default=os.cpu_count() or 1,
                        help="threads / workers per pool (default: os.cpu_count() = %(default)s)")
    parser.add_argument("--repeat", type=_positive_int, metavar="K",
                        help="timed runs per row, best is reported (default 3, --quick 2)")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 if any row failed with an error (CI smoke tests)")
    parser.add_argument("--check-targets", action="store_true",
                        help="exit 1 if any gilfree row misses its target")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="S",
                        help="seconds one row may take before all stacks are dumped and the "
                             "run exits (0: no limit; default %(default)g)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--ascii", action="store_true",
                        help="plain ASCII table (automatic when stdout cannot encode ×/µ/✓)")
    return parser


def run_from_args(args: argparse.Namespace, names: Optional[Iterable[str]] = None) -> int:
    """Run the benchmark the parsed options describe; return the exit code.

    ``names`` overrides ``args.only`` (for scripts running fixed workloads).
    """
    repeat = args.repeat or (2 if args.quick else 3)
    cfg = Config(workers=args.workers, quick=args.quick, repeat=repeat)
    selected = names if names is not None else getattr(args, "only", None)
    result = runner.run(selected, cfg, progress=None if args.quiet else sys.stderr,
                        timeout=args.timeout or None)
    ascii_only = args.ascii or not table.can_encode(sys.stdout)
    if not args.quiet:
        print(file=sys.stderr, flush=True)
    sys.stdout.write(table.render(result, ascii_only=ascii_only))
    sys.stdout.flush()
    if args.json:
        try:
            table.write_json(result, args.json)
        except OSError as exc:
            print(f"cannot write {args.json}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        if not args.quiet:
            print(f"wrote {args.json}", file=sys.stderr)
    if result.interrupted:
        return EXIT_INTERRUPTED
    if args.strict and result.errors:
        print(f"--strict: {len(result.errors)} row(s) failed", file=sys.stderr)
        return EXIT_FAILED
    if args.check_targets and result.missed_targets:
        print(f"--check-targets: {len(result.missed_targets)} target(s) missed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main(argv=None, names: Optional[Iterable[str]] = None, description: Optional[str] = None,
         prog: Optional[str] = None) -> int:
    """Entry point for the scripts in ``benchmarks/``: parse and run."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser, only=names is None)
    return run_from_args(parser.parse_args(argv), names)
