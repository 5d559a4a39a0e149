"""Stable chunks of a table, for incremental snapshots.

A chunk is a range of the primary key ``[b_i, b_{i+1})``; the boundaries are
chosen once (from quantiles of the key) and then kept in every later manifest,
so a chunk means the same rows' keys in every snapshot. Each chunk's
*fingerprint* is computed inside Postgres, in the export's shared snapshot:
``count(*)`` and ``sum(hash(key, xmin))`` over every row of the chunk, and,
when tombstoned rows are excluded, the same over the chunk's rows of the
tombstone table. ``xmin`` changes whenever a row is inserted or updated (so a
row that becomes ``removed_from_source`` changes it too), a delete changes the
count and the sum, and so does a tombstone added or removed; any change to a
chunk's exported rows therefore changes its fingerprint. A chunk whose
fingerprint is unchanged has exactly the rows it had, so its shard is reused
byte for byte.

The row filters are deliberately left out of the scan: evaluating
``removed_from_source`` means decoding every row up to that column, and the
anti-join probes the tombstones once per row; together that was 40 % of the
scan (bench/README.md). A changed chunk is then read whole, with the filters'
verdict as an extra column, so the rows streamed must equal the fingerprint's
``count(*)`` (each chunk read's own count check; the rows published are checked
against a ``count(*)`` of their own as well, export/run.py); the client drops the
rows the filters exclude.

Values read back from the store (the boundaries, from the previous manifest) never become
SQL text: they reach Postgres as a bind parameter, a JSON document set with
``set_config('dataset_assets.bounds', $1, false)`` (:func:`execute`), which the queries
read with ``current_setting`` and cast to the key's type (range bounds as stable
expressions, which the planner folds to estimate them as it would literals; the
``width_bucket`` array in a scalar subquery, evaluated once per query). A bind parameter of
the query itself is not possible: the driver reads results through ``COPY (query) TO
STDOUT``, which takes none, and without COPY it would hold a whole result in memory.

Shards are reused only from a base whose recorded source identity (``plan.source_identity``)
is the same: cluster, timeline, database, relation files and column identity
(:func:`reuse_blocker`).

Caveats (documented in the README): a logical restore (pg_dump/pg_restore,
VACUUM FULL keeps xmin) gives every row a new xmin, which only costs one full
re-export; xid wraparound cannot produce a false match within a snapshot's
lifetime in practice (it would need the same row rewritten with the same xid).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from dataset_assets.source.plan import TablePlan, primary_key
from dataset_assets.source.connect import quote_ident

DEFAULT_CHUNK_ROWS = 1_000
MAX_CHUNKS = 4_000


@dataclass
class Chunking:
    key: str
    key_type: str
    boundaries: list[str]         # text form of the key; chunk i = [b[i-1], b[i])
    fingerprints: dict[int, str]  # chunk -> "rows:sum"
    basis: str                    # what the shards depend on besides the rows
    base_snapshot: str | None = None
    changed_chunks: int | None = None
    reused_files: int = 0
    not_reused: str | None = None  # why an earlier snapshot with the same basis was not reused

    def as_dict(self) -> dict:
        return {
            "key": self.key, "key_type": self.key_type, "boundaries": self.boundaries,
            "fingerprints": {str(k): v for k, v in sorted(self.fingerprints.items())},
            "basis": self.basis, "base_snapshot": self.base_snapshot,
            "changed_chunks": self.changed_chunks, "reused_files": self.reused_files,
            "not_reused": self.not_reused,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Chunking":
        """From a stored manifest; anything malformed is a ValueError (the caller uses no base)."""
        try:
            boundaries = d["boundaries"]
            if not isinstance(boundaries, list) or not all(isinstance(b, str) for b in boundaries):
                raise ValueError("boundaries are not a list of strings")
            fps = {int(k): v for k, v in d["fingerprints"].items()}
            if not all(isinstance(v, str) for v in fps.values()):
                raise ValueError("fingerprints are not strings")
            return cls(key=d["key"], key_type=d["key_type"], boundaries=list(boundaries), fingerprints=fps,
                       basis=d["basis"], base_snapshot=d.get("base_snapshot"), changed_chunks=d.get("changed_chunks"),
                       reused_files=d.get("reused_files", 0), not_reused=d.get("not_reused"))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"malformed chunking record ({exc})") from None


_IDENTITY_PARTS = (
    ("system_identifier", "the cluster's system identifier"),
    ("timeline", "the cluster's timeline"),
)


def reuse_blocker(old: dict | None, new: dict) -> str | None:
    """Why shards recorded with source identity ``old`` must not be reused for a read of
    ``new`` (``plan.source_identity``), or None when they may. Unknown counts as different."""
    if not old:
        return "the earlier snapshot records no source identity"
    for key, what in _IDENTITY_PARTS:
        if new.get(key) is None or old.get(key) is None:
            return f"{what} is unknown (reading it needs superuser or pg_monitor)"
        if new[key] != old[key]:
            return f"{what} changed from {old[key]} to {new[key]} (another cluster, a restore, a failover or a point-in-time recovery)"
    if (old.get("database"), old.get("database_oid")) != (new.get("database"), new.get("database_oid")) or new.get("database_oid") is None:
        return (f"the database changed from {old.get('database')} (oid {old.get('database_oid')}) to "
                f"{new.get('database')} (oid {new.get('database_oid')})")
    old_rel, new_rel = old.get("relations") or {}, new.get("relations") or {}
    for name in sorted(new_rel.keys() | old_rel.keys()):
        if new_rel.get(name) is None or old_rel.get(name) != new_rel.get(name):
            return (f"table {name} was recreated, truncated or rewritten (oid/relfilenode {old_rel.get(name)} "
                    f"then, {new_rel.get(name)} now)")
    if old.get("columns") != new.get("columns"):
        return "the columns were dropped and added again or changed (attnum, name and type per column differ)"
    return None


def basis(plan: TablePlan, parquet: dict) -> str:
    """Everything besides the rows that shapes a shard: schema, filters, key, parquet settings."""
    payload = {"schema": plan.schema.describe(), "filters": list(plan.filters), "key": key_column(plan).name,
               "parquet": parquet, "format": 3}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def key_column(plan: TablePlan):
    return plan.info.column(primary_key(plan.config, plan.info))


def choose_boundaries(cur, plan: TablePlan, chunk_rows: int = DEFAULT_CHUNK_ROWS, max_chunks: int = MAX_CHUNKS) -> list[str]:
    """Quantiles of the key so that chunks hold about ``chunk_rows`` rows."""
    col = key_column(plan)
    rows = plan.estimated_rows
    if rows is None:
        cur.execute(plan.count_sql())
        rows = int(cur.fetchone()[0])
    n = max(1, min(max_chunks, -(-rows // max(1, chunk_rows))))
    if n == 1:
        return []
    k = quote_ident(col.name)
    cur.execute(
        f"SELECT percentile_disc(array(SELECT g::float8 / {n} FROM generate_series(1, {n - 1}) g)) "
        f"WITHIN GROUP (ORDER BY t.{k})::text[] FROM {quote_ident(plan.info.name)} AS t"
    )
    values = cur.fetchone()[0] or []
    return list(dict.fromkeys(v for v in values if v is not None))  # ascending already


def reference_xid(cur) -> int:
    """The transaction id ``age()`` counts from in ``cur``'s transaction (stable within it)."""
    cur.execute("SELECT age('3'::xid)")
    return (3 + int(cur.fetchone()[0])) % (1 << 32)


