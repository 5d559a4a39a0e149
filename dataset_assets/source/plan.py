"""What to read for one table: columns, filters, and the ctid ranges workers copy.

Ranges follow the physical order of the heap (``ctid`` ranges are TID Range
Scans since PG 14), so every page is read exactly once and sequentially;
ranges of a random uuid primary key would turn into random heap access
(measured: 2-3x slower for many small ranges, see bench/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dataset_assets.tables import TableConfig
from dataset_assets.errors import UserError
from dataset_assets.source import catalog
from dataset_assets.source.types import TableSchema, check_array_shapes, table_schema
from dataset_assets.source.connect import quote_ident


@dataclass(frozen=True)
class TablePlan:
    config: TableConfig
    info: catalog.TableInfo
    schema: TableSchema
    filters: tuple[str, ...]            # SQL predicates over alias t
    filter_description: dict
    pages: int
    estimated_rows: int | None
    ranges: tuple[tuple[int | None, int | None], ...]   # [lo, hi) in heap pages; None = open
    identity: dict = field(default_factory=dict)  # where the rows come from (source_identity, see plan_table)

    def base_sql(self) -> str:
        cols = ", ".join(f"t.{quote_ident(c)}" for c in self.schema.names)
        return f"SELECT {cols} FROM {quote_ident(self.info.name)} AS t"

    def where(self, extra: list[str] | None = None) -> str:
        preds = list(self.filters) + list(extra or [])
        return (" WHERE " + " AND ".join(preds)) if preds else ""

    def range_sql(self, lo: int | None, hi: int | None) -> str:
        return self.base_sql() + self.where(ctid_preds(lo, hi))

    def count_sql(self) -> str:
        return f"SELECT count(*) FROM {quote_ident(self.info.name)} AS t" + self.where()


def ctid_preds(lo: int | None, hi: int | None) -> list[str]:
    """Predicates of the heap pages ``[lo, hi)``; None leaves that end open."""
    preds = []
    if lo is not None:
        preds.append(f"t.ctid >= '({int(lo)},0)'::tid")
    if hi is not None:
        preds.append(f"t.ctid < '({int(hi)},0)'::tid")
    return preds


def build_filters(cfg: TableConfig, info: catalog.TableInfo, cur) -> tuple[tuple[str, ...], dict]:
    preds: list[str] = []
    desc: dict = {}
    if cfg.exclude_removed and info.column("removed_from_source") is not None:
        preds.append("t.removed_from_source IS NOT TRUE")
        desc["exclude_removed_from_source"] = True
    if cfg.exclude_tombstoned and cfg.tombstone_table:
        oid = catalog.find_table(cur, cfg.tombstone_table)
        if oid is None:
            raise UserError(
                f"The tombstone table {cfg.tombstone_table!r} configured for {cfg.name} does not exist; "
                f"create it or set exclude_tombstoned: false for {cfg.name}."
            )
        if oid == info.oid:  # every row would be its own tombstone: an empty release
            raise UserError(
                f"The tombstone table {cfg.tombstone_table!r} configured for {cfg.name} is {cfg.name} itself, so every row "
                f"would count as deleted; set tombstone_table to the table that holds the deleted rows' keys, or set "
                f"exclude_tombstoned: false for {cfg.name}."
            )
        pk = quote_ident(primary_key(cfg, info))
        preds.append(f"NOT EXISTS (SELECT 1 FROM {quote_ident(cfg.tombstone_table)} AS d WHERE d.{pk} = t.{pk})")
        desc["exclude_tombstoned"] = cfg.tombstone_table
    return tuple(preds), desc


def primary_key(cfg: TableConfig, info: catalog.TableInfo) -> str:
    if info.column(cfg.primary_key) is not None:
        return cfg.primary_key
    if len(info.primary_key) == 1:
        return info.primary_key[0]
    raise UserError(f"Table {info.name} has no single-column primary key {cfg.primary_key!r}; set primary_key in the table configuration.")


def plan_table(cur, cfg: TableConfig, workers: int, cluster: dict | None = None) -> TablePlan:
    """Everything about reading ``cfg``'s table, checked before any data moves: the key (which
    must exist and be unique and non-null, :func:`check_key`), the schema, the filters, the heap
    ranges and the identity of the source (``cluster``: :func:`catalog.cluster_identity`)."""
    info = catalog.describe(cur, cfg.name)
    key = primary_key(cfg, info)  # a table without a usable key fails here, not after the rows are read
    schema = table_schema(info, cfg.columns, key=key)
    filters, desc = build_filters(cfg, info, cur)
    check_key(cur, info, key)
    check_array_shapes(cur, schema, filters)  # before any data moves (types.py)
    pages = catalog.relation_pages(cur, info.oid, info.block_size)
    est = catalog.estimated_rows(cur, info.oid)
    identity = source_identity(cur, info, schema.names, key, desc.get("exclude_tombstoned"), cluster)
    return TablePlan(cfg, info, schema, filters, desc, pages, est, split_pages(pages, 2 * max(1, workers)), identity)


def check_key(cur, info: catalog.TableInfo, key: str) -> None:
    """The key names every row: unique and non-null. Proven by the catalog for a primary key (or
    a unique index on a NOT NULL column), at no cost; otherwise one aggregate query over the
    table in the caller's snapshot. One sentence if it is not."""
    unique, not_null = catalog.unique_not_null(cur, info, key)
    if unique and not_null:
        return
    k = f"t.{quote_ident(key)}"
    dup_sql = "0::int8" if unique else f"count({k}) - count(DISTINCT {k})"
    null_sql = "0::int8" if not_null else f"count(*) FILTER (WHERE {k} IS NULL)"
    cur.execute(f"SELECT {dup_sql}, {null_sql} FROM {quote_ident(info.name)} AS t")
    dups, nulls = (int(v) for v in cur.fetchone())
    if dups or nulls:
        what = " and ".join(x for x in (f"{nulls} NULL value(s)" if nulls else "", f"{dups} duplicate value(s)" if dups else "") if x)
        raise UserError(
            f"The key column {key} of table {info.name} holds {what}, so it cannot name each row; nothing was exported: "
            f"make it unique and NOT NULL (a primary key) or set primary_key for {info.name} in tables.yaml to a column that is."
        )


