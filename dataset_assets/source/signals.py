"""Cheap per-table change signals for the sensor: catalog and statistics
lookups plus index probes, no scans, so a tick costs the same on a table of
100k rows and one of 100M.

A table's signal is built from

- ``relations``: the identity and physical file of the table and of its
  tombstone table (oid and relfilenode of every leaf partition) plus a hash of
  their column layout. Catches TRUNCATE, a table rewrite (``ALTER ... TYPE``,
  ``VACUUM FULL``, ``CLUSTER``), a dropped and recreated table and added or
  dropped columns, none of which move the row counters.
- ``counters``: the cumulative ``n_tup_ins / n_tup_upd / n_tup_del`` of
  ``pg_stat_user_tables`` for the table and for its tombstone table. They
  count every written row (also rows written by rolled-back transactions,
  which may cause one unnecessary snapshot) and are the only signal for
  late-committing updates whose ``updated_on`` is not the newest, for deletes
  and for tombstones without an indexed ``deleted_on``. Two caveats:

  * they lag: a backend publishes its counts when its transaction ends and
    it goes idle, but at most once a second; counts it could not publish are
    published up to ~10 s later (later still under lock contention, at the
    latest when the backend exits). A change may therefore show up one tick
    late; it is never lost, because counters only grow.
  * they restart from zero on ``pg_stat_reset()`` (or a per-table reset) and
    after a crash (a clean restart keeps them). A reset alone is not a
    change (see :meth:`ChangeSignal.changed_since`), but a change that only
    the counters saw and that happened in the window between the last tick
    and the reset is lost with them (until the table changes again).

- ``maxima``: ``max(updated_on)`` of the table and ``max(deleted_on)`` of the
  tombstone table, each read ONLY if a valid, non-partial btree index leads
  with that column (then the plan is ``Limit -> Index Only Scan Backward``,
  a few page reads whatever the table size). They survive any statistics
  reset. A column without such an index is listed in ``unindexed`` and left
  out: scanning it would make the tick cost grow with the table. Openverse's
  tombstone tables (``deleted_image``...) have no index on ``deleted_on``;
  tombstones are then noticed through the tombstone table's counters only,
  which is exact except in that reset window. ``CREATE INDEX ON
  deleted_image (deleted_on)`` closes it for tombstones.
- ``started`` / ``stats_reset``: the postmaster start time and the
  database's statistics reset time: context for the log and the baseline,
  not a change (a counter that went down is what shows a reset).

Maintenance does not count as a change (VACUUM, ANALYZE and autovacuum move
no counter), except a table rewrite (``VACUUM FULL``, ``CLUSTER``), which
costs one unnecessary snapshot. The counters are those of the server the
sensor reads: on a hot standby they do not move with the primary's writes,
so pointed at a replica the sensor only sees ``updated_on``, relation and
schema changes; point it at the primary.

Cost: one connection (~35-50 ms with ADBC, which loads the type catalog when
it connects) and two queries (catalog and statistics rows of the configured
tables, then one index probe per indexed watermark): a few milliseconds,
independent of table size (bench/sensor_tick.py).

Timestamps are rendered with ``TimeZone=UTC`` and ``DateStyle=ISO`` so two
ticks from differently configured clients read the same text. Every
statement runs with a lock timeout: a tick that meets an ``ACCESS EXCLUSIVE``
lock (a running ``ALTER TABLE`` / ``TRUNCATE``) gives up instead of queueing
behind it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dataset_assets.tables import TableConfig
from dataset_assets.errors import SourceError
from dataset_assets.source.connect import connect, quote_ident, redact

WATERMARK = "updated_on"          # newest change of a row of the table
TOMBSTONE_WATERMARK = "deleted_on"  # newest tombstone

LOCK_TIMEOUT_MS = 2000
STATEMENT_TIMEOUT_MS = 20000


@dataclass(frozen=True)
class ChangeSignal:
    started: str
    stats_reset: str | None
    relations: str
    counters: tuple[int, ...]                       # ins, upd, del of the table, then of its tombstone table
    maxima: tuple[tuple[str, str | None], ...]      # ((column, max as text), ...): indexed watermarks only
    unindexed: tuple[str, ...] = ()                 # watermark columns left out for want of an index

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ChangeSignal:
        return cls(
            started=str(d["started"]),
            stats_reset=d.get("stats_reset"),
            relations=str(d["relations"]),
            counters=tuple(int(x) for x in d["counters"]),
            maxima=tuple((str(k), v) for k, v in d["maxima"]),
            unindexed=tuple(d.get("unindexed") or ()),
        )

    def _groups(self, old: ChangeSignal):
        """(current, old) counter triples per relation (table, tombstone table)."""
        for i in range(0, max(len(self.counters), len(old.counters)), 3):
            yield tuple(self.counters[i:i + 3]), tuple(old.counters[i:i + 3])

    def stats_were_reset(self, old: ChangeSignal) -> bool:
        """Counters of the table or its tombstone table restarted since ``old`` (a reset, a crash).

        Only a counter that went down says so. The database's ``stats_reset``
        time is no evidence: any per-table or per-function reset moves it, also
        one of an unrelated table.
        """
        return any(c < o for c, o in zip(self.counters, old.counters))

    def writes_since(self, old: ChangeSignal) -> int:
        """Row writes counted since ``old``; a relation whose counters restarted counts from zero."""
        total = 0
        for cur, prev in self._groups(old):
            if len(cur) != len(prev) or any(c < p for c, p in zip(cur, prev)):
                total += sum(cur)
            else:
                total += sum(c - p for c, p in zip(cur, prev))
        return total

    def changed_since(self, old: ChangeSignal | None) -> str | None:
        """Why the table may have changed since ``old`` was read, or None if it has not.

        Same relations and indexed maxima are required. Then the counters
        decide: equal counters are no change (also across a restart, which
        keeps them, or a reset of other tables' statistics); grown counters
        are a change; if a counter of the table (or of its tombstone table)
        went down, that relation's counters restarted from zero
        (``pg_stat_reset()``, a per-table reset, a crash) and only writes
        counted since then are a change: a reset by itself is not, and the
        caller should take this signal as the new baseline (see
        :meth:`same_state_as`). A change that only the counters saw and that
        happened between the reading of ``old`` and the reset is lost with
        them; an indexed watermark covers that window for updates
        (``updated_on``) and tombstones (``deleted_on``). A reset followed by
        exactly as many writes as had been counted before is
        indistinguishable from no change; the maxima usually tell.
        """
        if old is None:
            return "no committed snapshot yet"
        if self.relations != old.relations:
            return "table recreated, rewritten, truncated or its columns changed"
        old_max = dict(old.maxima)
        for col, value in self.maxima:
            if col in old_max and old_max[col] != value:
                return f"max({col}) moved from {old_max[col]} to {value}"
        if self.counters == old.counters:
            return None
        writes = self.writes_since(old)
        if not writes:
            return None
        if self.stats_were_reset(old):
            return f"{writes} row writes counted since the statistics were reset"
        return f"{writes} row writes counted"

    def same_state_as(self, old: ChangeSignal) -> bool:
        """Nothing changed and nothing about the reading differs either (no rebase needed)."""
        return self == old


_CATALOG_SQL = """
WITH wanted(name, ord) AS (SELECT * FROM unnest($1::text[]) WITH ORDINALITY),
resolved AS (
  SELECT w.ord, w.name, c.oid
  FROM wanted w
  LEFT JOIN LATERAL (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = w.name AND c.relkind IN ('r', 'p') AND n.nspname = ANY (current_schemas(false))
    ORDER BY array_position(current_schemas(false), n.nspname::name) LIMIT 1
  ) c ON true
)
SELECT r.name,
       r.oid IS NOT NULL,
       coalesce(r.oid::regclass::text, ''),
       coalesce((SELECT string_agg(l::int8::text || ':' || coalesce(pg_relation_filenode(l), 0)::text, ',' ORDER BY l::int8)
                 FROM unnest(lv.relids) l), ''),
       coalesce((SELECT md5(string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text,
                                       ',' ORDER BY a.attnum))
                 FROM pg_attribute a WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped), ''),
       coalesce(st.ins, 0)::int8, coalesce(st.upd, 0)::int8, coalesce(st.del, 0)::int8,
       coalesce((SELECT string_agg(DISTINCT a.attname::text, ',')
                 FROM pg_index i
                 JOIN pg_class ic ON ic.oid = i.indexrelid
                 JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                 WHERE i.indrelid = r.oid AND i.indisvalid AND i.indpred IS NULL), ''),
       pg_postmaster_start_time()::text,
       (SELECT stats_reset::text FROM pg_stat_database WHERE datname = current_database())
