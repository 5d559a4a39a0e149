"""What to read for one table: columns, filters, and the ctid ranges workers copy.

Ranges follow the physical order of the heap (``ctid`` ranges are TID Range
Scans since PG 14), so every page is read exactly once and sequentially;
ranges of a random uuid primary key would turn into random heap access
(measured: 2-3x slower for many small ranges, see bench/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

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
        if catalog.find_table(cur, cfg.tombstone_table) is None:
            raise UserError(
                f"The tombstone table {cfg.tombstone_table!r} configured for {cfg.name} does not exist; "
                f"create it or set exclude_tombstoned: false for {cfg.name}."
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


def _row_key(cfg: TableConfig, info: catalog.TableInfo) -> str | None:
    """The column that names a row in messages about its values, if the table has one."""
    try:
        return primary_key(cfg, info)
    except UserError:
        return None


def plan_table(cur, cfg: TableConfig, workers: int) -> TablePlan:
    info = catalog.describe(cur, cfg.name)
    schema = table_schema(info, cfg.columns, key=_row_key(cfg, info))
    filters, desc = build_filters(cfg, info, cur)
    check_array_shapes(cur, schema, filters)  # before any data moves (types.py)
    pages = catalog.relation_pages(cur, info.oid, info.block_size)
    est = catalog.estimated_rows(cur, info.oid)
    return TablePlan(cfg, info, schema, filters, desc, pages, est, split_pages(pages, 2 * max(1, workers)))


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
