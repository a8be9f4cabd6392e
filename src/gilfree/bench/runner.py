"""Run the planned cases one after another and derive the comparison columns.

The runner never lets one row take the run down: an exception anywhere in a
case (a missing gilfree feature, a broken pool) becomes that row's
``error: <exception>`` and the run goes on. A *hang* cannot be recovered in
process, so each case runs under ``faulthandler.dump_traceback_later``:
past ``timeout`` seconds every thread's stack is printed and the process
exits, which is what a CI smoke test needs to see.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, TextIO

from . import probe
from .case import (ERROR, GILFREE, MISSING, OK, SERIAL, UNSUPPORTED, Case, Result, skip_text,
                   format_seconds, needs_python)
from .machine import machine_info
from .table import ASCII, can_encode
from .timing import measure
from .workloads import WORKLOADS, Config, Workload


class Progress:
    """One stderr line per measurement: ``[3/17] group: subject ... 1.23 s``.

    Lines logged while a case runs (calibration) break the pending line; the
    result then goes on its own indented line instead of the same one.
    """

    def __init__(self, stream: Optional[TextIO]):
        self.stream = stream
        self._pending = False
        self._ascii = stream is not None and not can_encode(stream)

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text.translate(ASCII) if self._ascii else text)
            self.stream.flush()

    def start(self, index: int, total: int, text: str) -> None:
        width = len(str(total))
        self._write(f"[{index:>{width}}/{total}] {text} ...")
        self._pending = True

    def log(self, msg: str) -> None:
        if self._pending:
            self._write("\n")
            self._pending = False
        self._write(msg + "\n")

    def done(self, text: str) -> None:
        self._write((" " if self._pending else "       → ") + text + "\n")
        self._pending = False


@dataclass
class Run:
    """Everything one ``bench`` invocation measured, ready for the table."""

    cfg: Config
    machine: dict
    workloads: List[Workload]
    results: List[Result] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def errors(self) -> List[Result]:
        return [r for r in self.results if r.status == ERROR]

    @property
    def missed_targets(self) -> List[Result]:
        return [r for r in self.results if r.target_met is False]


def select(names: Optional[Iterable[str]]) -> List[str]:
    """Workload names in table order; ``names`` None or empty = all.  A
    name may also be a family: ``processes`` stands for every
    ``processes-*`` workload.

    Raises:
        ValueError: a name that is neither (the message lists them).
    """
    if not names:
        return list(WORKLOADS)
    wanted = set()
    for name in names:
        family = [n for n in WORKLOADS if n == name or n.startswith(name + "-")]
        if not family:
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join(families())}")
        wanted.update(family)
    return [n for n in WORKLOADS if n in wanted]


def families() -> List[str]:
    """Every workload name, and every family prefix before a '-'."""
    names = list(WORKLOADS)
    for n in WORKLOADS:
        prefix = n.split("-", 1)[0]
        if prefix != n and prefix not in names:
            names.append(prefix)
    return names


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_case(case: Case, cfg: Config, timeout: Optional[float]) -> Result:
    result = Result(case=case)
    if case.requires and not probe.peer_installed(case.requires):
        result.status = MISSING
        return result
    if case.unsupported or (case.requires_python
                            and sys.version_info[:2] < tuple(case.requires_python)):
        result.status = UNSUPPORTED
        return result
    armed = False
    if timeout:
        # imported here: faulthandler refuses sub-interpreters, and workers
        # of the interpreters backend must be able to import the workload
        # modules (their task functions live there)
        import faulthandler

        try:
            faulthandler.dump_traceback_later(timeout, exit=True)
            armed = True
        except (RuntimeError, ValueError, OSError):  # no usable stderr fd
            pass
    try:
        with case.setup() as body:
            runs = measure(body, cfg.repeat)
        result.times, result.loads, result.cpu = runs.times, runs.loads, runs.cpu
        items = case.items() if callable(case.items) else case.items
        result.items = int(items)
    except Exception as exc:  # noqa: BLE001 -- a failing row must not end the run
        result.status = ERROR
        result.error = _describe(exc)
        result.times, result.loads, result.cpu = [], [], []
    finally:
        if armed:
            faulthandler.cancel_dump_traceback_later()
    return result


def derive(results: List[Result]) -> None:
    """Fill in speedup, ratio and target columns from results of this run.

    Every comparison is per item, so rows may process different numbers of
    items (a slow stdlib row on 100k items against ours on 1M).
    """
    by_key: Dict[str, Result] = {r.case.key: r for r in results}

    def per_item_ratio(ref_key: Optional[str], r: Result) -> Optional[float]:
        ref = by_key.get(ref_key) if ref_key else None
        if ref is None or ref.per_item is None or not r.per_item:
            return None
        return ref.per_item / r.per_item

    for r in results:
        r.speedup = per_item_ratio(r.case.speedup_to, r)
        r.ratio = per_item_ratio(r.case.ratio_to, r)
        if r.case.target is not None and r.case.kind == GILFREE:
            r.target_value, r.target_met = r.case.target.check(r, by_key)
            ref = by_key.get(r.case.target.reference(r) or "")
            r.target_suspect = r.noisy or (ref is not None and ref.noisy)


def _done_text(r: Result) -> str:
    if r.status == MISSING:
        return f"not installed ({r.case.requires})"
    if r.status == UNSUPPORTED:
        return skip_text(r.case)
    if r.status == ERROR:
        return f"error: {r.error}"
    per = format_seconds(r.per_item)
    text = f"{format_seconds(r.best)} ({per}/{r.case.unit})"
    if r.noisy:
        text += f" † other processes used {r.best_load:.1f} CPU"
    return text


def run(names: Optional[Iterable[str]] = None, cfg: Optional[Config] = None, *,
        progress: Optional[TextIO] = sys.stderr, timeout: Optional[float] = 300.0) -> Run:
    """Plan and run the selected workloads.

    Args:
        names: workload names (see :data:`WORKLOADS`); None = all.
        cfg: sizes and knobs; its ``log`` is redirected to the progress stream.
        progress: where progress lines go (None = silent).
        timeout: seconds one case may take before the process dumps every
            thread's stack and exits (None or 0 = no limit).

    Returns:
        The :class:`Run`; a Ctrl-C stops it early with ``interrupted`` set and
        the rows measured so far.
    """
    cfg = cfg or Config()
    prog = Progress(progress)
    cfg.log = prog.log
    workloads = [WORKLOADS[n](cfg) for n in select(names)]
    plan = [(w, c) for w in workloads for c in w.cases()]
    for w, c in plan:  # a workload-wide limit applies to its non-serial rows
        if w.requires_python and c.kind != SERIAL and c.requires_python is None:
            c.requires_python = tuple(w.requires_python)
        if c.kind != SERIAL and c.unsupported is None:
            c.unsupported = w.unsupported()
    out = Run(cfg=cfg, machine=machine_info(), workloads=workloads)
    t0 = time.perf_counter()
    for i, (_, case) in enumerate(plan, 1):
        prog.start(i, len(plan), f"{case.group}: {case.subject}")
        try:
            r = run_case(case, cfg, timeout)
        except KeyboardInterrupt:
            prog.done("interrupted")
            out.interrupted = True
            break
        out.results.append(r)
        prog.done(_done_text(r))
    out.seconds = time.perf_counter() - t0
    derive(out.results)
    return out


__all__ = ["Run", "run", "run_case", "derive", "select", "needs_python", "OK", "ERROR",
           "MISSING", "UNSUPPORTED"]