def _hash_expr(col, reference: int) -> str:
    """hash(key, xmin). ``xmin`` is recovered as ``reference - age(xmin)``: the same number for
    the same xmin in every transaction (until that row's xmin is 2^31 transactions old, where
    it moves by 2^32 once: one chunk re-read, never a missed change), and cheaper than
    ``xmin::text::int8`` (bench/README.md). Rows frozen before Postgres 9.4 carry the special
    xmin 2, whose ``age`` is 2^31-1 in every transaction: their hash is NULL, so ``sum`` leaves
    them out and only ``count(*)`` sees them (such a row cannot change without a new xmin)."""
    k = f"t.{quote_ident(col.name)}"
    seed = f"({reference}::int8 - nullif(age(t.xmin), 2147483647))"
    if col.typname == "uuid":
        return f"uuid_hash_extended({k}, {seed})"
    if col.typname in ("int2", "int4", "int8"):
        return f"hashint8extended({k}::int8, {seed})"
    return f"hashtextextended({k}::text, {seed})"


BOUNDS_SETTING = "dataset_assets.bounds"
_BOUNDS = f"current_setting('{BOUNDS_SETTING}')::json"


@dataclass(frozen=True)
class Query:
    """SQL whose store-derived values travel apart from it: ``bounds`` (a JSON object) is bound
    to the setting the SQL reads, by :func:`execute`, before the SQL runs."""

    sql: str
    bounds: dict

    def __str__(self) -> str:
        return self.sql


