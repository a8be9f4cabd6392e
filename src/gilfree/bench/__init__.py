"""gilfree's benchmark suite: ``python -m gilfree bench``.

It reproduces the seeds' experiments and measures gilfree against the
standard library and the peer libraries installed, all in one run, and
prints one table. Layout:

* ``workloads/``: one module per experiment; each plans its table rows
  (:class:`~.case.Case`) and sizes its work lazily.
* ``runner.py``: runs the rows with progress lines, survives failing rows,
  derives speedups, ratios and target checks.
* ``table.py``: the printed table and the JSON dump.
* ``cli.py``: the options shared by ``python -m gilfree bench`` and the
  scripts in ``benchmarks/``.

Programmatic use::

    from gilfree.bench import Config, run, render
    print(render(run(["dispatch"], Config(quick=True))))
"""

from .cli import add_arguments, main, run_from_args
from .runner import Run, run
from .table import render, to_json
from .workloads import WORKLOADS, Config

__all__ = ["Config", "Run", "WORKLOADS", "add_arguments", "main", "render", "run",
           "run_from_args", "to_json"]
