"""Work in a thread of its own, and the one sentence a failed read from the source becomes;
shared by the exports of both layouts (``run.py``, ``refresh.py``)."""

from __future__ import annotations

import threading

from dataset_assets.errors import SourceError, UserError
from dataset_assets.source import connect as src


class Background:
    """``fn(*args)`` in a thread (or at once with ``inline``); ``result()`` returns its value
    or raises its exception."""

    def __init__(self, fn, *args, inline: bool = False):
        self._box: dict = {}
        self._thread = None
        if inline:
            self._run(fn, args)
        else:
            self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
            self._thread.start()

    def _run(self, fn, args) -> None:
        try:
            self._box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed over by result()
            self._box["error"] = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def result(self):
        self.wait()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]


def source_failure(uri: str, exc: BaseException) -> UserError:
    if isinstance(exc, UserError):
        return exc
    msg = str(exc)
    if "terminating connection" in msg or "server closed the connection" in msg or "Expected PGCOPY signature" in msg or "connection" in msg.lower():
        ident = src.identity(uri)
        return SourceError(f"The connection to the database at {ident.host} broke during the export ({msg.splitlines()[0][:200]}); nothing was committed to the store, rerun the export.")
    return UserError(f"The export failed: {src.redact(msg.splitlines()[0] if msg else type(exc).__name__)}; nothing was committed to the store, rerun the export.")