def execute(cur, query) -> None:
    """Run ``query`` (SQL text, or a :class:`Query` whose values are bound first) on ``cur``."""
    if isinstance(query, Query):
        cur.execute("SELECT set_config($1, $2, false)",
                    parameters=(BOUNDS_SETTING, json.dumps(query.bounds, ensure_ascii=False)))
        cur.fetchall()
        query = query.sql
    cur.execute(query)


def _bound(col, name: str) -> str:
    """The bound value ``name`` as the key's type. A stable expression, not a subquery: the
    planner folds it to estimate the range (so a chunk is an index range scan, as with a
    literal), and an index scan evaluates it once."""
    return f"(({_BOUNDS} ->> '{name}')::{col.pg_type})"


def _bound_array(col) -> str:
    """The bound list ``cuts`` as an array of the key's type; one evaluation per query."""
    return (f"(SELECT array_agg(e.v::{col.pg_type} ORDER BY e.n) "
            f"FROM json_array_elements_text({_BOUNDS} -> 'cuts') WITH ORDINALITY AS e(v, n))")


def _bucket(col, boundaries: list[str]) -> str:
    """The chunk of each row of ``t``: where its key falls among the bound ``cuts`` (``boundaries``)."""
    if not boundaries:
        return "0"
    return f"width_bucket(t.{quote_ident(col.name)}, {_bound_array(col)})"


def usable_boundaries(cur, plan: TablePlan, boundaries: list[str]) -> bool:
    """Whether ``boundaries`` (read from a stored manifest) are values of the key's type in
    strictly ascending order, as ``width_bucket`` sees them. Run on the coordinating
    connection inside a savepoint, so a value the type refuses is an answer, not an aborted
    transaction."""
    if not boundaries:
        return True
    col = key_column(plan)
    cur.execute("SAVEPOINT dataset_assets_bounds")
    try:
        execute(cur, Query(f"SELECT coalesce(bool_and(width_bucket(e.v::{col.pg_type}, {_bound_array(col)}) = e.n), false) "
                           f"FROM json_array_elements_text({_BOUNDS} -> 'cuts') WITH ORDINALITY AS e(v, n)",
                           {"cuts": boundaries}))
        ok = bool(cur.fetchone()[0])
    except Exception:  # noqa: BLE001 - a value the key's type refuses
        cur.execute("ROLLBACK TO SAVEPOINT dataset_assets_bounds")
        ok = False
    cur.execute("RELEASE SAVEPOINT dataset_assets_bounds")
    return ok


def _fingerprint_select(plan: TablePlan, table: str, boundaries: list[str], reference: int,
                        where: list[str] | None = None) -> Query:
    """Per chunk of ``table`` (aliased t, keyed like the plan's table): (chunk, rows, sum of hashes)."""
    col = key_column(plan)
    w = (" WHERE " + " AND ".join(where)) if where else ""
    return Query(f"SELECT {_bucket(col, boundaries)} AS chunk, count(*), sum({_hash_expr(col, reference)})::text "
                 f"FROM {quote_ident(table)} AS t{w} GROUP BY 1", {"cuts": list(boundaries)})


