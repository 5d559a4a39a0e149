"""One stable Arrow schema per table, derived from the catalog, and the
conversion of the driver's batches into it.

The mapping (also documented in the README):

=====================  ==========================================
Postgres               Arrow / parquet
=====================  ==========================================
uuid                   string (canonical 8-4-4-4-12 lower-case)
json, jsonb            string holding the JSON text
T[]                    list<T'>
timestamptz            timestamp[us, UTC]
timestamp              timestamp[us]
date                   date32
numeric(p,s)           decimal128(p,s)
numeric                string (exact decimal text)
smallint/int/bigint    int16 / int32 / int64
real/double precision  float32 / float64
boolean                bool
text/varchar/char      string
bytea                  binary
=====================  ==========================================

A column whose type is not in this table fails before any data moves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataset_assets.errors import UserError
from dataset_assets.source.catalog import Column, TableInfo

_SCALARS: dict[str, pa.DataType] = {
    "uuid": pa.string(),
    "json": pa.string(),
    "jsonb": pa.string(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "bytea": pa.binary(),
}

# Strings that repeat a lot (provider, license, ...) are dictionary-encoded;
# free text, urls, ids and JSON are not (dictionaries do not pay there).
DICTIONARY_MAX_VARCHAR = 80


def _numeric_type(col: Column) -> pa.DataType:
    if col.typmod < 4:  # unconstrained numeric: arbitrary precision, keep exact text
        return pa.string()
    precision = ((col.typmod - 4) >> 16) & 0xFFFF
    scale = (col.typmod - 4) & 0xFFFF
    if precision > 38:
        return pa.decimal256(precision, scale)
    return pa.decimal128(precision, scale)


def arrow_type(table: str, col: Column) -> pa.DataType:
    if col.typname == "numeric":
        base = _numeric_type(col)
    elif col.typname in _SCALARS:
        base = _SCALARS[col.typname]
    else:
        raise UserError(
            f"Column {table}.{col.name} has type {col.pg_type}, which has no parquet mapping; "
            f"leave the column out in the table configuration or add a mapping."
        )
    return pa.list_(pa.field("item", base)) if col.is_array else base


@dataclass(frozen=True)
class TableSchema:
    table: str
    columns: tuple[Column, ...]
    arrow: pa.Schema

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def dictionary_columns(self) -> list[str]:
        out = []
        for c in self.columns:
            if c.is_array:
                continue
            if c.typname in ("varchar", "bpchar") and 0 < c.typmod - 4 <= DICTIONARY_MAX_VARCHAR:
                out.append(c.name)
        return out

    def statistics_columns(self) -> list[str]:
        """Columns worth min/max statistics: not big free text or JSON."""
        skip = {"json", "jsonb", "text", "bytea"}
        return [c.name for c in self.columns if c.typname not in skip and not c.is_array]

    def describe(self) -> list[dict]:
        return [
            {"name": c.name, "pg_type": c.pg_type, "arrow_type": str(f.type), "nullable": c.nullable}
            for c, f in zip(self.columns, self.arrow)
        ]


def table_schema(info: TableInfo, columns: tuple[str, ...] | None = None) -> TableSchema:
    cols = info.columns
    if columns is not None:
        missing = [c for c in columns if info.column(c) is None]
        if missing:
            raise UserError(f"Configured columns {', '.join(missing)} do not exist in table {info.name}; fix the table configuration.")
        cols = tuple(info.column(c) for c in columns)
    fields = [pa.field(c.name, arrow_type(info.name, c), nullable=c.nullable) for c in cols]
    return TableSchema(table=info.name, columns=tuple(cols), arrow=pa.schema(fields))


# --- converting driver batches ------------------------------------------------

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def uuid_to_string(arr: pa.Array) -> pa.Array:
    """16-byte uuids -> canonical strings, vectorised.

    The driver hands uuids over as 16-byte values: fixed-size (``arrow.uuid``, as ADBC 1.13
    does) or variable-size binary in an opaque extension (as the pinned ADBC 1.8 does),
    which is cast to fixed size first."""
    storage = arr.storage if isinstance(arr, pa.ExtensionArray) else arr
    n = len(storage)
    if n == 0:
        return pa.array([], pa.string())
    if not pa.types.is_fixed_size_binary(storage.type):
        storage = storage.cast(pa.binary(16))
    data, start = storage.buffers()[1], storage.offset * 16
    raw = np.frombuffer(data, dtype=np.uint8, count=start + n * 16)[start:]
    raw = raw.reshape(n, 16)
    hexed = np.empty((n, 36), dtype=np.uint8)
    hexed[:] = ord("-")
    pos = 0
    for b in range(16):
        if b in (4, 6, 8, 10):
            pos += 1
        hexed[:, pos] = _HEX[raw[:, b] >> 4]
        hexed[:, pos + 1] = _HEX[raw[:, b] & 0x0F]
        pos += 2
    offsets = np.arange(0, (n + 1) * 36, 36, dtype=np.int32)
    validity = storage.buffers()[0]
    if storage.null_count and storage.offset:
        validity = pc.is_valid(storage).buffers()[1]
    return pa.Array.from_buffers(
        pa.string(), n, [validity if storage.null_count else None, pa.py_buffer(offsets), pa.py_buffer(hexed)], storage.null_count
    )


def _convert(arr: pa.Array, target: pa.DataType, col: Column) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return pa.chunked_array([_convert(c, target, col) for c in arr.chunks], target)
    typ = arr.type
    if col.is_array:
        if typ == target:
            return arr
        values = _convert(arr.values, target.value_type, replace(col, is_array=False, nullable=True))
        return pa.ListArray.from_arrays(arr.offsets, values, type=target, mask=arr.is_null() if arr.null_count else None)
    if col.typname == "uuid":
        return uuid_to_string(arr)
    if isinstance(typ, pa.BaseExtensionType):
        arr = arr.storage
        typ = arr.type
    if col.typname == "numeric" and pa.types.is_string(target):
        return _numeric_text(arr)
    if typ == target:
        return arr
    return arr.cast(target)


_NUMERIC_SPECIALS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _numeric_text(arr: pa.Array) -> pa.Array:
    """The driver spells numeric specials like C does; keep Postgres' own spelling."""
    for driver, postgres in _NUMERIC_SPECIALS.items():
        hit = pc.equal(arr, driver)
        if pc.any(hit).as_py():
            arr = pc.if_else(hit, postgres, arr)
    return arr


def conform(batch: pa.RecordBatch, schema: TableSchema) -> pa.RecordBatch:
    """The driver's batch in the table's stable schema (types, names, no driver metadata)."""
    arrays = [_convert(batch.column(i), f.type, c) for i, (c, f) in enumerate(zip(schema.columns, schema.arrow))]
    return pa.RecordBatch.from_arrays(arrays, schema=schema.arrow)
