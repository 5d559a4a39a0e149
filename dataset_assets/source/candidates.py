"""What changed in a table since an earlier Postgres snapshot, asked without reading what did not.

A refresh (``export/refresh.py``) builds on the previous release of a table, which records
the Postgres snapshot it was read in (``pg_current_snapshot()``: ``xmin:xmax:xip``). Every
row version written after that snapshot carries a newer ``xmin``; a row version whose
``xmin`` precedes the snapshot's ``xmin`` was committed before the snapshot and so is in
the previous release (or was left out by its filters). So:

* **candidates**: rows with ``age(xmin) <= age(<previous xmin>)``: inserted or updated
  since (plus the few committed between the previous snapshot's ``xmin`` and its start: a
  superset, never a miss; a subtransaction's xid is always newer than its parent's, so none
  hides in the previous snapshot's in-progress list). The only rows shipped, with the
  filters' verdict as an extra column. ``age()`` is 32-bit modular: valid while the previous
  snapshot is fewer than 2^31 transactions old (:func:`xid_distance` is checked first; rows
  frozen before 9.4 have the special xmin 2, whose age is 2^31-1: never a candidate, as
  such a row cannot have changed).
* **unchanged rows**: counted only, as every row of the table less the candidates read. The
  candidates' own scans count them: a heap scan counts every tuple visible in its snapshot that
  it visits, whatever the condition on it, in the backend's statistics of its transaction
  (:func:`scanned_sql`, read by each reading connection before and after its ranges), so no
  second scan is needed (the filters scan no other copy of the table: a tombstone table that is
  the table itself is refused, ``plan.build_filters``); where that counter is off
  (``track_counts``) or cannot be right (fewer than the candidates read) a ``count(*)`` counts them (1M rows: 0.13-0.20 s of server CPU,
  a fifth to a third of a 1 % refresh's). The count tells whether rows were deleted, and how many. Rows
  tombstoned since and gone from the table (upstream's way to delete) are deleted rows; when
  they are as many as the count says, they are all of them; otherwise the keys of the
  unchanged rows are read, and the deleted ones are the previous release's keys among neither.
* **tombstones**: tombstone rows added since are read by key (their rows leave the
  release); tombstone rows removed since are seen by the count of the older ones, and then
  the refresh does not trust the previous release (``export/refresh.py``).

Every value here comes from a manifest and is validated as an integer before it becomes
SQL text (:func:`parse_txid_snapshot`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dataset_assets.source.connect import quote_ident
from dataset_assets.source.plan import TablePlan, ctid_preds, primary_key

KEEP_COLUMN = "__dataset_assets_keep"
_TXID = re.compile(r"^(\d{1,20}):(\d{1,20}):((?:\d{1,20})(?:,\d{1,20})*)?$")
XID_LIMIT = 1 << 30  # a previous snapshot older than this many transactions is not built on


@dataclass(frozen=True)
class TxidSnapshot:
    xmin: int   # full 64-bit transaction ids, as pg_current_snapshot() gives them
    xmax: int

    @property
    def xmin32(self) -> int:
        return self.xmin & 0xFFFFFFFF


def parse_txid_snapshot(text) -> TxidSnapshot:
    """``xmin:xmax:xip`` as integers; ValueError when malformed (the caller then does not build on it)."""
    m = _TXID.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"malformed Postgres snapshot {text!r}")
    xmin, xmax = int(m.group(1)), int(m.group(2))
    if not (3 <= xmin <= xmax < (1 << 63)):
        raise ValueError(f"implausible Postgres snapshot {text!r}")
    return TxidSnapshot(xmin, xmax)


def xid_distance(cur, previous: TxidSnapshot) -> int:
    """How many transactions the current snapshot is past ``previous``'s xmin (64-bit, exact)."""
    cur.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8")
    return int(cur.fetchone()[0]) - previous.xmin


def _is_new(alias: str, previous: TxidSnapshot) -> str:
    # the bound is a subquery: evaluated once per statement (an InitPlan), where age() of the
    # constant, a STABLE function, would be called again for every row (1M rows: 255 against
    # 288 ms of server CPU, count(*) with the condition, best of 5)
    return f"age({alias}.xmin) <= (SELECT age('{int(previous.xmin32)}'::xid))"


def _keep(plan: TablePlan) -> str | None:
    return f"({' AND '.join(plan.filters)})" if plan.filters else None


