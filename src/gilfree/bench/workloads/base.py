"""The two things every workload module shares: the run's configuration and
the :class:`Workload` base class."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from ..case import Case


def usable_cores() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Config:
    """Sizes and knobs of one run; ``quick`` shrinks everything ~10×.

    The sizes are chosen so that the default run takes about a minute on
    2 cores and ``--quick`` about 10 seconds.
    """

    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    quick: bool = False
    repeat: int = 3
    log: Callable[[str], None] = _stderr

    @property
    def cores(self) -> int:
        return usable_cores()

    @property
    def parallelism(self) -> int:
        """How many workers can really run at once: targets scale with it."""
        return max(1, min(self.workers, self.cores))

    @property
    def call_seconds(self) -> float:
        """Wall time of one seed-demo call (the brief asks for ~0.2 s)."""
        return 0.03 if self.quick else 0.2

    @property
    def dispatch_items(self) -> int:
        return 10_000 if self.quick else 100_000

    @property
    def roundtrip_items(self) -> int:
        return 2_000 if self.quick else 20_000

    @property
    def native_chunks(self) -> int:
        return 100_000 if self.quick else 1_000_000

    @property
    def native_tasks(self) -> int:
        return 10_000 if self.quick else 100_000


class Workload:
    """A named experiment that plans its table rows.

    Subclasses set ``name`` (for ``--only``), ``title`` and ``about`` (the
    footnote: what the experiment reproduces) and implement :meth:`cases`.
    Anything expensive (calibration, imports of gilfree features) must happen
    lazily inside a case's setup so that planning is instant and a missing
    feature fails only its own rows.
    """

    name = ""
    title = ""
    about = ""
    # (major, minor): on an older Python every row of this workload that is
    # not serial is skipped ("needs Python X.Y+"), not counted as an error
    requires_python = None

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def unsupported(self) -> Optional[str]:
        """Why this workload's non-serial rows cannot run here, or None."""
        return None

    def cases(self) -> List[Case]:
        raise NotImplementedError

    def notes(self) -> List[str]:
        """Footnotes known only after the run (calibrated sizes)."""
        return []