def source_identity(cur, info: catalog.TableInfo, columns, key: str, tombstone: str | None, cluster: dict | None) -> dict:
    """Where the rows come from, recorded in the manifest: the cluster (system identifier,
    timeline; None when unknown), the database (name, oid), the table's and the tombstone
    table's oid and relfilenode, and each exported column's attnum, name and type. Shards of an
    earlier snapshot are reused only when all of it is the same (``fingerprints.reuse_blocker``):
    ``(key, xmin)`` stays the same across a restore, a failover or ``DROP COLUMN c; ADD COLUMN c``."""
    relations = {info.name: catalog.relation_identity(cur, info.oid)}
    if tombstone:
        oid = catalog.find_table(cur, tombstone)
        relations[tombstone] = catalog.relation_identity(cur, oid) if oid is not None else None
    names = list(columns) + ([key] if key not in columns else [])
    cols = [[c.attnum, c.name, c.pg_type, c.type_oid] for c in (info.column(n) for n in names) if c is not None]
    base = dict(cluster) if cluster else {"system_identifier": None, "timeline": None, "database": None, "database_oid": None}
    return {**base, "relations": relations, "columns": cols}


def split_pages(pages: int, parts: int) -> tuple[tuple[int | None, int | None], ...]:
    """Up to ``parts`` ranges of at least 64 pages; small tables get one range.

    The export asks for two ranges per worker, for balance. The first range is
    open below and the last open above, so the ranges cover the whole heap
    whatever its size when the reads run.
    """
    n = max(1, min(max(1, parts), pages // 64))
    step = -(-pages // n) if pages else 1
    bounds = [i * step for i in range(1, n)]
    los: list[int | None] = [None] + bounds
    his: list[int | None] = bounds + [None]
    return tuple(zip(los, his))
