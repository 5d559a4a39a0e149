"""Stable chunks of a table, for incremental snapshots.

A chunk is a range of the primary key ``[b_i, b_{i+1})``; the boundaries are
chosen once (from quantiles of the key) and then kept in every later manifest,
so a chunk means the same rows' keys in every snapshot. Each chunk's
*fingerprint* is computed inside Postgres, in the export's shared snapshot:
``count(*)`` and ``sum(hash(key, xmin))`` over the rows the export would
write (same filters). ``xmin`` changes whenever a row is inserted or updated,
and a delete (or a tombstone, or ``removed_from_source``) changes the count
and the sum, so any change to a chunk's exported rows changes its
fingerprint. A chunk whose fingerprint is unchanged has exactly the rows it
had, so its shard is reused byte for byte.

Caveats (documented in the README): a logical restore (pg_dump/pg_restore,
VACUUM FULL keeps xmin) gives every row a new xmin, which only costs one full
re-export; xid wraparound cannot produce a false match within a snapshot's
lifetime in practice (it would need the same row rewritten with the same xid).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .plan import TablePlan, primary_key
from .source import quote_ident, quote_literal

DEFAULT_CHUNK_ROWS = 2_000
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

    @property
    def count(self) -> int:
        return len(self.boundaries) + 1

    def as_dict(self) -> dict:
        return {
            "key": self.key, "key_type": self.key_type, "boundaries": self.boundaries,
            "fingerprints": {str(k): v for k, v in sorted(self.fingerprints.items())},
            "basis": self.basis, "base_snapshot": self.base_snapshot,
            "changed_chunks": self.changed_chunks, "reused_files": self.reused_files,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Chunking":
        return cls(key=d["key"], key_type=d["key_type"], boundaries=list(d["boundaries"]),
                   fingerprints={int(k): v for k, v in d["fingerprints"].items()}, basis=d["basis"],
                   base_snapshot=d.get("base_snapshot"), changed_chunks=d.get("changed_chunks"),
                   reused_files=d.get("reused_files", 0))

    def rows(self) -> int:
        return sum(int(v.split(":", 1)[0]) for v in self.fingerprints.values())


def basis(plan: TablePlan, parquet: dict) -> str:
    """Everything besides the rows that shapes a shard: schema, filters, key, parquet settings."""
    payload = {"schema": plan.schema.describe(), "filters": list(plan.filters), "key": key_column(plan).name,
               "parquet": parquet, "format": 1}
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


def _hash_expr(col) -> str:
    k = f"t.{quote_ident(col.name)}"
    seed = "t.xmin::text::int8"
    if col.typname == "uuid":
        return f"uuid_hash_extended({k}, {seed})"
    if col.typname in ("int2", "int4", "int8"):
        return f"hashint8extended({k}::int8, {seed})"
    return f"hashtextextended({k}::text, {seed})"


def _bounds_literal(col, boundaries: list[str]) -> str:
    items = ",".join('"' + b.replace("\\", "\\\\").replace('"', '\\"') + '"' for b in boundaries)
    return f"{quote_literal('{' + items + '}')}::{col.pg_type}[]"


def fingerprint_sql(plan: TablePlan, boundaries: list[str], extra: list[str] | None = None) -> str:
    """Per chunk: (chunk, rows, sum of hashes) over the rows the export writes; ``extra`` narrows
    it to a part of the heap so several connections can share the scan."""
    col = key_column(plan)
    bucket = f"width_bucket(t.{quote_ident(col.name)}, {_bounds_literal(col, boundaries)})" if boundaries else "0"
    return (f"SELECT {bucket} AS chunk, count(*), sum({_hash_expr(col)})::text "
            f"FROM {quote_ident(plan.info.name)} AS t{plan.where(extra)} GROUP BY 1")


def merge_fingerprints(parts: list[list[tuple]]) -> dict[int, str]:
    """Counts and sums add up across parts of the heap."""
    rows: dict[int, int] = {}
    sums: dict[int, int] = {}
    for part in parts:
        for chunk, n, total in part:
            c = int(chunk)
            rows[c] = rows.get(c, 0) + int(n)
            sums[c] = sums.get(c, 0) + int(total)
    return {c: f"{rows[c]}:{sums[c]}" for c in rows}


def chunk_sql(plan: TablePlan, boundaries: list[str], chunk: int) -> str:
    col = key_column(plan)
    k = f"t.{quote_ident(col.name)}"
    preds = []
    if chunk > 0:
        preds.append(f"{k} >= {quote_literal(boundaries[chunk - 1])}::{col.pg_type}")
    if chunk < len(boundaries):
        preds.append(f"{k} < {quote_literal(boundaries[chunk])}::{col.pg_type}")
    return plan.base_sql() + plan.where(preds)
