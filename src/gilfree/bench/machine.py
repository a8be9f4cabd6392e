"""What the numbers were measured on: printed above the table, saved in JSON."""

from __future__ import annotations

import os
import platform
import sys
from typing import Dict, Optional

from . import probe

PEERS = ("joblib", "loky", "mpire", "numpy")


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _gilfree_version() -> str:
    try:
        import gilfree

        return str(getattr(gilfree, "__version__", "unknown version"))
    except Exception as exc:  # noqa: BLE001 -- reported, not raised
        return f"not importable ({type(exc).__name__}: {exc})"


def _gil_state() -> str:
    is_enabled = getattr(sys, "_is_gil_enabled", None)  # 3.13+
    if is_enabled is None:
        return "enabled"
    return "enabled" if is_enabled() else "disabled (free-threaded build)"


def _loadavg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_info() -> Dict[str, object]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_model": _cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "gil": _gil_state(),
        "platform": platform.platform(),
        "gilfree": _gilfree_version(),
        "load_average": _loadavg(),
        "peers": {p: (probe.version_of(p) if probe.peer_installed(p) else None) for p in PEERS},
    }