FROM resolved r
-- the table itself, or the leaf partitions of a partitioned table
LEFT JOIN LATERAL (
  SELECT array_agg(x.relid ORDER BY x.relid::int8) AS relids
  FROM (SELECT r.oid AS relid UNION SELECT p.relid::oid FROM pg_partition_tree(r.oid) p WHERE p.isleaf) x
  WHERE x.relid IS NOT NULL
    AND (SELECT relkind FROM pg_class WHERE oid = x.relid) = 'r'
) lv ON true
LEFT JOIN LATERAL (
  SELECT sum(s.n_tup_ins) AS ins, sum(s.n_tup_upd) AS upd, sum(s.n_tup_del) AS del
  FROM pg_stat_user_tables s WHERE s.relid = ANY (lv.relids)
) st ON true
ORDER BY r.ord
"""


@dataclass(frozen=True)
class _Rel:
    found: bool
    regclass: str
    files: str
    columns: str
    counters: tuple[int, int, int]
    indexed: frozenset[str]


def read_signals(uri: str, tables: list[TableConfig]) -> dict[str, ChangeSignal]:
    """The change signal of every table in ``tables`` that exists (missing tables are left out).

    Two round trips whatever the number of tables: one catalog/statistics
    query, one query of the indexed maxima.
    """
    names: list[str] = []
    for cfg in tables:
        names.append(cfg.name)
        if cfg.tombstone_table:
            names.append(cfg.tombstone_table)
    if not names:
        return {}
    conn = connect(uri)
    try:
        cur = conn.cursor()
        try:
            for setting in ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'",
                            f"SET lock_timeout = {LOCK_TIMEOUT_MS}", f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}",
                            "SET application_name = 'dataset_assets change sensor'"):
                cur.execute(setting)
            cur.execute(_CATALOG_SQL, parameters=(names,))
            rows = cur.fetchall()
            rels: dict[str, _Rel] = {}
            started, stats_reset = "", None
            for name, found, regclass, files, columns, ins, upd, dele, indexed, started, stats_reset in rows:  # noqa: B007 (the last row's started/stats_reset are read after the loop)
                rels[name] = _Rel(bool(found), regclass, files, columns, (int(ins), int(upd), int(dele)),
                                  frozenset(x for x in (indexed or "").split(",") if x))
            # which watermarks can be read from an index, in one query
            probes: list[tuple[str, str, str]] = []  # (table, column, expression)
            plan: dict[str, list[tuple[str, str | None]]] = {}
            unindexed: dict[str, list[str]] = {}
            for cfg in tables:
                main = rels.get(cfg.name)
                if main is None or not main.found:
                    continue
                plan[cfg.name] = []
                unindexed[cfg.name] = []
                pairs = [(main, WATERMARK)]
                tomb = rels.get(cfg.tombstone_table) if cfg.tombstone_table else None
                if tomb is not None and tomb.found:
                    pairs.append((tomb, TOMBSTONE_WATERMARK))
                for rel, col in pairs:
                    if col in rel.indexed:
                        probes.append((cfg.name, col, f"(SELECT max({quote_ident(col)}) FROM {rel.regclass})::text"))
                    else:
                        unindexed[cfg.name].append(f"{rel.regclass}.{col}")
            values: list = []
            if probes:
                cur.execute("SELECT " + ", ".join(expr for _, _, expr in probes))
                values = list(cur.fetchone())
            for (table, col, _), value in zip(probes, values):
                plan[table].append((col, value))
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - the driver raises several types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if "lock timeout" in first or "canceling statement" in first:
                raise SourceError(f"Reading change signals from {redact(uri)} timed out behind a lock or a slow query ({first}); the next tick retries.") from None
            raise SourceError(f"Reading change signals from {redact(uri)} failed: {redact(first)}") from None
    finally:
        conn.close()
    out: dict[str, ChangeSignal] = {}
    for cfg in tables:
        if cfg.name not in plan:
            continue
        main = rels[cfg.name]
        tomb = rels.get(cfg.tombstone_table) if cfg.tombstone_table else None
        tomb_found = tomb is not None and tomb.found
        relations = f"{main.files}/{main.columns}"
        if cfg.tombstone_table:
            relations += f";{tomb.files}/{tomb.columns}" if tomb_found else ";-"
        out[cfg.name] = ChangeSignal(
            started=started,
            stats_reset=stats_reset,
            relations=relations,
            counters=main.counters + (tomb.counters if tomb_found else (0, 0, 0)),
            maxima=tuple(plan[cfg.name]),
            unindexed=tuple(unindexed[cfg.name]),
        )
    return out

