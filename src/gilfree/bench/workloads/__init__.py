"""The experiments ``python -m gilfree bench`` runs, in table order.

Add a workload: a module here with one :class:`~.base.Workload` subclass,
then one line in ``WORKLOADS``.
"""

from .base import Config, Workload
from .dispatch import Dispatch
from .interpreters import Interpreters
from .native import Native
from .numpy_release import NumpyRelease
from .processes import PARTS as PROCESSES
from .seed000 import Seed000
from .seed001 import Seed001

WORKLOADS = {w.name: w for w in (Seed000, NumpyRelease, Seed001, Dispatch, Native, Interpreters,
                                 *PROCESSES)}

__all__ = ["Config", "Workload", "WORKLOADS"]
