"""One consistent point in time shared by every reader of an export.

A coordinating REPEATABLE READ transaction exports its snapshot with
``pg_export_snapshot()`` and stays open until the export ends; each worker
connection adopts it with ``SET TRANSACTION SNAPSHOT`` as the first statement of
its own REPEATABLE READ transaction. Every table exported in one call, and
every range of each, therefore sees exactly the same committed rows.

Joined connections are kept for reuse (``connection()``): opening one costs
tens of milliseconds (the driver loads the type catalog), which an incremental
snapshot of a few changed chunks would otherwise pay twice per worker; and
``prepare(n)`` opens them in the background while the caller plans.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager

from dataset_assets.errors import SourceError
from dataset_assets.source.connect import connect

_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$", re.IGNORECASE)


class PostgresSnapshot:
    def __init__(self, uri: str):
        self.uri = uri
        self._idle: list = []
        self._pending: list[threading.Thread] = []
        self._closed = False
        self._lock = threading.Lock()
        self.conn = connect(uri)
        self.cur = self.conn.cursor()
        try:
            self.cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self.cur.execute("SELECT pg_export_snapshot(), pg_current_snapshot()::text, current_setting('server_version'), now()::text")
            self.snapshot_id, self.txid_snapshot, self.server_version, self.taken_at = self.cur.fetchone()
        except Exception as exc:  # noqa: BLE001
            self.close()
            raise SourceError(f"Could not take a snapshot of the source database ({str(exc).splitlines()[0]}); check that the user may read it and rerun.") from None
        if not _SNAPSHOT_ID.match(self.snapshot_id):
            raise SourceError(f"Unexpected snapshot id {self.snapshot_id!r} from the source database.")

    def describe(self) -> dict:
        return {"snapshot_id": self.snapshot_id, "txid_snapshot": self.txid_snapshot, "taken_at": self.taken_at,
                "server_version": self.server_version}

    def _join(self):
        """A new connection whose transaction sees this snapshot; returns (conn, cursor)."""
        conn = connect(self.uri)
        cur = conn.cursor()
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur.execute(f"SET TRANSACTION SNAPSHOT '{self.snapshot_id}'")
        return conn, cur

    def prepare(self, n: int) -> None:
        """Start joining ``n`` connections in the background; ``connection()`` hands them out."""
        for _ in range(n):
            t = threading.Thread(target=self._prepare_one, daemon=True)
            self._pending.append(t)
            t.start()

    def _prepare_one(self) -> None:
        try:
            pair = self._join()
        except Exception:  # noqa: BLE001 - connection() joins again and reports the error
            return
        with self._lock:
            if not self._closed:
                self._idle.append(pair)
                return
        _close(pair[0])

    def _take(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
            pending = [t for t in self._pending if t.is_alive()]
        for t in pending:  # one started earlier is ready sooner than a new one
            t.join()
            with self._lock:
                if self._idle:
                    return self._idle.pop()
        return None

    @contextmanager
    def connection(self):
        """(conn, cursor) on this snapshot, reused across callers; one that failed is closed."""
        pair = self._take()
        if pair is None:
            pair = self._join()
        try:
            yield pair
        except BaseException:
            _close(pair[0])
            raise
        with self._lock:
            self._idle.append(pair)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for t in self._pending:
            t.join()
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            _close(conn)
        try:
            self.cur.execute("COMMIT")
        except Exception:  # noqa: BLE001
            pass
        try:
            self.cur.close()
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "PostgresSnapshot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _close(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - best effort
        pass
