"""Turn a :class:`~.runner.Run` into the printed table, or into JSON.

One table for the whole run: each workload group is a section line, each
measurement a row under it. Columns:

=============  =============================================================
time           best wall time of one run (all the items)
per item       time / items, in the unit of the row (call, task, chunk)
cores          CPU seconds this process used / wall seconds: ≈ N when N
               threads really run in parallel; more than the work needs
               means waiters spin instead of sleeping
vs serial      serial time per item / this row's: > 1 means faster than
               doing the same work in the calling thread
vs stdlib      the stdlib equivalent's time per item / this row's: > 1
               means gilfree (or the peer) is faster than the stdlib
target         what gilfree must reach on this row, ✓ met / ✗ missed
=============  =============================================================
"""

from __future__ import annotations

import json
import textwrap
from typing import List, Optional, TextIO

from .case import (ERROR, MISSING, NOISY_CPUS, UNSUPPORTED, Result, format_seconds, skip_text)
from .timing import SHORT_MAX_FACTOR

ASCII = str.maketrans({"×": "x", "µ": "u", "✓": "ok", "✗": "MISS", "≤": "<=",
                       "≥": ">=", "≈": "~", "–": "-", "—": "-", "→": "->", "·": "-",
                       "†": "*", "…": "..."})

HEADERS = ("workload / backend or peer", "time", "per item", "cores", "vs serial", "vs stdlib",
           "target")
ERROR_WIDTH = 110
NOTE_WIDTH = 100


def _x(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.2f}×" if v < 100 else f"{v:.0f}×"


def _target(r: Result) -> str:
    t = r.case.target
    if t is None:
        return ""
    if r.target_met is None:
        return t.text
    mark = "✓" if r.target_met else "✗"
    shown = f" ({t.show_value(r.target_value)})" if t.show_value and r.target_value else ""
    if not r.target_met and t.relative and not shown and r.target_value is not None:
        shown = f" ({r.target_value:.3f}×)"  # "1.80× ✗" next to "≥ 1.80×" needs the 3rd digit
    return f"{t.text}{shown} {mark}"


def _cells(r: Result) -> List[str]:
    label = "  " + r.case.subject
    if r.status == MISSING:
        return [label, "not installed"]
    if r.status == UNSUPPORTED:
        return [label, skip_text(r.case)]
    if r.status == ERROR:
        err = r.error if len(r.error) <= ERROR_WIDTH else r.error[: ERROR_WIDTH - 1] + "…"
        return [label, f"error: {err}"]
    per = f"{format_seconds(r.per_item)}/{r.case.unit}"
    time = format_seconds(r.best) + ("†" if r.noisy else " ")
    cores = "" if r.cores is None else f"{r.cores:.2f}"
    return [label, time, per, cores, _x(r.speedup), _x(r.ratio), _target(r)]


def _header_lines(run) -> List[str]:
    m = run.machine
    cfg = run.cfg
    cpus = f"{m['cpu_count']} CPUs"
    if m.get("usable_cpus") != m.get("cpu_count"):
        cpus += f" ({m['usable_cpus']} usable)"
    model = f", {m['cpu_model']}" if m.get("cpu_model") else ""
    load = m.get("load_average")
    if load is not None:
        cpus += f", load average {load:.2f} at start"
    lines = [
        f"gilfree bench — {cpus}{model}",
        f"  {m['python']} (GIL {m['gil']}), {m['platform']}, gilfree {m['gilfree']}",
        f"  workers={cfg.workers}{', quick' if cfg.quick else ''}; time = best of "
        f"{cfg.repeat} run{'s' if cfg.repeat != 1 else ''} after 1 warm-up "
        f"(rows under 50 ms: up to {cfg.repeat * SHORT_MAX_FACTOR}), gc disabled",
    ]
    if cfg.quick:
        lines.append("  --quick: small sizes and few runs, a smoke test; "
                     "judge targets on a default run")
    return lines