def fingerprint_sql(plan: TablePlan, boundaries: list[str], reference: int, extra: list[str] | None = None) -> Query:
    """Over every row of the table (no filters, see the module docstring); ``extra`` narrows it
    to a part of the heap so several connections can share the scan. ``reference``: the
    connection's ``reference_xid``. Run it with :func:`execute`."""
    return _fingerprint_select(plan, plan.info.name, boundaries, reference, extra)


def tombstone_table(plan: TablePlan) -> str | None:
    """The tombstone table whose rows the export excludes, if it does."""
    return plan.filter_description.get("exclude_tombstoned")


def tombstone_fingerprint_sql(plan: TablePlan, boundaries: list[str], reference: int) -> Query:
    """The same over the plan's ``tombstone_table``."""
    return _fingerprint_select(plan, tombstone_table(plan), boundaries, reference)


def merge_fingerprints(parts: list[list[tuple]], tombstones: list[tuple] | None = None) -> dict[int, str]:
    """Counts and sums add up across parts of the heap; a chunk's tombstones are appended."""
    rows: dict[int, int] = {}
    sums: dict[int, int] = {}
    for part in parts:
        for chunk, n, total in part:
            c = int(chunk)
            rows[c] = rows.get(c, 0) + int(n)
            sums[c] = sums.get(c, 0) + int(total)
    out = {c: f"{rows[c]}:{sums[c]}" for c in rows}
    for chunk, n, total in tombstones or ():
        c = int(chunk)
        out[c] = f"{out.get(c, '0:0')}:{int(n)}:{int(total)}"
    return out


def chunk_rows(fingerprint: str) -> int:
    """Rows of the table in a chunk, from its fingerprint."""
    return int(fingerprint.split(":", 1)[0])


def _range_preds(col, boundaries: list[str], first: int, last: int) -> tuple[list[str], dict]:
    """Key predicates of chunks ``first..last``: ``[b[first-1], b[last])``, open at either end,
    and the values they read (bound, never in the SQL text)."""
    k = f"t.{quote_ident(col.name)}"
    preds, values = [], {}
    if first > 0:
        preds.append(f"{k} >= {_bound(col, 'lo')}")
        values["lo"] = boundaries[first - 1]
    if last < len(boundaries):
        preds.append(f"{k} < {_bound(col, 'hi')}")
        values["hi"] = boundaries[last]
    return preds, values


MAX_RUN = 8  # consecutive changed chunks read by one query


def runs(chunks: list[int], longest: int | None = None) -> list[list[int]]:
    """Sorted chunk numbers as runs of consecutive ones, at most ``longest`` (``MAX_RUN``)
    long: [3, 4, 5, 9] -> [[3, 4, 5], [9]]."""
    longest = longest or MAX_RUN
    out: list[list[int]] = []
    for c in sorted(chunks):
        if out and c == out[-1][-1] + 1 and len(out[-1]) < longest:
            out[-1].append(c)
        else:
            out.append([c])
    return out


KEEP_COLUMN = "__dataset_assets_keep"
CHUNK_COLUMN = "__dataset_assets_chunk"


def chunk_sql(plan: TablePlan, boundaries: list[str], first: int, last: int) -> Query:
    """Every row of the consecutive chunks ``first..last`` (one query for a run of changed
    chunks: one plan, one index range scan), so the rows each streams can be checked against
    its fingerprint's ``count(*)``. Extra last columns: the filters' verdict (``KEEP_COLUMN``;
    the client drops the rows it rejects) and, for more than one chunk, each row's chunk as an
    offset from ``first`` (``CHUNK_COLUMN``). Run it with :func:`execute`."""
    col = key_column(plan)
    preds, values = _range_preds(col, boundaries, first, last)
    where = (" WHERE " + " AND ".join(preds)) if preds else ""
    cols = [f"t.{quote_ident(c)}" for c in plan.schema.names]
    if plan.filters:
        cols.append(f"({' AND '.join(plan.filters)}) AS {quote_ident(KEEP_COLUMN)}")
    if last > first:
        cols.append(f"{_bucket(col, boundaries[first:last])} AS {quote_ident(CHUNK_COLUMN)}")
        values["cuts"] = list(boundaries[first:last])
    return Query(f"SELECT {', '.join(cols)} FROM {quote_ident(plan.info.name)} AS t{where}", values)
