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

Locks: ``TRUNCATE`` and table rewrites are not MVCC-safe (a snapshot taken before a
``TRUNCATE`` that commits sees an empty table), so the coordinating transaction takes
``ACCESS SHARE`` locks on every table it will read (``tables``: the exported tables and
their tombstone tables) BEFORE it exports its snapshot, and holds them to the end: a
``TRUNCATE``, ``ALTER TABLE`` or ``VACUUM FULL`` started later waits for the export. A
lock it cannot get within ``DATASET_ASSETS_LOCK_TIMEOUT_MS`` (default 60000) is one
sentence naming the table. Each joined connection locks the same tables again (``NOWAIT``:
with the coordinator holding its lock, the only thing that can block it is an exclusive
request queued behind the coordinator, which would wait for this export forever; the
export stops with one sentence instead, as pg_dump does). Every session of the export
sets ``idle_in_transaction_session_timeout = 0``: the coordinator is idle in its
transaction for the whole export, and pooled connections between their reads.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager

from dataset_assets.errors import SourceError, UserError
from dataset_assets.source import catalog
from dataset_assets.source.connect import connect, redact

_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$", re.IGNORECASE)

LOCK_TIMEOUT_ENV = "DATASET_ASSETS_LOCK_TIMEOUT_MS"
DEFAULT_LOCK_TIMEOUT_MS = 60_000


def lock_timeout_ms() -> int:
    """How long the export waits for its locks (``DATASET_ASSETS_LOCK_TIMEOUT_MS``, default 60000)."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_MS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{LOCK_TIMEOUT_ENV} is {raw!r}; set it to a whole number of milliseconds of at least 1 "
                        f"(default {DEFAULT_LOCK_TIMEOUT_MS}).")
    return value


def _session(cur, lock_timeout: int) -> None:
    """Settings of every session of an export, before its transaction begins."""
    cur.execute("SET idle_in_transaction_session_timeout = 0")
    cur.execute(f"SET lock_timeout = {int(lock_timeout)}")


def _lock(cur, name: str, qualified: str, lock_timeout: int, nowait: bool = False) -> None:
    """ACCESS SHARE on ``qualified`` (spelled by Postgres, :func:`catalog.resolve_tables`)."""
    try:
        cur.execute(f"LOCK TABLE {qualified} IN ACCESS SHARE MODE" + (" NOWAIT" if nowait else ""))
    except Exception as exc:  # noqa: BLE001 - the driver raises several types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if nowait and ("could not obtain lock" in first or "lock timeout" in first):
            raise SourceError(
                f"Another session asked for an exclusive lock on table {name} (TRUNCATE, ALTER TABLE, VACUUM FULL, ...) "
                f"while the export was starting, and it would wait for the export while the export waits for it; "
                f"nothing was exported, rerun the export once that session is done."
            ) from None
        if "lock timeout" in first:
            raise SourceError(
                f"Table {name} is locked by another session (a running TRUNCATE, ALTER TABLE, VACUUM FULL, ...) and the "
                f"export could not lock it within {lock_timeout} ms; nothing was exported, rerun the export once that "
                f"session is done (or wait longer with {LOCK_TIMEOUT_ENV})."
            ) from None
        raise SourceError(f"Could not lock table {name} for the export ({redact(first)}); check that the user may read it and rerun.") from None


class PostgresSnapshot:
    def __init__(self, uri: str, tables: list[str] | tuple[str, ...] = (), before_snapshot=None):
        """``tables``: every table the export reads (missing ones are left to the planner's
        sentence); each is locked before the snapshot is exported. ``before_snapshot()``, if
        given, runs once the locks are held and before the snapshot is taken."""
        self.uri = uri
        self._idle: list = []
        self._pending: list[threading.Thread] = []
        self._closed = False
        self._lock = threading.Lock()
        self.lock_timeout = lock_timeout_ms()
        self.locked: dict[str, str] = {}
        self.cluster: dict = {}
        self.conn = connect(uri)
        self.cur = self.conn.cursor()
        try:
            _session(self.cur, self.lock_timeout)
            self.cluster = catalog.cluster_identity(self.cur)  # outside the transaction: may be refused
            self.locked = catalog.resolve_tables(self.cur, list(dict.fromkeys(tables)))
            self.cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for name, qualified in self.locked.items():  # LOCK takes no snapshot: the snapshot comes after
                _lock(self.cur, name, qualified, self.lock_timeout)
            if before_snapshot is not None:
                before_snapshot()
            self.cur.execute("SELECT pg_export_snapshot(), pg_current_snapshot()::text, current_setting('server_version'), now()::text")
            self.snapshot_id, self.txid_snapshot, self.server_version, self.taken_at = self.cur.fetchone()
        except UserError:
            self.close()
            raise
        except Exception as exc:  # noqa: BLE001
            self.close()
            raise SourceError(f"Could not take a snapshot of the source database ({redact(str(exc).splitlines()[0])}); check that the user may read it and rerun.") from None
        if not _SNAPSHOT_ID.match(self.snapshot_id):
            self.close()
            raise SourceError(f"Unexpected snapshot id {self.snapshot_id!r} from the source database.")

    def describe(self) -> dict:
        return {"snapshot_id": self.snapshot_id, "txid_snapshot": self.txid_snapshot, "taken_at": self.taken_at,
                "server_version": self.server_version}

    def _join(self):
        """A new connection whose transaction sees this snapshot and holds the same locks; returns (conn, cursor)."""
        conn = connect(self.uri)
        try:
            cur = conn.cursor()
            _session(cur, self.lock_timeout)
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute(f"SET TRANSACTION SNAPSHOT '{self.snapshot_id}'")
            for name, qualified in self.locked.items():
                _lock(cur, name, qualified, self.lock_timeout, nowait=True)
        except BaseException:
            _close(conn)
            raise
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
