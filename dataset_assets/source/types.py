"""One stable Arrow schema per table, derived from the catalog, and the
conversion of the driver's batches into it.

The mapping (also documented in the README):

=====================  ==========================================
Postgres               Arrow / parquet
=====================  ==========================================
uuid                   string (canonical 8-4-4-4-12 lower-case)
json                   string: the JSON text exactly as stored (whitespace, key order, duplicate keys)
jsonb                  string: Postgres' normalised text of the value (as ``jsonb::text`` prints it)
T[]                    list<T'>, one-dimensional arrays with subscripts from 1 only (below)
timestamptz            timestamp[us, UTC]
timestamp              timestamp[us]
date                   date32
numeric(p,s)           decimal128(p,s); s < 0 (Postgres 15+): decimal128(p-s, 0);
                       s > p: decimal128(s,s); above 38 digits decimal256, above 76 string
numeric                string (exact decimal text; NaN, Infinity, -Infinity as Postgres spells them)
interval               struct<months: int32, days: int32, microseconds: int64> (Postgres' own fields)
smallint/int/bigint    int16 / int32 / int64
real/double precision  float32 / float64 (NaN and infinities kept)
boolean                bool
text/varchar/char      string
bytea                  binary
enum types             string (the label)
domains                as their base type (domains over arrays too)
=====================  ==========================================

A column whose type is not in this table fails before any data moves.

Values parquet cannot hold fail the export before anything is published, with one sentence
naming the table, the column and the row's key (nothing is replaced by a stand-in value):

* ``infinity`` / ``-infinity`` in timestamptz, timestamp and date columns (and arrays of
  them), and timestamps after 294247-01-10 (int64 microseconds since 1970 end there).
  Checked in :func:`conform` on every batch with one vectorised min/max per column: the
  pinned driver (adbc-driver-postgresql 1.8.0) shifts Postgres' values from the 2000 to the
  1970 epoch without an overflow check, so these arrive below Postgres' smallest value
  (4714-11-24 BC); no extra query.
* ``NaN`` in numeric(p,s) (a decimal has no NaN; unconstrained numeric keeps it as text).
  Found when the batch's cast to decimal fails, so it costs nothing otherwise.
* Multi-dimensional arrays (``{{1,2},{3,4}}``), which the driver flattens, and arrays whose
  subscripts do not start at 1 (``[0:1]={5,6}``), which a list cannot keep. Postgres does not
  record dimensions in the column type, so :func:`check_array_shapes` asks Postgres, in the
  export's snapshot and with its filters, before any data moves: one scan of the table's
  array columns, only for tables that have array columns.
* Intervals whose time part exceeds int64 nanoseconds (about 292 years of hours; also
  Postgres 17's infinite intervals): the driver itself refuses them while reading.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataset_assets.errors import UserError
from dataset_assets.source.catalog import Column, TableInfo
from dataset_assets.source.connect import quote_ident

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
    "interval": pa.struct([pa.field("months", pa.int32()), pa.field("days", pa.int32()), pa.field("microseconds", pa.int64())]),
}

# Strings that repeat a lot (provider, license, ...) are dictionary-encoded;
# free text, urls, ids and JSON are not (dictionaries do not pay there).
DICTIONARY_MAX_VARCHAR = 80


def _numeric_type(col: Column) -> pa.DataType:
    if col.typmod < 4:  # unconstrained numeric: arbitrary precision, keep exact text
        return pa.string()
    precision = ((col.typmod - 4) >> 16) & 0xFFFF
    scale = (((col.typmod - 4) & 0x7FF) ^ 1024) - 1024  # 11-bit signed since Postgres 15
    if scale < 0:  # numeric(5,-2) holds integers of up to 7 digits, the last 2 zero
        precision, scale = precision - scale, 0
    elif scale > precision:  # numeric(3,5) holds 0.00xyz: 5 digits, all after the point
        precision = scale
    if precision > 76:
        return pa.string()
    if precision > 38:
        return pa.decimal256(precision, scale)
    return pa.decimal128(precision, scale)


def arrow_type(table: str, col: Column) -> pa.DataType:
    if col.type_kind == "e":  # enum: the driver sends the label as text
        base = pa.string()
    elif col.typname == "numeric":
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
    key: str | None = None     # the column that names a row in error messages (the table's key)

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
        skip = {"json", "jsonb", "text", "bytea", "interval"}
        return [c.name for c in self.columns if c.typname not in skip and not c.is_array]

    def describe(self) -> list[dict]:
        return [
            {"name": c.name, "pg_type": c.pg_type, "arrow_type": str(f.type), "nullable": c.nullable}
            for c, f in zip(self.columns, self.arrow)
        ]


def table_schema(info: TableInfo, columns: tuple[str, ...] | None = None, key: str | None = None) -> TableSchema:
    cols = info.columns
    if columns is not None:
        missing = [c for c in columns if info.column(c) is None]
        if missing:
            raise UserError(f"Configured columns {', '.join(missing)} do not exist in table {info.name}; fix the table configuration.")
        cols = tuple(info.column(c) for c in columns)
    fields = [pa.field(c.name, arrow_type(info.name, c), nullable=c.nullable) for c in cols]
    return TableSchema(table=info.name, columns=tuple(cols), arrow=pa.schema(fields), key=key)


# --- converting driver batches ------------------------------------------------

# byte -> its two lower-case hex digits, as one little-endian uint16 (first digit in the low byte)
_HEX_PAIRS = np.array([ord("0123456789abcdef"[b >> 4]) | ord("0123456789abcdef"[b & 15]) << 8 for b in range(256)],
                      dtype="<u2")
# where each byte's digits go in the 36 characters: 8-4-4-4-12, dashes between
_UUID_GROUPS = ((0, 4, 0), (4, 6, 9), (6, 8, 14), (8, 10, 19), (10, 16, 24))  # bytes [a, b) -> from character c


def uuid_to_string(arr: pa.Array) -> pa.Array:
    """16-byte uuids -> canonical strings, vectorised.

    The driver hands uuids over as 16-byte values: fixed-size (``arrow.uuid``, as ADBC 1.13
    does) or variable-size binary in an opaque extension (as the pinned ADBC 1.8 does),
    which is cast to fixed size first. One table lookup per byte gives both its digits
    (0.11-0.15 s per 1M uuids here, where two lookups per byte, one per digit, took 0.28 s)."""
    storage = arr.storage if isinstance(arr, pa.ExtensionArray) else arr
    n = len(storage)
    if n == 0:
        return pa.array([], pa.string())
    if not pa.types.is_fixed_size_binary(storage.type):
        storage = storage.cast(pa.binary(16))
    data, start = storage.buffers()[1], storage.offset * 16
    raw = np.frombuffer(data, dtype=np.uint8, count=start + n * 16)[start:]
    digits = _HEX_PAIRS[raw.reshape(n, 16)].view(np.uint8)  # (n, 32)
    hexed = np.empty((n, 36), dtype=np.uint8)
    hexed[:, (8, 13, 18, 23)] = ord("-")
    for a, b, c in _UUID_GROUPS:
        hexed[:, c:c + 2 * (b - a)] = digits[:, 2 * a:2 * b]
    offsets = np.arange(0, (n + 1) * 36, 36, dtype=np.int32)
    validity = storage.buffers()[0]
    if storage.null_count and storage.offset:
        validity = pc.is_valid(storage).buffers()[1]
    return pa.Array.from_buffers(
        pa.string(), n, [validity if storage.null_count else None, pa.py_buffer(offsets), pa.py_buffer(hexed)], storage.null_count
    )


class _Unrepresentable(Exception):
    """A value parquet cannot hold, at ``row`` of the array being converted."""

    def __init__(self, row: int, what: str, fix: str):
        super().__init__(what)
        self.row, self.what, self.fix = row, what, fix


def _convert(arr: pa.Array, target: pa.DataType, col: Column) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return pa.chunked_array([_convert(c, target, col) for c in arr.chunks], target)
    typ = arr.type
    if col.is_array:
        child = arr.values
        try:
            values = _convert(child, target.value_type, replace(col, is_array=False, nullable=True))
        except _Unrepresentable as exc:  # the element's position -> its row
            exc.row = int(np.searchsorted(arr.offsets.to_numpy(), exc.row, side="right")) - 1
            raise
        if typ == target and values is child:
            return arr
        return pa.ListArray.from_arrays(arr.offsets, values, type=target, mask=arr.is_null() if arr.null_count else None)
    if col.typname == "uuid":
        return uuid_to_string(arr)
    if isinstance(typ, pa.BaseExtensionType):
        arr = arr.storage
        typ = arr.type
    if col.typname in _RANGES:
        _check_range(arr, col)
    if col.typname == "numeric" and pa.types.is_string(target):
        return _numeric_text(arr)
    if col.typname == "interval":
        return _interval_fields(arr, target)
    if typ == target:
        return arr
    try:
        return arr.cast(target)
    except pa.ArrowInvalid:
        if col.typname == "numeric":
            nan = pc.equal(arr, "nan")
            if pc.any(nan).as_py():
                raise _Unrepresentable(
                    pc.index(nan, True).as_py(), "NaN", "which a parquet decimal cannot hold; replace NaN in Postgres "
                    "(for example with NULL), make the column unconstrained numeric (exported as exact text)") from None
        raise


# What the pinned driver (1.8.0) makes of Postgres' special values: it adds the 2000 -> 1970
# epoch offset to Postgres' int64 microseconds (int32 days) without an overflow check, so
# infinity wraps around and lands, like -infinity, below Postgres' smallest value; later
# drivers may send INT64_MAX / INT32_MAX as such, which is past Postgres' largest value.
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1
_EPOCH_US, _EPOCH_DAYS = 946_684_800_000_000, 10_957
_TS_MIN = -210_866_803_200_000_000   # 4714-11-24 00:00:00 BC (UTC), Postgres' first microsecond
_DATE_MIN, _DATE_MAX = -2_440_588, 2_145_042_905   # 4714-11-24 BC .. 5874897-12-31
_SPECIALS = {
    "timestamp": ({_I64_MIN + _EPOCH_US - 1, _I64_MAX}, {_I64_MIN + _EPOCH_US}),
    "date": ({_I32_MAX + _EPOCH_DAYS - (1 << 32), _I32_MAX}, {_I32_MIN + _EPOCH_DAYS, _I32_MIN}),
}
# typname -> (integer view, smallest valid, largest valid)
_RANGES = {
    "timestamptz": (pa.int64(), _TS_MIN, _I64_MAX - 1),
    "timestamp": (pa.int64(), _TS_MIN, _I64_MAX - 1),
    "date": (pa.int32(), _DATE_MIN, _DATE_MAX),
}


def _check_range(arr: pa.Array, col: Column) -> None:
    """Raise for the first value outside what Postgres itself can hold: a special value the
    driver sent on (one min/max over the batch when there is none)."""
    view, lo, hi = _RANGES[col.typname]
    if len(arr) == arr.null_count:
        return
    ints = arr.view(view)
    mm = pc.min_max(ints)
    if mm["min"].as_py() >= lo and mm["max"].as_py() <= hi:
        return
    row = pc.index(pc.or_(pc.less(ints, lo), pc.greater(ints, hi)), True).as_py()
    value = ints[row].as_py()
    inf, neg_inf = _SPECIALS["date" if col.typname == "date" else "timestamp"]
    what = "'infinity'" if value in inf else "'-infinity'" if value in neg_inf else "a timestamp after 294247-01-10"
    raise _Unrepresentable(row, what, "which parquet cannot hold; replace it in Postgres (for example with NULL)")


_INTERVAL = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanoseconds", "<i8")])


def _interval_fields(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """month_day_nano_interval (which parquet cannot store) -> Postgres' own three fields.
    The driver multiplied Postgres' microseconds by 1000 (refusing overflow), so this is exact."""
    n = len(arr)
    if n == 0:
        return pa.array([], target)
    rec = np.frombuffer(arr.buffers()[1], dtype=_INTERVAL, count=arr.offset + n)[arr.offset:]
    nanos = rec["nanoseconds"]
    micros, rest = np.divmod(nanos, 1000)
    valid = None if not arr.null_count else pc.is_valid(arr).to_numpy(zero_copy_only=False)
    if np.any(rest if valid is None else rest[valid]):
        raise ValueError("the driver sent an interval that is not a whole number of microseconds")
    return pa.StructArray.from_arrays(
        [pa.array(rec["months"]), pa.array(rec["days"]), pa.array(micros)], fields=list(target),
        mask=pc.is_null(arr) if arr.null_count else None,
    )