def render(run, ascii_only: bool = False) -> str:
    """The whole report: machine, table, footnotes, summary."""
    rows: List[Optional[List[str]]] = []
    group = None
    for r in run.results:
        if r.case.group != group:
            group = r.case.group
            rows.append([group])
        rows.append(_cells(r))

    # widths from full rows only; short rows (sections, errors) may overflow
    full = [c for c in rows if len(c) == len(HEADERS)] + [list(HEADERS)]
    widths = [max(len(c[i]) for c in full) for i in range(len(HEADERS))]
    widths[-1] = max(widths[-1], len(HEADERS[-1]))
    right = {1, 2, 3, 4, 5}

    def fmt(cells: List[str]) -> str:
        if len(cells) == 1:
            return cells[0]
        if len(cells) == 2:  # subject + message spanning the numeric columns
            return f"{cells[0]:<{widths[0]}}  {cells[1]}"
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                 for i, c in enumerate(cells)]
        return "  ".join(parts).rstrip()

    out = _header_lines(run)
    out.append("")
    out.append(fmt(list(HEADERS)))
    out.append("  ".join("-" * w for w in widths))
    out.extend(fmt(c) for c in rows)
    out.append("")
    out.extend(_footnotes(run))
    text = "\n".join(out) + "\n"
    return text.translate(ASCII) if ascii_only else text


def _footnotes(run) -> List[str]:
    notes = [
        "cores = CPU time of this process / wall time (≈N: N threads busy; more than the work "
        "needs: waiters spinning).",
        "vs serial = serial time per item / this row's (>1: faster than the calling thread alone);",
        "vs stdlib = the stdlib equivalent's time per item / this row's (>1: faster than the stdlib).",
    ]
    noisy = [r for r in run.results if r.noisy]
    if noisy:
        notes.append(f"† other processes used ≥ {NOISY_CPUS} CPU during this row's best run "
                     f"even after retries: its parallel numbers are understated, rerun on a "
                     f"quiet machine ({len(noisy)} row{'s' if len(noisy) != 1 else ''}).")
    for w in run.workloads:
        notes.append(f"{w.title}: {w.about}")
    for w in run.workloads:
        notes.extend(w.notes())
    peers = run.machine.get("peers", {})
    if peers:
        notes.append("peers: " + ", ".join(
            f"{k} {v}" if v else f"{k} not installed" for k, v in peers.items()))
    notes.append(_summary(run))
    wrapped: List[str] = []
    for n in notes:
        wrapped.extend(textwrap.wrap(n, width=NOTE_WIDTH, subsequent_indent="    ",
                                     break_on_hyphens=False))
    return wrapped


def _summary(run) -> str:
    results = run.results
    checked = [r for r in results if r.target_met is not None]
    met = sum(1 for r in checked if r.target_met)
    parts = [f"{len(results)} rows in {run.seconds:.0f} s"]
    if checked:
        suspect = sum(1 for r in checked if not r.target_met and r.target_suspect)
        parts.append(f"targets met {met}/{len(checked)}" +
                     (f" ({suspect} of the misses measured with † rows)" if suspect else ""))
    if run.errors:
        parts.append(f"{len(run.errors)} error row{'s' if len(run.errors) != 1 else ''}")
    if run.interrupted:
        parts.append("INTERRUPTED")
    return "summary: " + ", ".join(parts)


def can_encode(stream: TextIO, sample: str = "×µ✓✗≤≥≈–—") -> bool:
    enc = getattr(stream, "encoding", None) or "ascii"
    try:
        sample.encode(enc)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def to_json(run) -> dict:
    """Everything measured, raw, for tracking across runs."""
    rows = []
    for r in run.results:
        c = r.case
        rows.append({
            "group": c.group, "subject": c.subject, "kind": c.kind, "key": c.key,
            "status": r.status, "error": r.error or None,
            "items": r.items, "unit": c.unit,
            "times_s": r.times, "foreign_cpus": r.loads,
            "process_cpu_s": r.cpu, "cores": r.cores, "noisy": r.noisy, "best_s": r.best, "median_s": r.median,
            "per_item_s": r.per_item, "speedup_vs_serial": r.speedup,
            "ratio_vs_stdlib": r.ratio, "speedup_to": c.speedup_to, "ratio_to": c.ratio_to,
            "target": c.target.text if c.target else None,
            "target_value": r.target_value, "target_met": r.target_met,
            "target_suspect": r.target_suspect,
        })
    cfg = run.cfg
    return {
        "machine": run.machine,
        "config": {"workers": cfg.workers, "quick": cfg.quick, "repeat": cfg.repeat,
                   "statistic": "best", "warmups": 1, "gc": "disabled while timing"},
        "seconds": run.seconds,
        "interrupted": run.interrupted,
        "notes": [n for w in run.workloads for n in w.notes()],
        "rows": rows,
    }


def write_json(run, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(to_json(run), f, indent=2, ensure_ascii=False)
        f.write("\n")
