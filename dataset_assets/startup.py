"""Start-up cost: optional libraries that our dependencies import without needing them.

A 1M-row export takes about 6 s; a command line process that imports pandas and polars only
because a dependency asks "is this input a DataFrame?" pays about 0.5 s more, imports and exit
together (measured in ``bench/README.md``, "Start-up"). Two tools, both narrow:

* :func:`hidden` keeps one module out of imports made by the current thread inside a ``with``
  block. ADBC's DB-API module registers a polars parameter backend when it can import polars;
  we bind parameters through its pyarrow backend (the default), so polars is hidden while that
  module loads. Nothing else changes: polars imports normally afterwards.
* :func:`refuse` declares a module absent for the rest of the process, as if it were not
  installed. ``dataset-assets export`` does this for pandas in its own process (``cli.run``):
  pyarrow and ADBC import pandas only to test inputs for DataFrames, and treat its absence as
  "not one". Never called by library code, which may share a process with code that needs it.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager


class _Refuse:
    """A meta path finder that answers "not installed" for one module (and its submodules)."""

    def __init__(self, name: str, reason: str, thread: int | None):
        self.name = name
        self.reason = reason
        self.thread = thread

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != self.name and not fullname.startswith(self.name + "."):
            return None
        if self.thread is not None and threading.get_ident() != self.thread:
            return None
        raise ModuleNotFoundError(f"No module named {fullname!r} ({self.reason})", name=fullname)


@contextmanager
def hidden(name: str, reason: str):
    """Inside the block, imports of ``name`` by this thread fail as if it were not installed
    (other threads are unaffected; an already imported module stays importable)."""
    if name in sys.modules:
        yield
        return
    finder = _Refuse(name, reason, threading.get_ident())
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def refuse(name: str, reason: str) -> bool:
    """From now on, in this process, importing ``name`` fails as if it were not installed.
    False (and nothing done) when it is imported already."""
    if name in sys.modules:
        return False
    sys.meta_path.insert(0, _Refuse(name, reason, None))
    return True
