"""Table configuration: which tables are exported and how (``tables.yaml`` -> :class:`TableConfig`).

Read from ``dataset_assets/tables.yaml`` (or the file named by ``DATASET_ASSETS_TABLES``).
Documentation for each table lives in ``dataset_docs/<table>.yaml``. Imports only ``errors``
and ``settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import yaml

from dataset_assets.errors import UserError
from dataset_assets.settings import tables_file


@dataclass(frozen=True)
class TableConfig:
    name: str
    primary_key: str = "identifier"
    tombstone_table: str | None = None
    exclude_removed: bool = True
    exclude_tombstoned: bool = True
    columns: tuple[str, ...] | None = None
    profile_columns: tuple[str, ...] = field(default_factory=tuple)
    incremental: bool = True       # build on the previous snapshot (reuse what did not change)
    chunk_rows: int = 1_000        # layout chunks: rows per chunk (and so per shard) (bench/README.md)
    preview: bool = True           # show the first rows in the Dagster UI (false: no row leaves the store for the UI)
    layout: str = "chunks"         # chunks: key ranges of chunk_rows rows; clustered: shards of cluster_by ranges (export/refresh.py)
    cluster_by: tuple[str, ...] = field(default_factory=tuple)  # layout clustered: shards hold ranges of these columns, then the key
    shard_bytes: int = 256 << 20   # layout clustered: parquet bytes per shard (past twice this it splits; under a quarter it merges into a neighbour)
    volatile_columns: tuple[str, ...] = field(default_factory=tuple)  # a change only here is no change (keeps the previous row)


def read_yaml(path: Path):
    """A YAML file's content; invalid YAML is a :class:`UserError` naming the file and line."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"{path} is not valid YAML{at}; fix the file.") from None


@lru_cache(maxsize=8)
def _load(path: str) -> dict[str, TableConfig]:
    try:
        raw = read_yaml(Path(path)) or {}
    except FileNotFoundError:
        raise UserError(f"The table configuration {path} does not exist; create it or set DATASET_ASSETS_TABLES.") from None
    tables = raw.get("tables") if isinstance(raw, dict) else None
    if not isinstance(tables, dict):
        raise UserError(f"The table configuration {path} has no 'tables:' mapping; see dataset_assets/tables.yaml for the format.")
    known = {f.name for f in fields(TableConfig)} - {"name"}
    out: dict[str, TableConfig] = {}
    for name, spec in tables.items():
        if not isinstance(name, str) or not isinstance(spec or {}, dict):
            raise UserError(f"The table configuration {path} must map each table name to its settings; "
                            f"{name!r} maps to {spec!r}.")
        spec = dict(spec or {})
        unknown = sorted(set(spec) - known)
        if unknown:
            raise UserError(
                f"The table configuration {path} gives {name} the unknown setting(s) {', '.join(unknown)}; "
                f"the settings are {', '.join(sorted(known))}."
            )
        for key, value in spec.items():
            what, ok = _SETTINGS[key]
            if not ok(value):
                raise UserError(f"The table configuration {path} sets {name}.{key} to {value!r}; it must be {what}.")
        if "columns" in spec and spec["columns"] is not None:
            spec["columns"] = tuple(spec["columns"])
        for key in ("profile_columns", "cluster_by", "volatile_columns"):
            spec[key] = tuple(spec.get(key) or ())
        out[name] = TableConfig(name=name, **spec)
    return out


def _names(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


# What each setting of tables.yaml must be: (in words, check). Every TableConfig field but name.
_SETTINGS = {
    "primary_key": ("a column name", lambda v: isinstance(v, str) and bool(v)),
    "tombstone_table": ("a table name or null", lambda v: v is None or (isinstance(v, str) and bool(v))),
    "exclude_removed": ("true or false", lambda v: isinstance(v, bool)),
    "exclude_tombstoned": ("true or false", lambda v: isinstance(v, bool)),
    "columns": ("a list of column names or null", lambda v: v is None or _names(v)),
    "profile_columns": ("a list of column names", lambda v: v is None or _names(v)),
    "incremental": ("true or false", lambda v: isinstance(v, bool)),
    "chunk_rows": ("a whole number of at least 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "preview": ("true or false", lambda v: isinstance(v, bool)),
    "layout": ("chunks or clustered", lambda v: v in ("chunks", "clustered")),
    "cluster_by": ("a list of column names", lambda v: v is None or _names(v)),
    "shard_bytes": ("a whole number of bytes, at least 1 MiB (1048576)",
                    lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1 << 20),
    "volatile_columns": ("a list of column names", lambda v: v is None or _names(v)),
}


def load_tables() -> dict[str, TableConfig]:
    return _load(str(tables_file()))


def in_table_order(names) -> list[str]:
    """``names`` with the configured tables first, in tables.yaml order, then the others by name."""
    configured = list(load_tables())
    return sorted(names, key=lambda t: (configured.index(t) if t in configured else len(configured), t))


def table_config(name: str) -> TableConfig:
    tables = load_tables()
    if name not in tables:
        raise UserError(
            f"Unknown table {name!r}: the configured tables are {', '.join(sorted(tables))}; "
            f"add it to {tables_file()} to export it."
        )
    return tables[name]