_NUMERIC_SPECIALS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _numeric_text(arr: pa.Array) -> pa.Array:
    """The driver spells numeric specials like C does; keep Postgres' own spelling."""
    for driver, postgres in _NUMERIC_SPECIALS.items():
        hit = pc.equal(arr, driver)
        if pc.any(hit).as_py():
            arr = pc.if_else(hit, postgres, arr)
    return arr


_UNQUOTED_KEYS = {"int2", "int4", "int8", "numeric", "float4", "float8"}
_LEAVE_OUT = "or leave the column out with columns: in tables.yaml."


def _row(schema: TableSchema, value) -> str:
    """'the row with id = 5' (the key's value as a SQL literal)."""
    col = next(c for c in schema.columns if c.name == schema.key)
    text = str(value)
    literal = text if col.typname in _UNQUOTED_KEYS and not col.is_array else "'" + text.replace("'", "''") + "'"
    return f"the row with {schema.key} = {literal}"


def conform(batch: pa.RecordBatch, schema: TableSchema) -> pa.RecordBatch:
    """The driver's batch in the table's stable schema (types, names, no driver metadata).

    A value parquet cannot hold (module docstring) raises :class:`UserError` naming table,
    column and the row's key."""
    arrays = []
    for i, (c, f) in enumerate(zip(schema.columns, schema.arrow)):
        try:
            arrays.append(_convert(batch.column(i), f.type, c))
        except _Unrepresentable as exc:
            row = f"a row (its key column {schema.key} is not exported)" if schema.key else "a row (the table has no key to name it)"
            if c.name == schema.key:
                row = f"the row with {schema.key} = {exc.what}"
            elif schema.key in schema.names:
                k = schema.names.index(schema.key)
                key = _convert(batch.column(k).slice(exc.row, 1), schema.arrow.field(k).type, schema.columns[k])
                row = _row(schema, key[0].as_py())
            raise UserError(f"Column {schema.table}.{c.name} ({c.pg_type}) holds {exc.what} in {row}, {exc.fix}, {_LEAVE_OUT}") from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema.arrow)


