"""A package run with ``python -m pool_package`` (test_processes.py): it
imports gilfree before ``__main__`` (its __main__.py) has a file."""

import gilfree  # noqa: F401
