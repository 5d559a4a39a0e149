"""Cheap per-table change signals for the sensor: no full scans, cost
independent of table size.

A signal is built from
- the cumulative row counters of ``pg_stat_user_tables`` (inserts, updates,
  deletes) of the table and of its tombstone table: exact and free, but reset
  by ``pg_stat_reset()`` or a crash;
- ``max(updated_on)`` (an index lookup) and the tombstones' newest
  ``deleted_on``, which survive any reset;
- the stats epoch (postmaster start time and the database's stats reset time),
  which says whether the counters of two signals can be compared at all.

Two signals of the same epoch differ iff a counter or a maximum moved. Across
epochs the counters are not comparable; the maxima and the live-row estimate
decide, so a reset or restart neither hides an update that bumped
``updated_on`` nor triggers a snapshot by itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import TableConfig
from . import catalog
from .source import connect, quote_ident


@dataclass(frozen=True)
class ChangeSignal:
    epoch: str
    inserts: int
    updates: int
    deletes: int
    live_rows: int
    max_updated_on: str | None
    max_deleted_on: str | None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ChangeSignal":
        return cls(**d)

    def differs_from(self, old: "ChangeSignal | None") -> bool:
        if old is None:
            return True
        if self.max_updated_on != old.max_updated_on or self.max_deleted_on != old.max_deleted_on:
            return True
        if self.epoch == old.epoch:
            return (self.inserts, self.updates, self.deletes) != (old.inserts, old.updates, old.deletes)
        return self.live_rows != old.live_rows


_STATS_SQL = """
SELECT coalesce(sum(n_tup_ins), 0)::int8, coalesce(sum(n_tup_upd), 0)::int8, coalesce(sum(n_tup_del), 0)::int8,
       coalesce(sum(n_live_tup) FILTER (WHERE relid = $1::oid), 0)::int8
FROM pg_stat_user_tables WHERE relid = ANY (ARRAY[$1::oid, $2::oid])
"""


def read_signals(uri: str, tables: list[TableConfig]) -> dict[str, ChangeSignal]:
    conn = connect(uri)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_postmaster_start_time()::text || '|' || coalesce(pg_stat_get_db_stat_reset_time("
                    "(SELECT oid FROM pg_database WHERE datname = current_database()))::text, '')")
        epoch = cur.fetchone()[0]
        out = {}
        for cfg in tables:
            oid = catalog.find_table(cur, cfg.name)
            if oid is None:
                continue
            tomb = catalog.find_table(cur, cfg.tombstone_table) if cfg.tombstone_table else None
            cur.execute(_STATS_SQL, parameters=(oid, tomb or 0))
            ins, upd, dele, live = cur.fetchone()
            out[cfg.name] = ChangeSignal(
                epoch=epoch, inserts=int(ins), updates=int(upd), deletes=int(dele), live_rows=int(live),
                max_updated_on=_max(cur, cfg.name, "updated_on"),
                max_deleted_on=_max(cur, cfg.tombstone_table, "deleted_on") if tomb else None,
            )
        return out
    finally:
        conn.close()


def _max(cur, table: str, column: str) -> str | None:
    cur.execute("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped",
                parameters=(quote_ident(table), column))
    if cur.fetchone() is None:
        return None
    cur.execute(f"SELECT max({quote_ident(column)})::text FROM {quote_ident(table)}")
    return cur.fetchone()[0]