def check_array_shapes(cur, schema: TableSchema, filters: tuple[str, ...] = ()) -> None:
    """Refuse arrays a list cannot hold exactly, before any data moves: multi-dimensional ones
    (the driver flattens them) and ones whose subscripts do not start at 1. Postgres does not
    record dimensions in the column type, so this asks Postgres: one scan of the rows the
    export reads (``filters``, in its snapshot), only when the table has array columns."""
    arrays = [c for c in schema.columns if c.is_array]
    if not arrays:
        return
    names = [f"t.{quote_ident(c.name)}" for c in arrays]
    key = f"t.{quote_ident(schema.key)}::text" if schema.key in schema.names else "t.ctid::text"
    odd = " OR ".join(f"array_ndims({n}) > 1 OR array_lower({n}, 1) <> 1" for n in names)
    where = " AND ".join([f"({odd})", *filters])
    cur.execute(f"SELECT {key}, {', '.join(f'array_dims({n})' for n in names)} "
                f"FROM {quote_ident(schema.table)} AS t WHERE {where} LIMIT 1")
    found = cur.fetchone()
    if found is None:
        return
    row = _row(schema, found[0]) if schema.key in schema.names else f"the row at ctid {found[0]}"
    for c, dims in zip(arrays, found[1:]):
        if dims is None or (dims.count("[") == 1 and dims.startswith("[1:")):
            continue
        if dims.count("[") > 1:
            what, why = f"a multi-dimensional array ({dims})", "which would come out flattened; make its arrays one-dimensional in Postgres"
        else:
            what, why = f"an array with subscripts {dims}", "which a parquet list cannot keep (a list has no subscripts); make its arrays start at subscript 1 in Postgres"
        raise UserError(f"Column {schema.table}.{c.name} ({c.pg_type}) holds {what} in {row}, {why}, {_LEAVE_OUT}")
