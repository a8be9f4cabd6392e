"""How a run is timed, and how work is sized to a wall-clock budget.

Every timed run follows one recipe: one warm-up (threads started, code paths
and caches hot), then ``repeat`` runs, each timed with ``time.perf_counter``
with the garbage collector disabled (a full collection happens *before* each
run, outside the timed region, so no run pays for the previous run's
garbage). The value reported is the best run; the median and every run go to
the JSON output.

Best-of-k is used because the noise on a shared machine is one-sided (other
processes only ever make a run slower), and because it is what ``timeit``
recommends for comparing implementations.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .case import NOISY_CPUS, Timed


# Retries stop once a row has spent this long in timed runs: on a machine
# that stays busy they cannot help, and must not make the run take 10 minutes.
RETRY_BUDGET_S = 3.0
# Rows faster than SHORT_RUN_S get extra runs until they have spent
# SHORT_BUDGET_S (at most SHORT_MAX_FACTOR × repeat runs in all).
SHORT_RUN_S = 0.05
SHORT_BUDGET_S = 0.25
SHORT_MAX_FACTOR = 5
_MIN_WALL_FOR_LOAD = 0.02  # shorter runs are a couple of clock ticks: no signal


class CpuMeter:
    """CPU time other processes used while a run was timed (Linux only).

    Both numbers come from the same tick-based kernel accounting
    (``/proc/stat`` for the machine; for us, ``/proc/<pid>/stat`` of this
    process, which includes its C worker threads, and of every process
    descended from it - pool workers, gilfree's zygote - with the time of
    the ones already reaped, which the kernel adds to their parent's
    ``cutime``), so on a quiet machine their difference is exactly 0; steal
    time (a hypervisor taking the CPU) counts as foreign.
    """

    def __init__(self) -> None:
        try:
            self.hz = os.sysconf("SC_CLK_TCK")
            self.sample()
            self.ok = True
        except (OSError, ValueError, AttributeError, IndexError):
            self.ok = False

    @staticmethod
    def sample() -> Tuple[int, int]:
        with open("/proc/stat", "rb") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        # user nice system idle iowait irq softirq steal
        machine = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        return machine, _family_ticks(os.getpid())

    def foreign(self, before, after, wall: float) -> Optional[float]:
        """Average number of CPUs used by others during ``wall`` seconds."""
        if not self.ok or before is None or after is None or wall < _MIN_WALL_FOR_LOAD:
            return None
        ticks = (after[0] - before[0]) - (after[1] - before[1])
        return max(0.0, ticks / self.hz / wall)


def _family_ticks(root: int) -> int:
    """CPU ticks of ``root`` and its descendants, reaped ones included."""
    parents: Dict[int, int] = {}
    ticks: Dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:  # gone meanwhile
            continue
        fields = data[data.rindex(b")") + 2:].split()
        pid = int(name)
        parents[pid] = int(fields[1])
        # utime + stime + cutime + cstime
        ticks[pid] = sum(int(x) for x in fields[11:15])
    total = 0
    for pid, tick in ticks.items():
        p = pid
        while p > 1 and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += tick
    return total


_METER: Optional[CpuMeter] = None


def _meter() -> CpuMeter:
    global _METER
    if _METER is None:
        _METER = CpuMeter()
    return _METER


@dataclass
class Runs:
    """What :func:`measure` saw, one entry per timed run."""

    times: List[float] = field(default_factory=list)  # wall seconds
    loads: List[Optional[float]] = field(default_factory=list)  # CPUs used by others
    cpu: List[float] = field(default_factory=list)  # CPU seconds of this process


def _process_cpu() -> float:
    """CPU seconds used so far by this process, all threads (µs resolution)."""
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    except ImportError:  # not POSIX
        return time.process_time()


def measure(body: Any, repeat: int) -> Runs:
    """Warm up once, then time ``repeat`` runs of ``body``.

    Runs shorter than :data:`SHORT_RUN_S` are repeated more (up to
    ``SHORT_MAX_FACTOR * repeat`` runs within :data:`SHORT_BUDGET_S`): for a
    5 ms row, best of 3 is mostly jitter.

    If the fastest run was disturbed by other processes (see
    :data:`NOISY_CPUS`), up to ``repeat`` extra runs are made, stopping at the
    first quiet one or once the row's timed runs add up to
    :data:`RETRY_BUDGET_S`.

    Args:
        body: a zero-argument callable, or a :class:`Timed` whose ``warm``
            (when set) replaces the full-size warm-up run.
        repeat: number of timed runs (>= 1).

    Returns:
        The wall-clock seconds of each timed run, the foreign CPU load
        during each (None where unknown), and this process's CPU seconds
        (all threads: CPU seconds / wall > workers would mean spinning).
    """
    if isinstance(body, Timed):
        run, warm = body.run, body.warm or body.run
    else:
        run = warm = body
    meter = _meter()
    warm()
    runs = Runs()
    times, loads = runs.times, runs.loads

    def once() -> None:
        gc.collect()
        before = meter.sample() if meter.ok else None
        c0 = _process_cpu()
        t0 = time.perf_counter()
        out = run()
        t1 = time.perf_counter()
        c1 = _process_cpu()
        after = meter.sample() if meter.ok else None
        del out  # freeing 100k results is not what is being measured
        times.append(t1 - t0)
        loads.append(meter.foreign(before, after, t1 - t0))
        runs.cpu.append(c1 - c0)

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(1, repeat)):
            once()
        # short rows are dominated by jitter (a wake-up, a cache miss is 10%
        # of 5 ms): give them more runs, timeit-style, within a small budget
        while min(times) < SHORT_RUN_S and sum(times) < SHORT_BUDGET_S \
                and len(times) < SHORT_MAX_FACTOR * repeat:
            once()
        for _ in range(max(1, repeat)):
            best_load = loads[times.index(min(times))]
            if best_load is None or best_load < NOISY_CPUS or sum(times) > RETRY_BUDGET_S:
                break
            once()
    finally:
        if was_enabled:
            gc.enable()
    return runs


def time_once(fn: Callable[[], Any]) -> float:
    """Seconds for one call of ``fn`` with gc disabled (used by calibration)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        if was_enabled:
            gc.enable()


def calibrate(work: Callable[[int], Any], seconds: float, start: int = 1000,
              minimum: int = 1) -> int:
    """Find ``n`` such that ``work(n)`` takes about ``seconds``.

    Doubles ``n`` until one call takes at least a tenth of the budget (long
    enough that timer resolution and call overhead do not matter), then
    scales linearly; the probe is taken as the best of two calls so that one
    preempted call does not halve the result.
    """
    n = max(start, minimum)
    floor = seconds / 10
    while True:
        t = min(time_once(lambda: work(n)), time_once(lambda: work(n)))
        if t >= floor or n >= 1 << 40:
            break
        n *= 2 if t > floor / 4 else 8
    return max(minimum, int(n * seconds / max(t, 1e-9)))


def fmt_n(n: Optional[int]) -> str:
    """``12345678`` → ``12,345,678`` (for footnotes)."""
    return "?" if n is None else f"{n:,}"