def read_sql(plan: TablePlan, previous: TxidSnapshot | None, lo: int | None, hi: int | None) -> str:
    """Rows of the heap pages ``[lo, hi)`` with the filters' verdict (``KEEP_COLUMN``) as the last
    column: every row (``previous`` None: a first export, or a refresh that compares content) or
    the candidates since ``previous``."""
    cols = [f"t.{quote_ident(c)}" for c in plan.schema.names]
    keep = _keep(plan)
    cols.append(f"{keep} AS {quote_ident(KEEP_COLUMN)}" if keep else f"true AS {quote_ident(KEEP_COLUMN)}")
    preds = ctid_preds(lo, hi)
    if previous is not None:
        preds.append(_is_new("t", previous))
    where = (" WHERE " + " AND ".join(preds)) if preds else ""
    return f"SELECT {', '.join(cols)} FROM {quote_ident(plan.info.name)} AS t{where}"


def scanned_sql(plan: TablePlan) -> str:
    """The tuples this transaction's scans of the table returned so far (every row of its snapshot
    that a scan visited: the ``ctid`` range scans count the rows they did not ship too), and
    whether that counter is kept (``track_counts``). The backend keeps its transaction's counts
    until the transaction ends; each reading connection reads this before and after its ranges."""
    name = quote_ident(plan.info.name).replace("'", "''")
    return (f"SELECT pg_stat_get_xact_tuples_returned('{name}'::regclass), "
            f"current_setting('track_counts')::bool")


def all_count_sql(plan: TablePlan) -> str:
    """Rows of the table, filters not applied (less the candidates: those older than the previous snapshot)."""
    return f"SELECT count(*) FROM {quote_ident(plan.info.name)}"


def unchanged_keys_sql(plan: TablePlan, previous: TxidSnapshot) -> str:
    """The keys of those rows; read only when the count shows rows were deleted."""
    key = quote_ident(primary_key(plan.config, plan.info))
    return f"SELECT t.{key} FROM {quote_ident(plan.info.name)} AS t WHERE NOT ({_is_new('t', previous)})"


def tombstone_table(plan: TablePlan) -> str | None:
    return plan.filter_description.get("exclude_tombstoned")


def tombstone_count_sql(plan: TablePlan, previous: TxidSnapshot | None) -> str:
    """All tombstone rows, and those older than ``previous`` (0 without one)."""
    older = f"count(*) FILTER (WHERE NOT ({_is_new('d', previous)}))" if previous is not None else "0::int8"
    return f"SELECT count(*), {older} FROM {quote_ident(tombstone_table(plan))} AS d"


def tombstone_record_sql(plan: TablePlan, own: TxidSnapshot) -> str:
    """What a snapshot records of its tombstones for the next refresh: how many are older than its
    own xmin, and how many are not (committed while an older transaction was open: their keys are
    recorded, :func:`tombstone_band_sql`, since the next refresh cannot tell them from new ones)."""
    return (f"SELECT count(*) FILTER (WHERE NOT ({_is_new('d', own)})), count(*) FILTER (WHERE {_is_new('d', own)}) "
            f"FROM {quote_ident(tombstone_table(plan))} AS d")


def tombstone_band_sql(plan: TablePlan, own: TxidSnapshot) -> str:
    key = quote_ident(primary_key(plan.config, plan.info))
    return f"SELECT DISTINCT d.{key} FROM {quote_ident(tombstone_table(plan))} AS d WHERE {_is_new('d', own)}"


def new_tombstones_sql(plan: TablePlan, previous: TxidSnapshot) -> str:
    """Keys tombstoned since ``previous``."""
    key = quote_ident(primary_key(plan.config, plan.info))
    return f"SELECT DISTINCT d.{key} FROM {quote_ident(tombstone_table(plan))} AS d WHERE {_is_new('d', previous)}"


def deleted_tombstoned_sql(plan: TablePlan, previous: TxidSnapshot) -> str:
    """Keys tombstoned since ``previous`` whose rows are gone from the table: deletions found
    without listing the table's keys (upstream moves a row to the tombstone table, then deletes
    it). A lookup by key per new tombstone (the table's primary key index)."""
    key = quote_ident(primary_key(plan.config, plan.info))
    return (f"SELECT DISTINCT d.{key} FROM {quote_ident(tombstone_table(plan))} AS d WHERE {_is_new('d', previous)} "
            f"AND NOT EXISTS (SELECT 1 FROM {quote_ident(plan.info.name)} AS t WHERE t.{key} = d.{key})")


def sample_sql(plan: TablePlan, columns: list[str], percent: float) -> str:
    """A page sample of ``columns``, for choosing shard boundaries (a first export)."""
    cols = ", ".join(f"t.{quote_ident(c)}" for c in columns)
    pct = min(100.0, max(0.0001, float(percent)))
    return f"SELECT {cols} FROM {quote_ident(plan.info.name)} AS t TABLESAMPLE SYSTEM ({pct:.6f}) REPEATABLE (7)"
