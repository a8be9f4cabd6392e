"""What one row of the benchmark table is: a case, its result, its target.

A *workload* (see ``workloads/``) plans a list of :class:`Case` objects. The
runner times each case and turns it into a :class:`Result`; the table derives
the speedup and ratio columns from the results of the same run, so nothing is
ever compared with a number measured elsewhere.

Kinds of row (``Case.kind``):

========  ==============================================================
serial    the same work in the calling thread: the "speedup" baseline
gilfree   a gilfree API; gets a "vs stdlib" ratio and maybe a target
stdlib    the standard library equivalent: the "vs stdlib" baseline
peer      another library (joblib, loky, mpire, numpy); "not installed"
          when it cannot be imported, never an error
========  ==============================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, NamedTuple, Optional

SERIAL = "serial"
GILFREE = "gilfree"
STDLIB = "stdlib"
PEER = "peer"

OK = "ok"
ERROR = "error"
MISSING = "not installed"
UNSUPPORTED = "unsupported"  # needs a newer Python: skipped, not an error

# Another process busy during a run makes a parallel row look slow (2
# threads on 2 cores get 1.3 cores). Such runs are detected (see
# timing.CpuMeter): below this many CPUs of foreign load a run is quiet.
NOISY_CPUS = 0.25


class Timed(NamedTuple):
    """What a case's setup yields when its warm-up should be cheaper than a run.

    ``run`` is timed; ``warm`` (a smaller version of the same work, e.g. a
    tenth of the items) is called once before the timed runs so that threads
    are started and caches are hot without paying for a full extra run.
    """

    run: Callable[[], Any]
    warm: Optional[Callable[[], Any]] = None


@dataclass
class Case:
    """One measurement: one row of the table.

    Attributes:
        group: the table section the row belongs to (one workload may have
            several, e.g. dispatch has map / submit-all / round trip).
        subject: the row label: the backend or peer being measured.
        kind: one of ``serial``, ``gilfree``, ``stdlib``, ``peer``.
        key: unique in the run; baselines are referred to by key.
        items: how many items (tasks, calls, chunks) one run processes; the
            per-item column is ``time / items``.  A callable is evaluated
            after the case ran (for counts that depend on calibration).
        setup: a zero-argument callable returning a context manager that
            builds the pool outside the timed region and yields either the
            timed callable or a :class:`Timed`.
        unit: what an item is ("task", "call", "chunk").
        speedup_to: key of the serial row of this group (None: no speedup).
        ratio_to: key of the stdlib row this row is compared with.
        target: what the lead must meet (only on gilfree rows).
        requires: importable name of a peer library; when it cannot be
            found the row reads "not installed".
        unsupported: why this row cannot run here (set from the workload's
            ``unsupported()``); it is then skipped, not counted as an error.
        requires_python: minimum ``(major, minor)``; on an older Python the
            row reads "needs Python X.Y+" and is skipped (not an error).
        note: a short remark printed next to the row (e.g. "100k items").
    """

    group: str
    subject: str
    kind: str
    key: str
    items: Any
    setup: Callable[[], ContextManager[Any]]
    unit: str = "item"
    speedup_to: Optional[str] = None
    ratio_to: Optional[str] = None
    target: Optional["Target"] = None
    requires: Optional[str] = None
    requires_python: Optional[tuple] = None
    unsupported: Optional[str] = None
    note: str = ""


@dataclass
class Result:
    """A case after it ran (or failed, or was skipped)."""

    case: Case
    status: str = OK
    error: str = ""
    times: list = field(default_factory=list)  # seconds, one per timed run
    loads: list = field(default_factory=list)  # foreign CPUs during each run (or None)
    cpu: list = field(default_factory=list)  # this process's CPU seconds in each run
    items: int = 0
    speedup: Optional[float] = None
    ratio: Optional[float] = None
    target_value: Optional[float] = None  # what the target was checked on
    target_met: Optional[bool] = None
    target_suspect: bool = False  # this row or its reference ran disturbed (†)

    @property
    def ok(self) -> bool:
        return self.status == OK and bool(self.times)

    @property
    def best(self) -> Optional[float]:
        return min(self.times) if self.times else None

    @property
    def best_load(self) -> Optional[float]:
        """CPUs other processes used during the fastest run (None: unknown)."""
        if not self.times or len(self.loads) != len(self.times):
            return None
        return self.loads[self.times.index(min(self.times))]

    @property
    def noisy(self) -> bool:
        load = self.best_load
        return load is not None and load >= NOISY_CPUS

    @property
    def cores(self) -> Optional[float]:
        """CPUs this process kept busy during the fastest run (CPU s / wall s).

        About N for N threads doing real work in parallel; above the useful
        work it shows spinning (waiters burning a core instead of sleeping).
        """
        if not self.times or len(self.cpu) != len(self.times):
            return None
        i = self.times.index(min(self.times))
        return self.cpu[i] / self.times[i] if self.times[i] >= 2e-4 else None

    @property
    def median(self) -> Optional[float]:
        if not self.times:
            return None
        s = sorted(self.times)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2

    @property
    def per_item(self) -> Optional[float]:
        if not self.ok or self.items <= 0:
            return None
        return self.best / self.items


class Target:
    """A bound the gilfree row must meet, printed with a ✓/✗ marker.

    ``check(result, by_key)`` returns ``(value, met)`` where ``value`` is the
    number the bound was compared with, or ``(None, None)`` when it cannot be
    evaluated (the row or its reference failed).
    """

    def __init__(self, text: str, check: Callable[[Result, dict], tuple],
                 show_value: Optional[Callable[[float], str]] = None,
                 relative: bool = False, vs: Optional[str] = None):
        self.text = text
        self._check = check
        # set when the checked value is not already in another column
        self.show_value = show_value
        # relative targets compare with another row: ``vs``, or the serial row
        self.relative = relative
        self.vs = vs

    def reference(self, result: Result) -> Optional[str]:
        """Key of the row this target compares with (None: absolute bound)."""
        return (self.vs or result.case.speedup_to) if self.relative else None

    def check(self, result: Result, by_key: dict) -> tuple:
        if not result.ok:
            return None, None
        return self._check(result, by_key)

    def __repr__(self) -> str:
        return f"Target({self.text!r})"


def per_item_at_most(seconds: float) -> Target:
    """The row's time per item is at most ``seconds``."""
    text = f"≤ {format_seconds(seconds)}"

    def check(r: Result, by_key: dict) -> tuple:
        return r.per_item, r.per_item <= seconds

    return Target(text, check)


