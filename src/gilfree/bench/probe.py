"""Late look-ups of gilfree features and peer libraries.

The benchmark must run (and print "error: ..." rows) even when a gilfree
feature is missing or broken, so nothing here is imported at module import
time: every workload asks for what it needs when its case is set up, and the
exception becomes that row's error.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Optional


def gilfree(name: str) -> Any:
    """``gilfree.<name>``: an attribute of the package or a submodule.

    ``gilfree("demo").countdown`` works whether ``demo`` is imported by
    ``gilfree/__init__.py`` or only exists as ``gilfree/demo.py``.
    """
    pkg = importlib.import_module("gilfree")
    try:
        return getattr(pkg, name)
    except AttributeError:
        pass
    try:
        return importlib.import_module(f"gilfree.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"gilfree.{name}":
            raise  # the submodule exists but one of its imports is missing
        raise AttributeError(f"module 'gilfree' has no attribute {name!r}") from None


def peer_installed(module: str) -> bool:
    """True if ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def version_of(module: str) -> Optional[str]:
    """The installed distribution version of ``module``, or None."""
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        try:
            return getattr(importlib.import_module(module), "__version__", None)
        except Exception:
            return None
