"""Progress reporting for long exports: a bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable


class Progress:
    """Thread-safe progress sink; the base class reports nothing."""

    def start(self, label: str, total_rows: int | None) -> None: ...

    def advance(self, rows: int, nbytes: int) -> None: ...

    def finish(self) -> None: ...


class TerminalProgress(Progress):
    """A tqdm bar (rows, MB/s, ETA from the planner's estimate) when stderr is a terminal."""

    def __init__(self, stream=None, force: bool = False):
        self.stream = stream or sys.stderr
        self.enabled = force or (hasattr(self.stream, "isatty") and self.stream.isatty())
        self._bar = None
        self._bytes = 0
        self._t0 = 0.0
        self._lock = threading.Lock()

    def start(self, label: str, total_rows: int | None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self._bytes, self._t0 = 0, time.perf_counter()
        self._bar = tqdm(total=total_rows, desc=label, unit="rows", unit_scale=True, file=self.stream, dynamic_ncols=True, smoothing=0.1)

    def advance(self, rows: int, nbytes: int) -> None:
        if self._bar is None:
            return
        with self._lock:
            self._bytes += nbytes
            self._bar.update(rows)
            elapsed = max(time.perf_counter() - self._t0, 1e-6)
            self._bar.set_postfix_str(f"{self._bytes / elapsed / 1e6:.0f} MB/s", refresh=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class LogProgress(Progress):
    """Calls ``log(message)`` at most every ``every`` seconds (for Dagster's run log)."""

    def __init__(self, log: Callable[[str], None], every: float = 5.0):
        self.log = log
        self.every = every
        self._lock = threading.Lock()
        self._label = ""
        self._total: int | None = None
        self._rows = self._bytes = 0
        self._t0 = self._last = 0.0

    def start(self, label: str, total_rows: int | None) -> None:
        self._label, self._total = label, total_rows
        self._rows = self._bytes = 0
        self._t0 = self._last = time.perf_counter()
        est = f" (about {total_rows:,} rows)" if total_rows else ""
        self.log(f"{label}: started{est}")

    def advance(self, rows: int, nbytes: int) -> None:
        with self._lock:
            self._rows += rows
            self._bytes += nbytes
            now = time.perf_counter()
            if now - self._last < self.every:
                return
            self._last = now
            elapsed = now - self._t0
            rate = self._rows / elapsed if elapsed else 0
            pct = f" ({100 * self._rows / self._total:.0f}%)" if self._total else ""
            eta = ""
            if self._total and rate and self._rows < self._total:
                eta = f", about {(self._total - self._rows) / rate:.0f}s left"
            self.log(f"{self._label}: {self._rows:,} rows{pct}, {self._bytes / elapsed / 1e6:.0f} MB/s{eta}")

    def finish(self) -> None:
        elapsed = time.perf_counter() - self._t0
        self.log(f"{self._label}: {self._rows:,} rows in {elapsed:.1f}s")