def _speedup(r: Result, by_key: dict, vs: Optional[str]) -> Optional[float]:
    ref = by_key.get(vs or r.case.speedup_to)
    if ref is None or not ref.ok or not r.per_item:
        return None
    return ref.per_item / r.per_item


def speedup_at_least(factor: float, vs: Optional[str] = None, vs_label: str = "serial") -> Target:
    """The row is at least ``factor`` times faster than the row ``vs``
    (default: the group's serial row), compared per item."""
    text = f"≥ {factor:.2f}× {vs_label}"

    def check(r: Result, by_key: dict) -> tuple:
        s = _speedup(r, by_key, vs)
        return (None, None) if s is None else (s, s >= factor)

    return Target(text, check, show_value=(lambda v: f"{v:.2f}×") if vs else None,
                  relative=True, vs=vs)


def speedup_about(low: float, high: float, vs: Optional[str] = None) -> Target:
    """The row's speedup lies in ``[low, high]``: e.g. "≈ 1×" for work that
    holds the GIL, where anything clearly above 1 means the GIL was not held."""
    text = f"≈ 1× ({low:g}–{high:g})"

    def check(r: Result, by_key: dict) -> tuple:
        s = _speedup(r, by_key, vs)
        return (None, None) if s is None else (s, low <= s <= high)

    return Target(text, check, relative=True, vs=vs)


def skip_text(case: "Case") -> str:
    """The text of a row that could not run here."""
    return case.unsupported or needs_python(case.requires_python)


def needs_python(version) -> str:
    """``(3, 12)`` → ``needs Python 3.12+`` (the text of an unsupported row)."""
    return "needs Python " + ".".join(map(str, version)) + "+"


def format_seconds(seconds: Optional[float]) -> str:
    """3 significant digits in the unit that fits: ``1.23 s``, ``45.6 ms``,
    ``0.08 µs``, ``512 ns``."""
    if seconds is None or math.isnan(seconds):
        return ""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{_sig3(seconds / scale)} {unit}"
    if seconds >= 0.001e-6:  # "0.081 µs" reads better than "81 ns" next to µs targets
        return f"{_sig3(seconds / 1e-6)} µs"
    return f"{_sig3(seconds / 1e-9)} ns"


def _sig3(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"
