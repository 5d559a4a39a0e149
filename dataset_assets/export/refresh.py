"""Layout ``clustered``: shards that hold ranges of a clustering key, refreshed by what changed.

A table in this layout (``layout: clustered`` in tables.yaml) is cut into shards by ranges of
its *sort key*: the ``cluster_by`` columns, then the primary key (e.g. ``provider``, then
``identifier``), each shard about ``shard_bytes`` of parquet. Beside the shards, the store
keeps a *row index* (``_index.parquet``, never pushed to the Hub): for every row of the table,
also those the filters leave out, its key, the cluster part of its sort key, its shard, whether
it is released, whether it is in the shard's tail, and a 128-bit hash of its non-volatile
columns. Rows that arrive in a shard's range go to the shard's *tail* file
(``train-NNNNN-tail.parquet``) until the tail holds a quarter of the shard's rows and folds in.
A shard past twice ``shard_bytes`` splits into shards of about ``shard_bytes``; one that shrinks
under a quarter of it merges into a neighbour (into its tail: :func:`_merges`).

First export (no previous snapshot to build on, or ``--full``)::

    sample of the sort key (TABLESAMPLE)      -> shard boundaries, ~shard_bytes each
    N workers, ctid ranges, one Postgres snapshot, rows with the filters' verdict
      -> per group of batches (8 MiB, up to 32 MiB with many shards): sort keys, row hashes, one
         gather into a piece per shard,
         the pieces appended to each shard's rows waiting in memory; a shard's waiting rows
         are written as a row group of its parquet file once they make one (or, when all
         shards together hold BUFFER_BYTES, those of the shard holding most)
    a table of more shards (row groups under MIN_BUFFERED_GROUP that way): the pieces go to
      each shard's spill file (Arrow IPC), and after the read each shard is written from its
      spill, in the order read
    each shard's file -> sha256; the row index (written as rows are read), manifest, commit

Refresh (a previous snapshot of the same basis in the store)::

    candidates: rows whose xmin is newer than the previous snapshot (source/candidates.py),
      shipped with their filters' verdict, routed to shards as above
    count of the older rows (no column decoded) [+ their keys, only if rows were deleted]
    tombstones added since (keys), count of the older ones
    classify each candidate against the row index (polars joins):
      same hash as before -> unchanged (a change only in volatile columns is no change)
      else update in place / delete / insert / move to another shard
    shards with changes: rewritten copy-on-write from the previous files (row groups kept,
      unchanged rows in their order, updated rows in their place; new rows into the tail); a
      shard shrunk under a quarter of shard_bytes: its rows into its neighbour's tail
    shards without: reused byte for byte (links locally, server-side copies on S3)
    the change feed (changes/changes-00000.parquet): inserted and updated rows, deleted keys,
      each with the file it belongs to (export/feed.py replays it)

Fallback (never reuse on a guess): when the previous snapshot cannot be trusted as a base for
``xmin`` (another cluster, timeline or database, another table of the same name, another
column identity, a snapshot 2^30 transactions old, tombstones removed since, older rows that
the row index does not know), every row is a candidate: the table is read whole and compared
by content, so still only shards whose content changed are rewritten. A different basis
(schema, filters, key, sort key, parquet settings, volatile columns, hash scheme) or a
damaged row index means a first export.

Cost model (per refresh; n rows, c candidates, r rows in rewritten shards):
Postgres reads the heap once for the candidates (tuple headers only for rows not shipped) and
once for the count; ships c rows. The client reads the row index (n small rows), the spilled
candidates, and the r rows of the shards it rewrites; it writes those shards, the index (or
links it when no row changed) and the change feed. A Hub push sends the rewritten files'
changed pages (Xet) and the feed. Measured per scenario: bench/README.md, "Refresh".
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import itertools
import mmap
import resource
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataset_assets.errors import UserError
from dataset_assets.export.background import Background, source_failure
from dataset_assets.export.progress import Progress
from dataset_assets.export import splice
from dataset_assets.export.shards import ParquetOptions, StagedWriter, disk_error, parquet_writer, write_behind, writer_arguments
from dataset_assets.source import candidates as cand_sql
from dataset_assets.source.fingerprints import reuse_blocker
from dataset_assets.source.plan import TablePlan, primary_key
from dataset_assets.source.snapshot import PostgresSnapshot
from dataset_assets.source.types import conform
from dataset_assets.storage.layout import CHANGES, INDEX, table_prefix
from dataset_assets.storage.manifest import FileEntry, Manifest, newest_manifest, sha256_file
from dataset_assets.storage.stores import Store

CHANGES_DIR = CHANGES
CHANGE_COLUMN = "change"          # the change feed's first column: insert | update | delete
FILE_COLUMN = "file"              # its second: the release file the row belongs to (or left)
HASH_SCHEME = f"polars-{pl.__version__}/hash_rows/2x64/floats-as-bits/v1"
_SK, _H1, _H2, _SHARD, _KEEP, _TAIL = "__sk", "__h1", "__h2", "__shard", "__keep", "__tail"
_SKC = "__skc"                    # in the row index file: the sort key without its key part (a few distinct values)
TAIL_SHARE = 4                    # a shard's tail folds into it once it holds more than 1/4 of the shard's rows
_SEEDS = (0x5EED_0001, 0x5EED_0002)
GROUP_BYTES = 8 << 20             # read batches gathered before they are cut per shard (memory: one per worker, and its copies)
MAX_ROW_GROUPS = 32               # a shard with more row groups than this, and than twice what its rows need, is compacted (_fragmented)
# A first export cuts each read group into one piece per shard, and every piece costs ~50 us of its
# own whatever its rows (the spill's IPC message, its read back, its objects): 8 MiB over 912
# shards are pieces of ~9 rows. So its groups grow with the shard count, PIECE_BYTES per shard, up
# to GROUP_BYTES_MAX. 5M rows into 912 shards (CLI, 2026-12-03, bench/README.md): groups of 8 MiB
# 57.1-62.7 s, 69.6-73.8 CPU-s, 315-322 MiB; 16 MiB 55.7 s, 68.3 CPU-s, 316 MiB; 32 MiB 50.5-51.2 s,
# 56.6-60.2 CPU-s, 416 MiB. (A refresh spills only changed rows: its groups stay GROUP_BYTES.)
PIECE_BYTES = 32 << 10
GROUP_BYTES_MAX = 32 << 20


def first_export_group_bytes(shards: int) -> int:
    """The read group of a first export into ``shards`` shards: 8 MiB up to 256 shards, 32 MiB from 1024."""
    return max(GROUP_BYTES, min(GROUP_BYTES_MAX, shards * PIECE_BYTES))


def shard_file(shard_id: int) -> str:
    return f"train-{shard_id:05d}.parquet"


def tail_file(shard_id: int) -> str:
    """A shard's tail: the rows appended to its range since the shard was last written whole."""
    return f"train-{shard_id:05d}-tail.parquet"


def clustering_basis(plan: TablePlan, parquet: dict) -> str:
    import hashlib
    import json

    cfg = plan.config
    payload = {"schema": plan.schema.describe(), "filters": list(plan.filters), "key": primary_key(cfg, plan.info),
               "cluster_by": list(cfg.cluster_by), "volatile": sorted(cfg.volatile_columns), "parquet": parquet,
               "hash": HASH_SCHEME, "format": "clustered/1"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Sort keys and row hashes
# ---------------------------------------------------------------------------------------------

_INT_OFFSET = 9223372036854775807


def _sk_part(s: pl.Series) -> pl.Expr:
    """One column's part of the sort key: a string that sorts (bytewise) as the values do,
    nulls first; the parts concatenate into a key that sorts as the tuple does."""
    c = pl.col(s.name)
    dtype = s.dtype
    if dtype == pl.String:
        body = pl.lit("\x01") + c + pl.lit("\x00")  # Postgres text holds no NUL: the terminator sorts first
    elif dtype.is_integer() or dtype in (pl.Boolean, pl.Date) or isinstance(dtype, pl.Datetime):
        i = c.to_physical().cast(pl.Int64)
        body = pl.when(i < 0).then(pl.lit("\x010") + (i + _INT_OFFSET + 1).cast(pl.String).str.zfill(19)) \
                 .otherwise(pl.lit("\x011") + i.cast(pl.String).str.zfill(19))
    else:
        raise UserError(f"Column {s.name} ({dtype}) cannot be a clustering column; choose text, uuid, integer, "
                        f"boolean, date or timestamp columns for cluster_by.")
    return pl.when(c.is_null()).then(pl.lit("\x00")).otherwise(body)


def sort_keys(table: pa.Table | pa.RecordBatch, columns: list[str]) -> pl.Series:
    if not columns:
        return pl.Series(_SK, [""] * table.num_rows, dtype=pl.String)
    df = pl.from_arrow(table.select(columns) if isinstance(table, pa.Table) else pa.Table.from_batches([table]).select(columns))
    parts = [_sk_part(df.get_column(c)) for c in columns]
    return df.select(pl.concat_str(parts).alias(_SK)).get_column(_SK)


def _key_part(keys: pl.Series) -> pl.Series:
    """The key's part of the sort key (the last part)."""
    df = pl.DataFrame({"k": keys})
    return df.select(_sk_part(df.get_column("k")).alias("p")).get_column("p")


_FLOAT_BITS = {16: pa.int16(), 32: pa.int32(), 64: pa.int64()}


def _by_bits(arr: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Floats by their bits (-0.0 differs from 0.0, and each NaN from a number); anything else as it is."""
    if not pa.types.is_floating(arr.type):
        return arr
    bits = _FLOAT_BITS[arr.type.bit_width]
    if isinstance(arr, pa.ChunkedArray):
        return pa.chunked_array([c.view(bits) for c in arr.chunks], bits)
    return arr.view(bits)


def _as_polars_holds(arr: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A column as polars holds it for hashing: floats by their bits; strings as views, which polars
    holds them as (Arrow's cast to views is cheaper than polars' own conversion: 1M rows of
    ``image``, 0.43 -> 0.31 CPU-s; the hashes are the same, checked by a test)."""
    arr = _by_bits(arr)
    return arr.cast(pa.string_view()) if arr.type in (pa.string(), pa.large_string()) else arr


def _hashable(arr: pa.ChunkedArray | pa.Array) -> pl.Series:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = _as_polars_holds(arr)
    try:
        return pl.from_arrow(arr)
    except Exception:  # noqa: BLE001 - a type polars cannot hold (e.g. an interval): its exact text
        return pl.Series([repr(v) for v in arr.to_pylist()], dtype=pl.String)


def row_hashes(table: pa.Table, columns: list[str]) -> tuple[pl.Series, pl.Series]:
    """Two 64-bit hashes of each row's ``columns`` (the non-volatile ones).

    The columns go to polars as one table (0.25 CPU-s per 1M rows of ``image``, where one
    conversion per column took 0.45; the hashes are the same, checked by a test), strings as views
    (:func:`_as_polars_holds`); a table with a type polars cannot hold goes column by column, that
    column as its exact text."""
    try:
        df = pl.from_arrow(pa.Table.from_arrays([_as_polars_holds(table.column(c)) for c in columns], names=columns),
                           rechunk=False)
    except Exception:  # noqa: BLE001 - see _hashable
        df = pl.DataFrame({c: _hashable(table.column(c)) for c in columns})
    return df.hash_rows(seed=_SEEDS[0]), df.hash_rows(seed=_SEEDS[1])


# ---------------------------------------------------------------------------------------------
# Reading: rows (all or candidates) -> spill files per shard + their narrow facts
# ---------------------------------------------------------------------------------------------


KEPT_CLUSTER_PARTS = 4096  # cluster values whose sort key part a layout keeps between read groups


@dataclass
class _Layout:
    cluster_by: list[str]
    key: str
    lowers: list[str | None]       # lower bound (sort key) of each shard, ascending; the first is None
    ids: list[int]                 # shard ids, in the same order
    _parts: dict = field(default_factory=dict, repr=False)  # a cluster value -> its sort key part, made once

    def cluster_parts(self, table: pa.Table) -> tuple[list[str], np.ndarray]:
        """The cluster part of each row's sort key (``sort_keys(table, cluster_by)``) as its
        distinct values and each row's position among them. A table is clustered by a few distinct
        values (its providers): one column's parts are made once per value (1M rows of ``image``:
        0.13 CPU-s as one string per row, made by polars a read group at a time), and a text
        column's are kept for the next groups (a value is its own exact key), up to
        KEPT_CLUSTER_PARTS of them (a column of many distinct values would otherwise keep one
        per row of the table); more columns are made per row, then told apart."""
        if not self.cluster_by:
            return [""], np.zeros(table.num_rows, dtype=np.int32)
        if len(self.cluster_by) == 1:
            col = table.column(self.cluster_by[0])
            enc = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col,
                                       null_encoding="encode")
            rows = enc.indices.to_numpy(zero_copy_only=False)
            if not pa.types.is_string(enc.dictionary.type):
                return sort_keys(pa.table({self.cluster_by[0]: enc.dictionary}), self.cluster_by).to_list(), rows
            if len(self._parts) + len(enc.dictionary) > KEPT_CLUSTER_PARTS:  # many distinct values: made per group, not kept
                return sort_keys(pa.table({self.cluster_by[0]: enc.dictionary}), self.cluster_by).to_list(), rows
            values = enc.dictionary.to_pylist()
            new = [i for i, v in enumerate(values) if v not in self._parts]
            if new:  # the dict is shared by the reading threads: a value made twice is made alike
                made = sort_keys(pa.table({self.cluster_by[0]: enc.dictionary.take(pa.array(new, pa.int32()))}), self.cluster_by)
                self._parts.update(zip((values[i] for i in new), made.to_list()))
            return [self._parts[v] for v in values], rows
        enc = pc.dictionary_encode(sort_keys(table, self.cluster_by).to_arrow().cast(pa.string()))  # a part is never null
        return enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False)

    def shard_of(self, parts: list[str], rows: np.ndarray, table: pa.Table) -> np.ndarray:
        """Position (in ``lowers``) of the shard each row of ``table`` falls in (its sort key's cluster
        part: ``parts[rows]``, :meth:`cluster_parts`): the number of lower bounds at or below its
        sort key. The parts are self-delimiting, so none is a prefix of another: a bound whose
        cluster part differs from the row's is below or above it as that part is, and only rows whose
        part some bound shares are placed by their key too (a sort key is made for those rows only;
        with 2 shards of ``image``, the rows of the one provider they split). Strings compare by code
        point in Python as by UTF-8 bytes in polars."""
        cuts = self.lowers[1:]
        if not cuts:
            return np.zeros(len(rows), dtype=np.int32)
        below = np.array([bisect.bisect_left(cuts, d) for d in parts], dtype=np.int32)         # bounds under the part
        shared = np.array([bisect.bisect_left(cuts, d + "\x02") for d in parts], dtype=np.int32)  # ... or starting with it (a key part starts \x00 or \x01)
        pos = below[rows]
        split = np.flatnonzero((shared > below)[rows])
        if len(split):
            keys = sort_keys(table.select([self.key]).take(pa.array(split)), [self.key])
            sk = pl.Series(parts, dtype=pl.String).gather(rows[split]) + keys
            pos[split] = pl.Series(cuts, dtype=pl.String).search_sorted(sk, side="right").to_numpy()
        return pos


# Uncompressed, without Arrow's thread pool: lz4 wrote a third of the bytes but cost more CPU than
# it saved (1M rows: 10.5-10.9 s against 9.1-9.3 s), and a piece's ~30 columns handed to the pool
# cost more in wake-ups than their work
_SPILL_WRITE = pa.ipc.IpcWriteOptions(compression=None, use_threads=False)
_SPILL_READ = pa.ipc.IpcReadOptions(use_threads=False)


# Each shard's spill is written through a buffer: a read group cut over 99 shards gives pieces of
# ~80 rows, and the IPC writer hands each of a piece's ~100 buffers to the file in a write() of
# its own. 1M rows into 99 shards: 1.98 s of CPU in the spill's writes (and the row index's)
# unbuffered; a micro-benchmark of 80-row pieces over 99 files, per 100k rows: 0.23-0.33 s
# unbuffered, 0.12-0.13 with 64 KiB buffers, 0.085-0.10 with 256 KiB, 0.11-0.14 with 1 MiB.
# All shards' buffers together stay under SPILL_BUFFER_BYTES, each between the two bounds (at
# 1000 shards: 32 MiB). 1M rows into 99 shards, the export's peak RSS: 375-399 MiB unbuffered,
# 408-438 with 32 MiB of buffers (three runs each, alternating with the code before).
SPILL_BUFFER_BYTES = 16 << 20
SPILL_BUFFER_BOUNDS = (32 << 10, 1 << 20)


class _Spill:
    """One Arrow IPC stream per shard, written by every worker (a lock per shard)."""

    def __init__(self, directory: Path, schema: pa.Schema, shards: int):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self._streams: dict[int, tuple[pa.ipc.RecordBatchStreamWriter, pa.NativeFile]] = {}  # writer, buffered file
        self._locks = [threading.Lock() for _ in range(shards)]
        low, high = SPILL_BUFFER_BOUNDS
        self._buffer = max(low, min(high, SPILL_BUFFER_BYTES // max(1, shards)))
        _raise_open_files(shards + 256)

    def path(self, pos: int) -> Path:
        return self.directory / f"{pos:06d}.arrow"

    def put(self, group: pa.Table, order: np.ndarray, shards: np.ndarray) -> None:
        """Rows ``order`` of ``group``, grouped by shard (``shards``: each one's): one gather of them
        all, each shard's piece a slice of it (a spilled piece is written at once)."""
        taken = group.take(pa.array(order))
        for pos, a, b in _runs(shards):
            self.write(pos, taken.slice(a, b - a))

    def write(self, pos: int, piece: pa.Table) -> None:
        try:
            with self._locks[pos]:
                if pos not in self._streams:
                    f = pa.BufferedOutputStream(pa.OSFile(str(self.path(pos)), "wb"), self._buffer)
                    self._streams[pos] = (pa.ipc.new_stream(f, self.schema, options=_SPILL_WRITE), f)
                self._streams[pos][0].write_table(piece)
        except OSError as exc:
            raise disk_error(exc, self.directory) from None

    def close(self) -> None:
        """Ends every stream and writes out its buffer (a full disk is one sentence)."""
        try:
            for w, f in self._streams.values():
                w.close()  # the end-of-stream marker; the file is the caller's to close
                f.close()  # writes the buffer out, then closes the file
        except OSError as exc:
            raise disk_error(exc, self.directory) from None

    def abort(self) -> None:
        for w, f in self._streams.values():
            with contextlib.suppress(Exception):
                w.close()
            with contextlib.suppress(Exception):
                f.close()

    def holds(self, pos: int) -> bool:
        """Whether any row was spilled to shard ``pos`` (a piece is written only when it has rows)."""
        return pos in self._streams and self.path(pos).exists()

    def read(self, pos: int) -> pa.Table | None:
        """Shard ``pos``'s spilled rows, all in memory (a refresh's candidates: few)."""
        if not self.holds(pos):
            return None
        with pa.memory_map(str(self.path(pos))) as f:
            return pa.ipc.open_stream(f, options=_SPILL_READ).read_all()

    def pieces(self, pos: int, nbytes: int) -> Iterator[pa.Table]:
        """Shard ``pos``'s spilled rows in pieces of about ``nbytes`` (batches are gathered while
        they fit; a bigger batch is a piece of its own), read from the file batch by batch:
        memory holds one piece, whatever the shard's size.

        The file is mapped, not read: a batch's buffers are the file's pages (no read() copying
        each message, no allocation per buffer), and once a piece is handed out and the next
        asked for, the pages before the next are dropped from the process (``MADV_DONTNEED``; read
        again from the page cache if anything still touches them), so the mapping holds about one
        piece too. 5M rows into 912 shards, ~146k spilled batches (CLI, two pairs alternating,
        2026-12-03): writing the shards 21.7 and 23.8 s read, 21.1 and 19.9 mapped."""
        if not self.holds(pos):
            return
        with open(self.path(pos), "rb") as fh:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        src = pa.BufferReader(pa.py_buffer(mm))
        reader = pa.ipc.open_stream(src, options=_SPILL_READ)
        pending: list[pa.RecordBatch] = []
        size = 0
        released = 0  # the file's pages before this offset are dropped from the process
        while True:
            at = src.tell()  # where the next batch's message begins
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            # its buffers (slices of the mapping, each counted at its own length) add up to its size.
            # (``nbytes`` walks the buffers through a set, to count shared ones once: on 1M rows
            # spilled into 99 shards, 12k batches of ~80 rows, that took 1.3 s of CPU.)
            n = batch.get_total_buffer_size()
            if pending and size + n > nbytes:
                yield pa.Table.from_batches(pending, schema=self.schema)
                pending, size = [], 0
                cut = at - at % mmap.PAGESIZE
                if cut > released:
                    mm.madvise(mmap.MADV_DONTNEED, released, cut - released)
                    released = cut
            pending.append(batch)
            size += n
        if pending:
            yield pa.Table.from_batches(pending, schema=self.schema)


def _raise_open_files(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@dataclass
class _Read:
    facts: pl.DataFrame            # key, __sk, __h1, __h2, __keep, __shard (position) of every row read
    rows: int
    nbytes: int
    sunk: int = 0                  # rows handed to the sink (a first export: the released ones)
    scanned: int | None = None     # rows of the snapshot the reading scans visited (count_scanned; None: not counted)


def spill_schema(plan: TablePlan) -> pa.Schema:
    """A spilled row: the table's columns, its sort key, hashes and the filters' verdict."""
    extra = [pa.field(_SK, pa.large_string()), pa.field(_H1, pa.uint64()), pa.field(_H2, pa.uint64()), pa.field(_KEEP, pa.bool_())]
    return pa.schema(list(plan.schema.arrow) + extra)


def _read_rows(shared: PostgresSnapshot, plan: TablePlan, layout: _Layout, previous, sink: "_Spill | _Buffered",
               hash_columns: list[str], workers: int, batch_bytes: int, progress: Progress, collect: bool,
               known: "Callable[[], _Known] | None" = None, index: "_IndexWriter | None" = None,
               group_bytes: int | None = None, count_scanned: bool = False) -> _Read:
    """Every row (``previous`` None) or the candidates since ``previous``, over ``workers``
    connections by heap range; each goes to its shard in ``sink`` (a spill, or a first export's
    shards written while reading) with its sort key, hashes and the filters' verdict. ``collect``:
    also keep those facts of every row in memory (a refresh's candidates). ``index``: write every
    row's facts into this row index as they are read (a first export; only released rows, the
    table's columns only, go to the sink then). ``known``: the
    previous row index; a released row whose hash is the one it had there (unchanged, or changed
    only in volatile columns) is not spilled, as nothing will be written from it (``known()`` gives
    it, waiting until it is built). ``group_bytes``: read batches gathered before they are cut
    per shard, GROUP_BYTES unless given (a first export's grow with its shard count,
    :func:`first_export_group_bytes`). ``count_scanned``: also count the rows of the snapshot the
    scans visited, shipped or not (:func:`candidates.scanned_sql`): ``_Read.scanned``, None when
    Postgres keeps no such count."""
    group_bytes = group_bytes or GROUP_BYTES
    units = list(plan.ranges)
    shard_ids = np.asarray(layout.ids, np.int32)  # a shard's position -> its id
    lock = threading.Lock()
    facts: list[pl.DataFrame] = []
    totals = {"rows": 0, "nbytes": 0, "sunk": 0}
    visited: list[int | None] = []  # count_scanned: rows each connection's scans visited (None: not counted)
    errors: list[BaseException] = []
    stop = threading.Event()

    def handle(batches: list[pa.RecordBatch]) -> None:
        """A group of read batches (``group_bytes``): conformed, sort keys and hashes computed,
        then cut into one piece per shard by the sink (``put``; per-batch pieces were ~80 rows,
        and each write of one cost more than its rows)."""
        keep = pa.chunked_array([b.column(cand_sql.KEEP_COLUMN) for b in batches])
        table = pa.Table.from_batches([conform(b, plan.schema) for b in batches], schema=plan.schema.arrow)
        nbytes = table.nbytes
        parts, rows = layout.cluster_parts(table)
        skc = pa.array(parts, pa.string()).take(rows)  # the sort key's cluster part
        h1, h2 = row_hashes(table, hash_columns)
        pos = layout.shard_of(parts, rows, table)
        # a refresh keeps the whole sort key of what it reads (its candidates)
        skc_pl = pl.from_arrow(skc) if collect or index is None else None
        sk = skc_pl + sort_keys(table, [layout.key]) if skc_pl is not None else None
        keep_np = pc.fill_null(keep, False).to_numpy().astype(bool)
        f = pl.DataFrame({layout.key: pl.from_arrow(table.column(layout.key)), _SK: sk, _SKC: skc_pl, _H1: h1, _H2: h2,
                          _KEEP: keep_np, _SHARD: pos}) if collect else None
        if index is not None:  # a first export: its released rows are spilled, the table's columns only
            index.write(table.column(layout.key), skc, shard_ids[pos], keep_np, h1, h2)
            full, spilled = table, np.flatnonzero(keep_np)
        else:
            if known is not None and len(pos):
                spilled = np.flatnonzero(~(known().unchanged(pl.from_arrow(table.column(layout.key)), h1, h2) & keep_np))
            else:
                spilled = np.arange(len(pos))
            # with the facts the refresh needs to place them (none when every candidate is unchanged:
            # S5's 200k touched rows built this table, their sort keys copied, for nothing)
            full = pa.Table.from_arrays([*table.columns, sk.to_arrow().cast(pa.large_string()), h1.to_arrow(), h2.to_arrow(),
                                         pa.array(keep_np)], schema=sink.schema) if len(spilled) else None
        if len(spilled):
            order = spilled[np.argsort(pos[spilled], kind="stable")]
            sink.put(full, order, pos[order])
        with lock:
            if f is not None:
                facts.append(f)
            totals["rows"] += table.num_rows
            totals["nbytes"] += nbytes
            totals["sunk"] += len(spilled)
        progress.advance(table.num_rows, nbytes)

    queue = list(reversed(units))

    def scanned(cur) -> int | None:
        cur.execute(cand_sql.scanned_sql(plan))
        n, kept = cur.fetchone()
        return int(n) if kept else None

    def worker() -> None:
        try:
            with shared.connection() as (_, cur):
                before = scanned(cur) if count_scanned else None
                while not stop.is_set():
                    with lock:
                        if not queue:
                            break
                        lo, hi = queue.pop()
                    cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_bytes)})
                    cur.execute(cand_sql.read_sql(plan, previous, lo, hi))
                    reader = cur.fetch_record_batch()
                    try:
                        group: list[pa.RecordBatch] = []
                        size = 0
                        for batch in reader:
                            if stop.is_set():
                                return
                            group.append(batch)
                            size += batch.nbytes
                            if size >= group_bytes:
                                handle(group)
                                group, size = [], 0
                        if group:
                            handle(group)
                    finally:
                        with contextlib.suppress(Exception):
                            reader.close()
                if count_scanned and not stop.is_set():
                    after = scanned(cur)
                    with lock:
                        visited.append(None if before is None or after is None else after - before)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(workers, len(units))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise source_failure(shared.uri, errors[0])
    empty = pl.DataFrame(schema={layout.key: _key_dtype(plan), _SK: pl.String, _SKC: pl.String, _H1: pl.UInt64, _H2: pl.UInt64,
                                 _KEEP: pl.Boolean, _SHARD: pl.Int32})
    return _Read(pl.concat([empty, *facts], how="vertical_relaxed") if facts else empty, totals["rows"], totals["nbytes"],
                 totals["sunk"], sum(visited) if visited and None not in visited else None)


def _runs(shards: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(shard, start, end) of each run of equal values in ``shards`` (rows grouped by shard)."""
    cuts = np.flatnonzero(np.diff(shards)) + 1
    for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(shards)]])):
        yield int(shards[a]), int(a), int(b)


def _gather(batches: list[pa.RecordBatch], rows: np.ndarray, schema: pa.Schema) -> pa.Table:
    """The ``rows`` (ascending, numbered across ``batches``) of ``batches``: a take from each batch
    that holds some, so the batches are never concatenated first."""
    offsets = np.cumsum([0] + [b.num_rows for b in batches])
    cuts = np.searchsorted(rows, offsets)
    parts = [batches[i].take(pa.array(rows[cuts[i]:cuts[i + 1]] - offsets[i]))
             for i in range(len(batches)) if cuts[i + 1] > cuts[i]]
    return pa.Table.from_batches(parts, schema=schema)


class _Known:
    """The previous row index, sorted by a 64-bit hash of its keys, for lookups by binary search
    (no hash table built per batch). Sorting 1M uuid keys as text took 0.97 s of a 3.35 s refresh
    (bench/refresh.py, S1); their hashes sort in a few tens of milliseconds. Keys are compared
    too: equal hashes of different keys are told apart. It holds every row of the index, released
    or not, so that the classification finds a candidate's previous row here too (a polars join
    of the candidates with the whole index built a hash table of its 1M keys: 80-95 ms per join)."""

    _SEED = 0x5EED_0003

    def _hash(self, keys: pl.Series) -> np.ndarray:
        return keys.hash(seed=self._SEED).to_numpy()

    def __init__(self, index: pl.DataFrame, key: str):
        kh = self._hash(index.get_column(key))
        # numpy, not polars, for the hashes: a lookup of a shard's 100 keys took ~1 ms in polars'
        # eager calls, and a refresh makes one per rewritten shard. Only the key hashes are
        # sorted; the rest is reached through ``order`` (gathering it all took 65 ms of 120 at 1M rows)
        self.order = pl.Series(kh).arg_sort().to_numpy()  # polars' sort: a third of numpy's time here
        self.kh = kh[self.order]
        self.index, self.key = index, key
        self.keys = index.get_column(key)
        self.keep = index.get_column(_KEEP).to_numpy()
        self.h1, self.h2 = (index.get_column(c).to_numpy() for c in (_H1, _H2))

    def rows(self, keys: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """(whether the index holds each key, its row in the index, 0 if not)."""
        keys = keys.cast(self.keys.dtype)
        n = len(self.keys)
        if n == 0:
            return np.zeros(len(keys), dtype=bool), np.zeros(len(keys), dtype=np.int64)
        h = self._hash(keys)
        at = np.searchsorted(self.kh, h, side="left").astype(np.int64)
        inside = at < n
        at = np.where(inside, at, 0)
        hit = inside & (self.kh[at] == h)
        row = self.order[at]
        found = hit & (self.keys.gather(row) == keys).fill_null(False).to_numpy()
        for i in map(int, np.flatnonzero(hit & ~found)):  # another key with the same hash first: walk its run
            j = int(at[i]) + 1
            while j < n and self.kh[j] == h[i]:
                if self.keys[int(self.order[j])] == keys[i]:
                    row[i], found[i] = self.order[j], True
                    break
                j += 1
        return found, row

    def released(self, keys: pl.Series) -> np.ndarray:
        """Whether each key was released before."""
        found, row = self.rows(keys)
        out = found.copy()
        out[found] = self.keep[row[found]]  # only the rows found are read (an empty index has none)
        return out

    def unchanged(self, keys: pl.Series, h1: pl.Series, h2: pl.Series) -> np.ndarray:
        """Whether each key was released before with the same hashes."""
        return self.unchanged_rows(*self.rows(keys), h1, h2)

    def unchanged_rows(self, found: np.ndarray, row: np.ndarray, h1: pl.Series, h2: pl.Series) -> np.ndarray:
        """The same, for keys :meth:`rows` found (``found``, ``row``)."""
        out = found.copy()
        at = row[found]
        out[found] = self.keep[at] & (self.h1[at] == h1.to_numpy()[found]) & (self.h2[at] == h2.to_numpy()[found])
        return out

    def joined(self, frame: pl.DataFrame, found: np.ndarray, row: np.ndarray, names: dict[str, str]) -> pl.DataFrame:
        """``frame``, whose keys :meth:`rows` found (``found``, ``row``), with the index's other
        columns renamed by ``names``, null where the index does not hold the key: a left join on
        the key, in ``frame``'s order (keys are unique in both)."""
        other = self.index.drop(self.key).rename(names)
        if not found.any():  # also an empty index, which has no row to gather
            return pl.concat([frame, other.clear(frame.height)], how="horizontal")
        held = pl.Series("__held", found)
        picked = other[row].with_columns(pl.when(held).then(pl.col(c)).alias(c) for c in other.columns)
        return pl.concat([frame, picked], how="horizontal")


def _key_dtype(plan: TablePlan):
    key = primary_key(plan.config, plan.info)
    return pl.from_arrow(pa.array([], type=plan.schema.arrow.field(key).type)).dtype


# ---------------------------------------------------------------------------------------------
# Writing shards
# ---------------------------------------------------------------------------------------------


SMALL_CHUNK_BYTES = 1 << 20  # chunks smaller than this on average are combined before encoding


# A part of up to ROW_GROUP_SLACK row groups' bytes is written as one row group; a bigger one is cut
# into equal row groups of about row_group_bytes. A rewrite hands each previous row group over as a
# part, changes applied: re-cut by size, one whose rows grew by a few bytes became a row group and a
# sliver (32,896 rows -> 32,864 + 32), and every column chunk after it moved to other rows, so Xet
# found none of them (S4 with 256 MiB shards, 2026-12-03: 52.8 of a rewritten shard's 107 MB in
# changed column chunks where two columns changed, 15.8 MB sent). A first export's waiting pieces
# (a row group's bytes and at most one read group more) were cut the same way, into a row group
# and a sliver (32,961 + 2,420 rows).
ROW_GROUP_SLACK = 1.5


def _groups(nbytes: int, options: ParquetOptions) -> int:
    """The row groups a part of ``nbytes`` is written as: one up to ROW_GROUP_SLACK row groups'
    bytes, else as many as its bytes fill."""
    return 1 if nbytes <= ROW_GROUP_SLACK * options.row_group_bytes else -(-nbytes // options.row_group_bytes)


def _write_part(w: pq.ParquetWriter, part: pa.Table, options: ParquetOptions) -> int:
    """``part`` as the next row group of ``w``, or as the next equal row groups when it is over
    ROW_GROUP_SLACK row groups' bytes; its rows."""
    if part.num_rows == 0:
        return 0
    # the encoder pays per chunk: with many shards, spilled pieces hold a few hundred rows (big ones
    # are written as they are: a copy of each piece raised the peak memory). The size is that of the
    # chunks' buffers (a slice counts its parent's): ``nbytes`` walks the buffers through a set, and
    # on a spilled shard of 117 pieces took 6.6 ms where combining them took 5 (this 0.6)
    if part.get_total_buffer_size() < SMALL_CHUNK_BYTES * part.column(0).num_chunks:
        part = part.combine_chunks()
    groups = min(_groups(part.nbytes, options), part.num_rows)
    for i in range(groups):
        start, end = part.num_rows * i // groups, part.num_rows * (i + 1) // groups
        piece = part.slice(start, end - start)
        w.write_table(piece, row_group_size=piece.num_rows)
    return part.num_rows


def _fragmented(md: pq.FileMetaData) -> bool:
    """Whether a shard's main file is worth compacting (one new file of full row groups) when it is rewritten:
    more than MAX_ROW_GROUPS row groups and more than twice as many as its rows need at its
    biggest row group's rows (folded tails and deletions leave many small ones). Not the count
    alone: a shard of the default 256 MiB is written in some 40 full row groups, and compacting it
    on every rewrite sent all of it to the Hub again."""
    groups = md.num_row_groups
    if groups <= MAX_ROW_GROUPS:
        return False
    biggest = max(md.row_group(i).num_rows for i in range(groups))
    return groups > 2 * -(-md.num_rows // max(1, biggest))


def _write(path: Path, parts: Iterable[pa.Table], plan: TablePlan, options: ParquetOptions, chunk: int | None = None) -> FileEntry:
    """``parts`` as consecutive row groups of one file (:func:`_write_part`: a part is one row group unless it is much bigger), the
    file of shard ``chunk`` when it is known here (a rewrite's pieces get theirs once placed)."""
    try:
        w = parquet_writer(path, plan.schema, options)
        rows = 0
        try:
            for part in parts:
                rows += _write_part(w, part, options)
        finally:
            w.close()
        return FileEntry.written(path, rows, chunk=chunk)
    except OSError as exc:
        raise disk_error(exc, path.parent) from None


Spliced = tuple[int, "pa.Table | None", "list[int] | None"]


def splice_groups(pf: pq.ParquetFile, key: str, out_keys: pl.Series,
                  updates_of: Callable[[int], tuple[pa.Table | None, pl.Series]], schema: pa.Schema) -> Iterator[Spliced]:
    """A previous file's row groups with changes applied, as :func:`write_spliced` takes them:
    ``(i, None, None)`` for row group ``i`` as it was (no row of it updated or gone: not even
    decoded), ``(i, rows, changed)`` for one whose updated rows changed the columns ``changed``
    only (``[]``: none, they held what they held), ``(i, rows, None)`` for one that lost rows. A
    row group left empty is left out. ``updates_of(i)``: the updated rows for row group ``i`` and
    their keys (rows of other row groups among them are ignored). The refresh and the change feed's
    replay (``export/feed.py``) both go through here, so both write the same bytes."""
    gone = out_keys.to_arrow()
    for i in range(pf.num_row_groups):
        new, keys = updates_of(i)
        if not len(keys):
            held = pf.read_row_group(i, columns=[key]).column(key) if len(gone) else None
            if held is None or not pc.any(pc.is_in(held, value_set=gone.cast(held.type))).as_py():
                yield i, None, None
                continue
        g, changed = _apply_columns(_in_schema(pf.read_row_group(i), schema), key, out_keys, keys, new)
        if g.num_rows:
            yield i, g, changed


def write_spliced(path: Path, raw: BinaryIO, groups: Iterable[Spliced], schema: pa.Schema, dictionary: list[str],
                  statistics: list[str], options: ParquetOptions) -> FileEntry:
    """A file rewritten from its previous version ``raw`` (written in ``schema`` with these writer
    settings: a refresh's basis says so) and ``groups`` (:func:`splice_groups`): a row group as it
    was is copied, column chunks, page index and all (``export/splice.py``); of one whose updated
    rows changed some columns, only those are encoded (by the same writer, as a file of their own)
    and the others copied; one that lost rows is encoded again whole (cut as :func:`_write_part`
    cuts). Encoded columns are combined into one Arrow chunk first: content-defined chunking
    cuts pages by the chunks it is handed, and the change feed's replay must write the same
    bytes. Where the previous file was written from single-chunk row groups the file is
    :func:`_write`'s byte for byte (a test checks it); where its columns came in pieces (a first
    export), a copied column keeps the bytes it had, pages and all.

    What it saves: S2 of ``make bench-refresh`` (new titles or tags on 1 % of the rows, spread over
    every shard) rewrote every shard decoding 1.05 and encoding 2.3 CPU-s per 1M rows; a title's
    update changes 3 of ``image``'s 26 columns, so most of that encoding was of values that had not
    changed, into the bytes they had."""
    names = schema.names

    def encoded(part: pa.Table, whole: bool) -> splice.Source:
        columns = part.schema.names
        sink = pa.BufferOutputStream()
        w = pq.ParquetWriter(sink, part.schema, **writer_arguments(
            options, [c for c in dictionary if c in columns], [c for c in statistics if c in columns]))
        try:
            if whole:
                _write_part(w, part, options)
            else:
                w.write_table(part, row_group_size=part.num_rows)
        finally:
            w.close()
        return splice.Source(pa.BufferReader(sink.getvalue()))

    try:
        src = splice.Source(raw)
        with open(path, "wb") as out:
            w = splice.Writer(out, src)
            for i, rows, changed in groups:
                if rows is None or changed == []:  # as it was
                    w.add(src.rows(i), src.chunks(i))
                elif changed is None or _groups(rows.nbytes, options) > 1:
                    new = encoded(rows.combine_chunks(), True)
                    for j in range(len(new.row_groups)):
                        w.add(new.rows(j), new.chunks(j))
                else:
                    new = encoded(rows.select([names[c] for c in changed]).combine_chunks(), False)
                    w.add(rows.num_rows, [new.chunk(0, changed.index(c)) if c in changed else src.chunk(i, c)
                                          for c in range(len(names))])
            w.close()
    except OSError as exc:
        raise disk_error(exc, path.parent) from None
    except ValueError as exc:  # the previous file is not what its footer says
        raise UserError(f"a file of the previous snapshot cannot be read as it is ({exc}); nothing was committed "
                        f"to the store, rerun the export with --full.") from None
    write_behind(path)
    return FileEntry.written(path, w.rows)


class _Buffered:
    """A first export's shards written while the rows are read (no spill): each shard's rows wait
    in memory until they make a row group, and when all shards together hold more than ``budget``
    bytes, the one holding most is written as a (smaller) row group. Same interface as
    :class:`_Spill`'s ``write``; :meth:`close` writes what is left and returns the files."""

    def __init__(self, staging: Path, plan: TablePlan, ids: list[int], options: ParquetOptions, budget: int):
        self.staging, self.plan, self.ids, self.options, self.budget = staging, plan, ids, options, budget
        n = len(ids)
        self._pending: list[list[pa.Table]] = [[] for _ in range(n)]
        self._sizes = [0] * n
        self._total = 0
        self._lock = threading.Lock()
        self._write_locks = [threading.Lock() for _ in range(n)]
        self._writers: dict[int, pq.ParquetWriter] = {}
        self._rows = [0] * n

    def _take(self, pos: int) -> tuple[int, list[pa.Table]]:
        parts, self._pending[pos] = self._pending[pos], []
        self._total -= self._sizes[pos]
        self._sizes[pos] = 0
        return pos, parts

    def _add(self, pos: int, piece: pa.Table) -> None:
        self._pending[pos].append(piece)
        self._sizes[pos] += piece.nbytes
        self._total += piece.nbytes

    def put(self, group: pa.Table, order: np.ndarray, shards: np.ndarray) -> None:
        """Rows ``order`` of ``group``, grouped by shard (``shards``: each one's): each shard's taken
        from each read batch (pieces that share no buffer, so the ones waiting in memory hold only
        their own rows, and none is copied again; a take from the group would first concatenate
        its batches); a group whose rows are all one shard's goes whole."""
        if len(order) == group.num_rows and shards[0] == shards[-1]:
            self.write(int(shards[0]), group)
            return
        batches = group.to_batches()
        for pos, a, b in _runs(shards):
            self.write(pos, _gather(batches, order[a:b], group.schema))

    def write(self, pos: int, piece: pa.Table) -> None:
        """``piece``: rows of shard ``pos`` that share no buffer with another shard's (:meth:`put`),
        so what waits here is what is counted."""
        due = []
        with self._lock:
            self._add(pos, piece)
            if self._sizes[pos] >= self.options.row_group_bytes:
                due.append(self._take(pos))
            while self._total > self.budget:
                due.append(self._take(int(np.argmax(self._sizes))))
        for p, parts in due:
            self._encode(p, parts)

    def _encode(self, pos: int, parts: list[pa.Table]) -> None:
        part = _data(pa.concat_tables(parts), self.plan)
        try:
            with self._write_locks[pos]:
                w = self._writers.get(pos)
                if w is None:
                    w = self._writers[pos] = parquet_writer(self.staging / shard_file(self.ids[pos]), self.plan.schema,
                                                            self.options)
                self._rows[pos] += _write_part(w, part, self.options)
        except OSError as exc:
            raise disk_error(exc, self.staging) from None
        parts.clear()  # the caller's list: the pieces are freed here, not when it returns
        del part
        # the pool keeps freed pages of pieces, merges and encodes of many sizes: 5M rows in 4
        # shards grew to 530 MiB without this, stayed under 470 MiB with it, no slower
        pa.default_memory_pool().release_unused()

    def finish(self, workers: int) -> dict[int, FileEntry]:
        """Writes the rows still waiting and closes every shard (``workers`` threads); {position: file}."""

        def close(pos: int) -> tuple[int, FileEntry]:
            self._writers[pos].close()
            return pos, FileEntry.written(self.staging / shard_file(self.ids[pos]), self._rows[pos], chunk=self.ids[pos])

        try:
            with ThreadPoolExecutor(max(1, workers)) as pool:
                list(pool.map(lambda item: self._encode(*item),
                              [self._take(p) for p in range(len(self.ids)) if self._pending[p]]))
                return dict(pool.map(close, sorted(self._writers)))
        except OSError as exc:
            raise disk_error(exc, self.staging) from None
        finally:
            self.abort()

    def abort(self) -> None:
        for w in self._writers.values():
            with contextlib.suppress(Exception):
                w.close()
        self._writers.clear()


def _data(table: pa.Table, plan: TablePlan) -> pa.Table:
    """The table's columns, in the release's schema."""
    return _in_schema(table, plan.schema.arrow)


def _in_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table's columns of ``schema``, in it (a cast walks every chunk: 0.6 ms on a spilled
    shard, skipped when the schema is already that one)."""
    table = table.select(schema.names)
    return table if table.schema.equals(schema, check_metadata=True) else table.cast(schema)


# ---------------------------------------------------------------------------------------------
# The export
# ---------------------------------------------------------------------------------------------


class _Stages:
    """Wall seconds of an export's stages, in order (the manifest's ``timings.stages_seconds``): where
    a slow run spent its time. First export: read (the rows read, hashed, cut into shards and, when
    written while reading, encoded), finish (the rest written and closed). Refresh: read (the
    candidates), classify, rewrite (the touched shards), index, feed (the change feed)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now


@dataclass
class ClusteredResult:
    files: list[FileEntry]
    reuse: dict[str, str]
    layout: dict
    changes: dict | None
    rows: int
    rows_read: int
    timings: dict = field(default_factory=dict)


def _read_index(store: Store, prefix: str, m: Manifest, staging: Path) -> pl.DataFrame:
    """The previous snapshot's row index, checked against the sha256 its manifest records. An object
    store's is downloaded once, into ``staging`` (it was downloaded twice: once for the sha256, once
    to read it). Read by polars from the file: read into an Arrow table first, the table's pages
    stayed in Arrow's pool beside polars' copy. 1M rows in 140 row groups, on their own: 0.50 s and
    257 MiB through Arrow, 0.06 s and 106 MiB so; at that point of a refresh (bench/refresh.py S1):
    202 against 105 MiB (the candidates' read, next, reused the pool's pages: the refresh's peak
    moved less; 2026-12-02)."""
    info = (m.layout or {}).get("index") or {}
    key = f"{prefix}/{info.get('path', INDEX)}"
    path = store.local_path(key)
    spooled = path is None
    if spooled:
        path = _spooled(store, key, staging)
    try:
        if sha256_file(path) != info.get("sha256"):
            raise ValueError(f"{key} does not match the sha256 its manifest records")
        return pl.read_parquet(path)
    finally:
        if spooled:
            path.unlink(missing_ok=True)


def export_clustered(shared: PostgresSnapshot, plan: TablePlan, snapshot: str, store: Store, staging: Path,
                     options, progress: Progress, log, dates: list[str], count=None) -> ClusteredResult:
    """Export ``plan``'s table into ``staging`` in layout clustered: a refresh of the newest earlier
    snapshot of the same basis when there is one (and ``options.incremental`` allows), else a first export."""
    t0 = time.perf_counter()
    cfg = plan.config
    table = plan.info.name
    key = primary_key(cfg, plan.info)
    volatile = set(cfg.volatile_columns)
    unknown = sorted((volatile | set(cfg.cluster_by)) - set(plan.schema.names))
    if unknown:
        raise UserError(f"{table}: cluster_by or volatile_columns name {', '.join(unknown)}, which the export does not "
                        f"read; fix them in the table configuration.")
    if volatile & (set(cfg.cluster_by) | {key}):
        raise UserError(f"{table}: a volatile column cannot be the key or a clustering column; fix volatile_columns.")
    hash_columns = [c for c in plan.schema.names if c not in volatile]
    basis = clustering_basis(plan, options.parquet.as_dict())
    base = None
    why = None
    incremental = cfg.incremental if options.incremental is None else options.incremental
    if incremental:
        base = newest_manifest(store, table, [d for d in dates if d < snapshot],
                               lambda m: bool(m.layout) and m.layout.get("basis") == basis)
    if base is not None and not base[1].layout.get("shards"):
        # the table was empty then: no shard ranges to keep changes in, and no row to reuse
        log(f"{table}: not building on {base[0]}: it holds no rows; exporting every row")
        base = None

    def first_export() -> ClusteredResult:
        counting = count() if count is not None else None  # count(*) with the filters, a query of its own
        try:
            result = _first_export(shared, plan, store, staging, options, progress, log, key, hash_columns, basis)
        finally:
            if counting is not None:
                counting.wait()
        if counting is not None:
            source_rows, seconds = counting.result()
            if source_rows != result.rows:
                raise UserError(f"{table}: the source holds {source_rows} rows at the snapshot but {result.rows} were exported; "
                                f"nothing was committed to the store, rerun the export.")
            result.timings.update(source_rows_counted=source_rows, count_check="rows = count(*) with the export's "
                                  "filters, a separate query on the same Postgres snapshot", count_seconds=seconds)
        return result

    if base is None:
        result = first_export()
    else:
        date, m = base
        # the row index is read and checked while Postgres scans for the candidates (it is needed
        # only when the first ones arrive; one that cannot be used still means a first export).
        # Read before the scan began, S1's refresh took 0.90-0.92 against 0.88-0.89 s at 1M rows,
        # 3.17 against 2.98 s at 5M (bench/README.md)
        index = Background(_index_or_unusable, store, table_prefix(date, table), m, staging)
        try:
            mode, previous, why = _trust(shared, plan, m)
            result = _refresh(shared, plan, store, staging, options, progress, log, key, hash_columns, basis,
                              date, m, index, previous, why, count)
        except _UnusableIndex as exc:
            log(f"{table}: not building on {date}: its row index cannot be used ({exc.__cause__}); exporting every row")
            shutil.rmtree(staging / "_spill", ignore_errors=True)
            result = first_export()
        finally:
            index.wait()
    result.timings["clustered_seconds"] = round(time.perf_counter() - t0, 3)
    return result


class _UnusableIndex(Exception):
    """The previous row index failed its check or could not be read (its cause says why)."""


def _index_or_unusable(store: Store, prefix: str, m: Manifest, staging: Path) -> pl.DataFrame:
    try:
        return _read_index(store, prefix, m, staging)
    except (ValueError, OSError, UserError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        raise _UnusableIndex() from exc


def _trust(shared: PostgresSnapshot, plan: TablePlan, m: Manifest):
    """("xmin", previous snapshot, None) when candidates by xmin are sound; else ("content", None, why)."""
    blocker = reuse_blocker(m.source_identity, plan.identity)
    if blocker and "was recreated, truncated or rewritten" in blocker:
        # VACUUM FULL, CLUSTER and TRUNCATE keep the table's oid and every row's xmin meaning:
        # only another table (another oid) is a different base
        old_rel = (m.source_identity or {}).get("relations") or {}
        new_rel = plan.identity.get("relations") or {}
        same_oids = all(str(old_rel.get(n, "")).split("/")[0] == str(new_rel.get(n, "")).split("/")[0]
                        for n in new_rel.keys() | old_rel.keys())
        blocker = None if same_oids else blocker
        if blocker is None:
            check = dict(m.source_identity or {})
            check["relations"] = new_rel
            blocker = reuse_blocker(check, plan.identity)
    if blocker:
        return "content", None, blocker
    try:
        previous = cand_sql.parse_txid_snapshot((m.source_snapshot or {}).get("txid_snapshot"))
    except ValueError as exc:
        return "content", None, str(exc)
    distance = cand_sql.xid_distance(shared.cur, previous)
    if distance < 0 or distance >= cand_sql.XID_LIMIT:
        return "content", None, f"the previous snapshot is {distance} transactions away (xmin comparisons need under {cand_sql.XID_LIMIT})"
    return "xmin", previous, None


def _sample_bounds(shared: PostgresSnapshot, plan: TablePlan, cluster: list[str], shards: int) -> list[str | None]:
    if shards <= 1:
        return [None]
    rows = max(1, plan.estimated_rows or 1)
    want = min(rows, 200 * shards)
    pct = 100.0 * want / rows
    shared.cur.execute(cand_sql.sample_sql(plan, cluster, pct))
    sample = shared.cur.fetch_arrow_table()
    if sample.num_rows < shards:
        return [None]
    sample = conform_sample(sample, plan, cluster)
    sk = sort_keys(sample, cluster).sort()
    step = len(sk) / shards
    cuts = sorted(set(sk[int(round(i * step))] for i in range(1, shards)))
    return [None, *cuts]


def conform_sample(sample: pa.Table, plan: TablePlan, cluster: list[str]) -> pa.Table:
    """The sample's columns (``cluster``, in that order) in the table's stable types."""
    cols = tuple(plan.schema.columns[plan.schema.names.index(c)] for c in cluster)
    sub = dataclasses.replace(plan.schema, columns=cols, arrow=pa.schema([plan.schema.arrow.field(c) for c in cluster]))
    batches = sample.combine_chunks().to_batches()
    if not batches:
        return sub.arrow.empty_table()
    return pa.Table.from_batches([conform(b, sub) for b in batches], schema=sub.arrow)


# A shard is written by one thread, after the read: a table of fewer shards than workers gets one
# per worker (each of at least MIN_SHARD_BYTES), so that every worker encodes. One 195 MB shard of 1M
# rows took 12.9 s, two 8.1 s, four 9.0 s, the chunk layout 6.3 s (bench/run.py --tools
# ours,ours_clustered --measure whole-process, 2026-12-01).
MIN_SHARD_BYTES = 32 * 1024 * 1024


def _estimate_shards(plan: TablePlan, shard_bytes: int, workers: int = 1) -> int:
    # parquet (zstd) of the media tables is ~0.18x their heap (bench/README.md: 195 MB for a 1.1 GB heap)
    parquet = plan.pages * plan.info.block_size * 0.18
    n = max(1, round(parquet / shard_bytes))
    want = min(workers, int(parquet // MIN_SHARD_BYTES))
    return max(n, want)


# A first export writes its shards while it reads (_Buffered) when that holds at most
# BUFFER_BYTES of rows in memory and still gives row groups of at least MIN_BUFFERED_GROUP bytes
# (up to 8 shards); else each shard's rows are spilled to disk first and written after the read
# (_Spill), in row groups as big as the shard allows. 1M rows in 2 shards: 7.3-8.3 s written
# while reading against 8.8-9.4 s spilled; 5M in 4: 34.8-40.0 s against 48.2 s (bench/run.py
# --tools ours_clustered --measure whole-process, 2026-12-02). 1M rows in 99 shards of ~2 MB
# (make bench-refresh): 11.1-14.2 s written while reading in row groups of 0.6 MiB, 5 % more
# bytes, against 9.4-12.3 s spilled, one row group per shard (runs half an hour apart).
BUFFER_BYTES = 64 << 20
MIN_BUFFERED_GROUP = 8 << 20


def _buffered(shards: int, options: ParquetOptions) -> bool:
    return min(options.row_group_bytes, BUFFER_BYTES // max(1, shards)) >= min(MIN_BUFFERED_GROUP, options.row_group_bytes)


def _first_export(shared, plan, store, staging, options, progress, log, key, hash_columns, basis) -> ClusteredResult:
    cfg = plan.config
    cluster = list(cfg.cluster_by) + [key]
    n = _estimate_shards(plan, cfg.shard_bytes, options.workers)
    lowers = _sample_bounds(shared, plan, cluster, n)
    layout = _Layout(list(cfg.cluster_by), key, lowers, list(range(len(lowers))))
    ids = layout.ids
    buffered = _buffered(len(lowers), options.parquet)
    # released rows, the table's columns only
    sink = _Buffered(staging, plan, ids, options.parquet, BUFFER_BYTES) if buffered \
        else _Spill(staging / "_spill", plan.schema.arrow, len(lowers))
    index = _IndexWriter(staging / INDEX, plan)
    stages = _Stages()
    progress.start(f"{plan.info.name}", plan.estimated_rows)
    try:
        read = _read_rows(shared, plan, layout, None, sink, hash_columns, options.workers, options.batch_bytes, progress,
                          collect=False, index=index, group_bytes=first_export_group_bytes(len(ids)))
    except BaseException:
        sink.abort()
        index.abort()
        raise
    finally:
        progress.finish()
    stages.done("read")
    index_entry = index.close()
    if buffered:
        files = sink.finish(options.workers)
    else:  # the whole table is encoded now: its own progress (hours for a table of 10^9 rows)
        progress.start(f"{plan.info.name}: writing {len(ids)} shards from the spill", read.sunk)
        try:
            files = _write_spilled(sink, staging, plan, ids, options, progress)
        finally:
            progress.finish()
    stages.done("finish")
    # shards that received no released row are dropped; their ranges join the shard before them
    shards = [{"id": ids[p], "lower": layout.lowers[p], "path": files[p].path} for p in sorted(files)]
    if shards:
        shards[0]["lower"] = None
    released = sum(f.rows for f in files.values())
    layout_doc = {"kind": "clustered", "basis": basis, "cluster_by": list(cfg.cluster_by), "key": key,
                  "shard_bytes": cfg.shard_bytes, "volatile_columns": sorted(cfg.volatile_columns),
                  "hash_scheme": HASH_SCHEME, "shards": shards, "index": index_entry,
                  "tombstones": _tombstones(shared, plan),
                  "refresh": {"mode": "first export", "rows_read": read.rows, "bytes_read": read.nbytes,
                              "shards_written": len(files), "files_written": len(files), "files_reused": 0,
                              "written_while_reading": buffered}}
    if index_entry["rows"] != read.rows:
        raise UserError(f"{plan.info.name}: {read.rows} rows were read but the row index holds {index_entry['rows']}; "
                        f"nothing was committed to the store, rerun the export.")
    return ClusteredResult(sorted(files.values(), key=lambda f: f.path), {}, layout_doc, None, released, read.rows,
                           {"rows_read": read.rows, "bytes_read": read.nbytes, "index_released_rows": released,
                            "stages_seconds": stages.seconds})


def _write_spilled(spill: _Spill, staging: Path, plan: TablePlan, ids: list[int], options,
                   progress: Progress) -> dict[int, FileEntry]:
    """Each shard from its spill (its released rows), in the order they were read: a sort within
    the shard cost as much as the encoding and bought nothing measurable, the shard already holds
    one range of the sort key. Streamed a row group at a time: memory does not grow with the shard
    (one 256 MiB shard read whole took 2.2 GiB). {position: file} of the shards that hold rows."""
    spill.close()
    files: dict[int, FileEntry] = {}

    def one(pos: int) -> None:
        if not spill.holds(pos):
            return  # no released row fell in its range
        parts = (_data(t, plan) for t in spill.pieces(pos, options.parquet.row_group_bytes))
        files[pos] = _write(staging / shard_file(ids[pos]), parts, plan, options.parquet, chunk=ids[pos])
        spill.path(pos).unlink(missing_ok=True)
        progress.advance(files[pos].rows, files[pos].bytes)

    with ThreadPoolExecutor(max(1, options.workers)) as pool:
        list(pool.map(one, range(len(ids))))
    shutil.rmtree(spill.directory, ignore_errors=True)
    return files


class _IndexWriter:
    """The row index (``_index.parquet``): key, the cluster part of the sort key, shard, released,
    hashes, in the tail; row groups as rows come. The sort key's cluster part is a few distinct
    values (dictionary-encoded: about a byte a row); nothing is compressed: the hashes do not
    compress, and zstd on a uuid key saved a third of the file (58 -> 37.5 MB at 1M rows) for
    0.1 s more per 1M rows written, a cost every first export and refresh pays, where the bytes
    stay in the store (the index is never published). ~58 bytes a row, where the whole sort key
    as text made it 100."""

    def __init__(self, path: Path, plan: TablePlan):
        self.path = path
        self.key = primary_key(plan.config, plan.info)
        self.schema = pa.schema([plan.schema.arrow.field(self.key).with_nullable(False), pa.field(_SKC, pa.string()),
                                 pa.field(_SHARD, pa.int32()), pa.field(_KEEP, pa.bool_()),
                                 pa.field(_H1, pa.uint64()), pa.field(_H2, pa.uint64()), pa.field(_TAIL, pa.bool_())])
        try:
            self._writer = StagedWriter(str(path), self.schema, compression="none", write_statistics=False,
                                        use_dictionary=[_SKC, _SHARD])
        except OSError as exc:
            raise disk_error(exc, path.parent) from None
        self._lock = threading.Lock()
        self.rows = 0

    def write(self, keys, skc, shard_ids, keep, h1, h2, tail=None) -> None:
        n = len(keep)
        keys = keys.to_arrow() if isinstance(keys, pl.Series) else keys
        cols = [keys, _arrow(skc).cast(pa.string()), pa.array(np.asarray(shard_ids, np.int32)), _arrow(keep),
                _arrow(h1), _arrow(h2), _arrow(tail) if tail is not None else pa.array(np.zeros(n, bool))]
        part = pa.Table.from_arrays(cols, schema=self.schema)
        try:
            with self._lock:
                self._writer.write_table(part, row_group_size=max(1, n))
                self.rows += n
        except OSError as exc:
            raise disk_error(exc, self.path.parent) from None

    def abort(self) -> None:
        """Closes the file after a failure (the caller removes it): no error of its own hides the first."""
        with contextlib.suppress(Exception):
            self._writer.close()

    def close(self) -> dict:
        try:
            self._writer.close()
            return {"path": INDEX, "rows": self.rows, "bytes": self.path.stat().st_size, "sha256": sha256_file(self.path)}
        except OSError as exc:
            raise disk_error(exc, self.path.parent) from None


def _arrow(values):
    if isinstance(values, (pl.Series,)):
        return values.to_arrow()
    if isinstance(values, np.ndarray):
        return pa.array(values)
    return values


BAND_LIMIT = 10_000  # tombstone keys a snapshot records at most (more: the next refresh compares content)


def _tombstones(shared: PostgresSnapshot, plan: TablePlan) -> dict | None:
    """This snapshot's record of its tombstones, for the next refresh: the count older than its
    own xmin, and the keys of the others (None when more than ``BAND_LIMIT``)."""
    if not cand_sql.tombstone_table(plan):
        return None
    own = cand_sql.parse_txid_snapshot(shared.txid_snapshot)
    shared.cur.execute(cand_sql.tombstone_record_sql(plan, own))
    older, band = (int(v) for v in shared.cur.fetchone())
    keys = _key_list(shared.cur, cand_sql.tombstone_band_sql(plan, own)).to_list() if 0 < band <= BAND_LIMIT else []
    return {"older": older, "band": keys if band <= BAND_LIMIT else None}


def _tombstone_problem(record, older_now: int | None, new_tombs: pl.Series | None, base_date: str) -> str | None:
    """Why the tombstones since ``base_date`` may have lost rows (then xmin cannot be trusted), or None."""
    if older_now is None:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("older"), int):
        return f"the snapshot of {base_date} records no tombstone count"
    if older_now != record["older"]:
        return f"tombstones were removed since {base_date} ({record['older']} older than it then, {older_now} now)"
    band = record.get("band")
    if band is None:
        return f"the snapshot of {base_date} saw more than {BAND_LIMIT} tombstones of transactions open at its start"
    if band and (new_tombs is None or set(band) - set(new_tombs.cast(pl.String).to_list())):
        return f"tombstones committed around the snapshot of {base_date} were removed since"
    return None


INDEX_STEP = 1 << 18  # rows of the previous index copied (and converted for the writer) at a time


@dataclass
class _NewIndex:
    """A refresh's row index, never held whole beside the previous one (a copy of it took 90 MiB more
    at 1M rows): the previous index's rows less those that changed (``drop``), its rows tombstoned
    since (no longer released), then the rows that changed (``fresh``), in that order."""
    index: pl.DataFrame
    drop: np.ndarray
    tombs: pl.DataFrame
    fresh: pl.DataFrame

    def parts(self) -> Iterator[pl.DataFrame]:
        cols = self.fresh.columns
        keep = pl.Series(~self.drop)
        for start in range(0, self.index.height, INDEX_STEP):
            part = self.index.slice(start, INDEX_STEP).filter(keep.slice(start, INDEX_STEP)).select(cols)
            if part.height:
                yield part
        for part in (self.tombs.select(cols), self.fresh):
            if part.height:
                yield part

    def released(self) -> int:
        """Its released rows (tombstoned rows are not)."""
        kept = self.index.get_column(_KEEP).filter(pl.Series(~self.drop))
        return int(kept.sum()) + int(self.fresh.get_column(_KEEP).sum())


def _write_index(staging: Path, parts: Iterable[pl.DataFrame], key: str, plan: TablePlan) -> dict:
    """A refresh's row index, from its parts. (polars' writer took 0.15 s for 1M rows against
    pyarrow's 0.23 s, but reports a full disk as a ComputeError; the write overlaps the shards'
    rewrites anyway.)"""
    w = _IndexWriter(staging / INDEX, plan)
    try:
        for part in parts:
            w.write(part.get_column(key), part.get_column(_SKC), part.get_column(_SHARD).to_numpy(),
                    part.get_column(_KEEP), part.get_column(_H1), part.get_column(_H2), part.get_column(_TAIL))
    except BaseException:
        w.abort()
        raise
    return w.close()


def _deleted_by_tombstones(shared: PostgresSnapshot, plan: TablePlan, previous, new_tombs, index: pl.DataFrame,
                           key: str, missing: int) -> pl.Series | None:
    """The keys of the ``missing`` rows of the previous row index that are gone from the table, when
    the tombstones since ``previous`` account for all of them; else None (the caller lists the
    keys of every unchanged row). A key tombstoned since, held by the index and no longer in the
    table is one of the gone rows, so as many such keys as the count of gone rows are all of them
    (the count rests on the same fact as the rest of an xmin refresh: every row older than the
    previous snapshot is in its index). S7 of ``make bench-refresh`` (0.1 % of 1M rows removed,
    half through the tombstone table, half marked removed_from_source) listed 999k keys: its read
    stage took 1.13 s and Postgres 0.93 CPU-s, now 0.36 s and 0.57 CPU-s (2026-12-03)."""
    if new_tombs is None or len(new_tombs) < missing or not cand_sql.tombstone_table(plan):
        return None  # (no tombstone table, or too few new tombstones: no second scan of it)
    with shared.connection() as (_, cur):
        gone = _key_list(cur, cand_sql.deleted_tombstoned_sql(plan, previous))
    held = index.select(key).join(pl.DataFrame({key: gone.cast(index.schema[key])}), on=key, how="semi").get_column(key)
    return held if len(held) == missing else None


def _key_list(cur, sql: str) -> pl.Series:
    cur.execute(sql)
    t = cur.fetch_arrow_table()
    col = t.column(0)
    if pa.types.is_fixed_size_binary(col.type) or "uuid" in str(col.type):
        from dataset_assets.source.types import uuid_to_string
        col = uuid_to_string(col.combine_chunks())
    return pl.from_arrow(col)


def _refresh(shared, plan, store, staging, options, progress, log, key, hash_columns, basis,
             base_date, m: Manifest, loading: Background, previous, why, count=None) -> ClusteredResult:
    """A refresh of release ``base_date`` (manifest ``m``), its row index read by ``loading``
    (export_clustered reads it while the candidates' scan runs: its result, or _UnusableIndex)."""
    cfg = plan.config
    table = plan.info.name
    old_layout = m.layout
    base_prefix = table_prefix(base_date, table)
    shards = list(old_layout["shards"])
    lowers = [s["lower"] for s in shards]
    layout = _Layout(list(cfg.cluster_by), key, lowers, [s["id"] for s in shards])
    spill = _Spill(staging / "_spill", spill_schema(plan), len(shards))
    mode = "xmin" if previous is not None else "content"
    tomb_older = None
    unchanged = None
    deletions_found = None  # how rows gone from the table were found: "tombstones", "keys" (of every unchanged row), "content"

    def side_queries():
        with shared.connection() as (_, cur):
            out = {}
            if cand_sql.tombstone_table(plan):
                cur.execute(cand_sql.tombstone_count_sql(plan, previous))
                total, older = cur.fetchone()
                out["tomb"] = (int(total), int(older))
                if previous is not None:
                    out["new_tombs"] = _key_list(cur, cand_sql.new_tombstones_sql(plan, previous))
            return out

    side = Background(side_queries)
    # every index row by key hash, sorted once (the read's lookups, the classification, the feed's
    # insert/update), while Postgres scans for the first candidates (0.2 s at 1M rows; S1's first
    # candidates came after 0.3 s)
    lookup = Background(lambda: _Known(loading.result(), key))
    # every row is read (mode content): count(*) with the filters as well, as a first export does
    counting = count() if previous is None and count is not None else None
    stages = _Stages()
    progress.start(f"{table} changes since {base_date}", None)
    try:
        read = _read_rows(shared, plan, layout, previous, spill, hash_columns, options.workers, options.batch_bytes, progress,
                          collect=True, known=lookup.result, count_scanned=previous is not None)
    except BaseException:
        side.wait()
        if counting is not None:
            counting.wait()
        spill.abort()
        lookup.result()  # when building the lookup failed (and the read with it), its own error
        raise
    finally:
        progress.finish()
    spill.close()
    before = lookup.result()
    index = before.index
    try:
        extra = side.result()
    except BaseException as exc:
        raise source_failure(shared.uri, exc) from exc
    if "tomb" in extra:
        tomb_older = extra["tomb"][1]
    every_row, counted_by = read.scanned, "scans" if previous is not None else None
    if previous is not None and (every_row is None or every_row < read.rows):
        counted_by = "count"
        # the scans' own count is off in this Postgres (or cannot be right): a count of its own
        try:
            with shared.connection() as (_, cur):
                cur.execute(cand_sql.all_count_sql(plan))
                every_row = int(cur.fetchone()[0])
        except Exception as exc:  # noqa: BLE001
            raise source_failure(shared.uri, exc) from exc
    cand = read.facts
    cand_found, cand_row = before.rows(cand.get_column(key))  # each candidate's previous row, if any
    new_tombs = extra.get("new_tombs")
    deleted_keys = None
    if previous is not None:
        problem = _tombstone_problem(old_layout.get("tombstones"), tomb_older, new_tombs, base_date)
        if problem is None:
            in_index = int(cand_found.sum())
            expected = index.height - in_index
            unchanged = every_row - read.rows  # every row is a candidate (read) or older than the previous snapshot
            if unchanged > expected:
                problem = f"{unchanged - expected} rows older than {base_date} are not in its row index"
            elif unchanged < expected:  # rows were deleted: which? (candidates.py, "unchanged rows")
                deleted_keys = _deleted_by_tombstones(shared, plan, previous, new_tombs, index, key, expected - unchanged)
                deletions_found = "tombstones" if deleted_keys is not None else "keys"
                if deleted_keys is None:
                    with shared.connection() as (_, cur):
                        older = _key_list(cur, cand_sql.unchanged_keys_sql(plan, previous))
                    older_df = pl.DataFrame({key: older})
                    if older_df.join(index.select(key), on=key, how="anti").height:
                        problem = f"rows older than {base_date} are not in its row index"
                    else:
                        deleted_keys = index.select(key).join(cand.select(key), on=key, how="anti") \
                                            .join(older_df, on=key, how="anti").get_column(key)
        if problem is not None:
            log(f"{table}: comparing every row with {base_date}: {problem}")
            shutil.rmtree(staging / "_spill", ignore_errors=True)
            read_index = Background(lambda: index, inline=True)
            return _refresh(shared, plan, store, staging, options, progress, log, key, hash_columns, basis,
                            base_date, m, read_index, None, problem, count)
    else:
        # every row was read: whatever the index holds and the read did not is deleted
        deleted_keys = index.select(key).join(cand.select(key), on=key, how="anti").get_column(key)
        new_tombs = None
        deletions_found = "content" if len(deleted_keys) else None

    stages.done("read")
    # ---- classify -------------------------------------------------------------------------
    prev_names = {_SKC: "p_skc", _SHARD: "p_shard", _KEEP: "p_keep", _H1: "p_h1", _H2: "p_h2", _TAIL: "p_tail"}
    prev = index.rename(prev_names)
    ids = pl.Series(layout.ids, dtype=pl.Int32)
    c = cand.with_columns(pl.col(_SHARD).map_batches(lambda s: ids.gather(s), return_dtype=pl.Int32).alias("t_shard"))
    # candidates released before with the same hashes (unchanged, or changed only in volatile
    # columns) are counted, not joined with their previous index rows: with every row a candidate
    # (mode content), that join held a copy of the whole index beside them. ``j``: the others,
    # each classified by what it was and is
    same = before.unchanged_rows(cand_found, cand_row, c.get_column(_H1), c.get_column(_H2)) & c.get_column(_KEEP).to_numpy()
    j = before.joined(c.filter(pl.Series(~same)), cand_found[~same], cand_row[~same], prev_names)
    known = pl.col("p_keep").is_not_null()
    j = j.with_columns(
        pl.when(pl.col(_KEEP) & known & pl.col("p_keep") & (pl.col("t_shard") == pl.col("p_shard"))).then(pl.lit("update"))
          .when(pl.col(_KEEP) & known & pl.col("p_keep")).then(pl.lit("move"))
          .when(pl.col(_KEEP)).then(pl.lit("insert"))
          .when(known & pl.col("p_keep")).then(pl.lit("delete"))
          .otherwise(pl.lit("excluded")).alias("op"))
    gone = pl.DataFrame(schema={key: prev.schema[key], "p_shard": pl.Int32, "p_tail": pl.Boolean})
    gone_all = pl.DataFrame(schema={key: prev.schema[key]})  # rows no longer in the table: out of the index too
    if deleted_keys is not None and len(deleted_keys):
        gone_all = pl.DataFrame({key: deleted_keys.cast(prev.schema[key])})
        gone = prev.join(gone_all, on=key, how="semi").filter(pl.col("p_keep")).select(key, "p_shard", "p_tail")
    # old rows tombstoned since (and still in the table): they leave the release
    tomb_out = pl.DataFrame(schema={key: prev.schema[key], "p_shard": pl.Int32, "p_tail": pl.Boolean})
    if new_tombs is not None and len(new_tombs):
        tk = pl.DataFrame({key: new_tombs.cast(prev.schema[key])})
        tomb_out = prev.join(tk, on=key, how="semi").join(c.select(key), on=key, how="anti") \
                       .filter(pl.col("p_keep")).select(key, "p_shard", "p_tail")
        if deleted_keys is not None and len(deleted_keys):
            tomb_out = tomb_out.join(pl.DataFrame({key: deleted_keys}), on=key, how="anti")

    removals = pl.concat([
        j.filter(pl.col("op").is_in(["delete", "move"])).select(key, "p_shard", "p_tail"),
        tomb_out, gone,
    ])  # rows leaving their previous shard
    updates = j.filter(pl.col("op") == "update").select(key, "p_shard", "p_tail")
    # rows into a shard's range, by sort key; "existed": the previous release held the key (in the feed: an update)
    inserts = j.filter(pl.col("op").is_in(["insert", "move"])).select(key, _SK, "t_shard", (pl.col("op") == "move").alias("existed")) \
               .sort(_SK)
    touched = sorted(set(removals.get_column("p_shard").to_list()) | set(updates.get_column("p_shard").to_list())
                     | set(inserts.get_column("t_shard").to_list()))
    counts = {op: int(n) for op, n in j.group_by("op").len().iter_rows()}
    counts["same"] = int(np.count_nonzero(same))

    stages.done("classify")
    # ---- rewrite the touched shards ----------------------------------------------------------
    pos_of = {sid: p for p, sid in enumerate(layout.ids)}
    by_id = {s["id"]: s for s in shards}
    old_files = {f.path: f for f in m.files}
    next_id = max(layout.ids) + 1 if layout.ids else 0
    new_entries: dict[int, list[FileEntry]] = {}
    new_shards: dict[int, list[dict]] = {}
    id_lock = threading.Lock()
    ids_next = [next_id]

    def fresh_id() -> int:
        with id_lock:
            ids_next[0] += 1
            return ids_next[0] - 1

    true_deletes = removals.join(j.filter(pl.col("op") == "move").select(key), on=key, how="anti")
    feeds: dict[int, list] = {}  # each touched shard's part of the change feed, held or staged on disk
    feed_dir = staging / "_feed"
    feed_held = [0]  # bytes of the feed's rows held in memory, all shards together

    def shard_feed(sid: int, parts: list) -> list:
        """Shard ``sid``'s part of the feed, held while all shards' held parts come to at most
        UPDATES_HELD_BYTES, else staged on disk (:func:`_staged_feed`; staged always, S1's 99 small
        files cost 0.05 s)."""
        n = sum(t.get_total_buffer_size() for t in parts if isinstance(t, pa.Table))
        with id_lock:
            if feed_held[0] + n <= UPDATES_HELD_BYTES:
                feed_held[0] += n
                return parts
        return _staged_feed(feed_dir, sid, parts)

    def feed_op(t: pa.Table) -> pa.Array:
        """insert for a key the previous release did not hold, update for one it did (a new file's
        rows; rows into a shard carry it from the classification, ``existed``)."""
        existed = before.released(pl.from_arrow(t.column(key)))
        return pa.array(np.where(existed, "update", "insert"), pa.string())

    folded: set[int] = set()
    # each touched shard's part of the changes, cut once (a filter per shard cost ~1 ms of polars' overhead each)
    rem_of, upd_of, ins_of, del_of = (_by_shard(df, col) for df, col in (
        (removals, "p_shard"), (updates, "p_shard"), (inserts, "t_shard"), (true_deletes, "p_shard")))

    def rewrite(sid: int) -> None:
        """Shard ``sid`` copy-on-write. Rows appended to its range go to its tail file, so its main
        file is rewritten only when rows in it change or leave (or the tail, past 1/``TAIL_SHARE`` of
        the shard, folds into it as a new last row group). A rewritten file keeps its row groups,
        unchanged rows in their order, updated rows in place, appended rows in a new last row group.
        The change feed lists, per file: the rows deleted, the rows updated in place, then the rows
        appended, in order (a file that is new, from a split or a compaction, lists all its rows):
        what ``export/feed.py`` replays."""
        with contextlib.ExitStack() as opened:  # each previous file opened once (on S3: downloaded once)
            rewrite_shard(sid, opened)
        progress.advance(rows_before(sid), sum(e.bytes for e in new_entries.get(sid, []) if e.reused_from is None))

    def rows_before(sid: int) -> int:
        """The rows of shard ``sid`` in the previous release (main file and tail)."""
        return sum(f.rows for f in _shard_files(by_id[sid], old_files))

    def rewrite_shard(sid: int, opened: contextlib.ExitStack) -> None:
        previous_files: dict[str, tuple[pq.ParquetFile, BinaryIO]] = {}

        def previous(path: str) -> pq.ParquetFile:
            return previous_raw(path)[0]

        def previous_raw(path: str) -> tuple[pq.ParquetFile, BinaryIO]:
            if path not in previous_files:
                previous_files[path] = opened.enter_context(store.open_parquet_raw(f"{base_prefix}/{path}"))
            return previous_files[path]

        s = by_id[sid]
        rem, upd, dels = rem_of(sid), upd_of(sid), del_of(sid)
        ins = ins_of(sid)  # in sort key order
        main_path, tail_path = s["path"], s.get("tail")
        out_keys = rem.get_column(key)
        upd_main = upd.filter(~pl.col("p_tail")).get_column(key)
        upd_tail = upd.filter(pl.col("p_tail")).get_column(key)
        # the shard's changed rows, read from its spill a piece at a time: the main file's updates
        # grouped by the row group they update (on disk, a file per row group, past
        # UPDATES_HELD_BYTES; the rewrite reads one row group's at a time), the tail's updates and
        # the inserts gathered in their order (a tail is read whole anyway)
        main_rg = _row_groups_of(previous(main_path), key, upd_main, main_path) if len(upd_main) else None
        upd_rgs, (tail_tbl, ins_tbl) = _route(spill, pos_of[sid], key, upd_main, main_rg, [upd_tail, ins.get_column(key)],
                                              feed_dir / f"upd-{sid:06d}", options.batch_bytes, UPDATES_HELD_BYTES)
        ins_part = [_data(ins_tbl, plan)] if ins_tbl is not None and ins_tbl.num_rows else []
        ins_ops = [pa.array(np.where(ins.get_column("existed").to_numpy(), "update", "insert"), pa.string())] if ins_part else []
        for _pos, path in sorted(merged_in.get(sid, ())):  # a shrunken neighbour's rows, after this shard's own new rows
            rows = _read_ipc(path)
            ins_part.append(rows)
            ins_ops.append(feed_op(rows))
        main_changed = bool((~rem.get_column("p_tail")).any() or len(upd_main))
        tail_changed = bool(rem.get_column("p_tail").any() or len(upd_tail) or ins_part)

        def updated(path: str, i: int) -> tuple[pa.Table | None, pl.Series]:
            """The rows updating row group ``i`` of ``path``, and their keys."""
            if path != main_path:
                return tail_tbl, upd_tail
            new = upd_rgs.get(i)
            new = _read_ipc(new) if isinstance(new, Path) else new
            return new, (pl.from_arrow(new.column(key)) if new is not None else upd_main.clear())

        def applied(path: str) -> Iterator[pa.Table]:
            """The file's row groups with this shard's changes applied, read one at a time: a main
            file is streamed into its rewrite (two 256 MiB shards held whole took 4.9 GB), each
            row group with its own updated rows only."""
            pf = previous(path)
            for i in range(pf.num_row_groups):
                new, keys = updated(path, i)
                g = _apply(_data(pf.read_row_group(i), plan), key, out_keys, keys, new)
                if g.num_rows:
                    yield g

        def spliced(path: str) -> Iterator[Spliced]:
            """The file's row groups with this shard's changes applied, for :func:`write_spliced`."""
            return splice_groups(previous(path), key, out_keys, lambda i: updated(path, i), plan.schema.arrow)

        def write_in_place(path: str) -> FileEntry:
            """``path`` rewritten with its rows where they were (no row appended): spliced, so
            only the columns that changed are encoded again."""
            pf, raw = previous_raw(path)
            if not pf.schema_arrow.equals(plan.schema.arrow, check_metadata=True):  # (never in a refresh's basis)
                return _write(staging / path, applied(path), plan, options.parquet)
            return write_spliced(staging / path, raw, spliced(path), plan.schema.arrow, plan.schema.dictionary_columns(),
                                 plan.schema.statistics_columns(), options.parquet)

        def in_place(path: str, in_tail: bool) -> list:
            """The change feed's updates in place of a file: the main file's as staged per row group."""
            if not in_tail:
                return [_StagedRows(t, "update", path) if isinstance(t, Path)
                        else _change_rows(t, _ops("update", t.num_rows), path, plan)
                        for _, t in sorted(upd_rgs.items())]
            if tail_tbl is None:
                return []
            return [_change_rows(tail_tbl, _ops("update", tail_tbl.num_rows), path, plan)]

        feed: list = []  # tables, and references to rows staged on disk
        for in_tail, path in ((False, main_path), (True, tail_path)):
            gone_here = dels.filter(pl.col("p_tail") == in_tail).get_column(key) if dels.height else dels.get_column(key)
            if len(gone_here):
                feed.append(_delete_rows(gone_here, path, plan, key))
        if sid in merge_into:
            # shrunk under 1/MERGE_SHARE of shard_bytes: its rows, changes applied, go to the tail of
            # the neighbour that takes its range (rewrite_shard of that shard writes them, after
            # this one: staged here a row group at a time, in the spill folder); its files leave
            # the release, and the feed lists its rows as upserts into that tail
            path = staging / "_spill" / f"merge-{sid:05d}.arrow"
            try:
                with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, plan.schema.arrow, options=_SPILL_WRITE) as w:
                    for g in itertools.chain(applied(main_path), applied(tail_path) if tail_path else (), ins_part):
                        w.write_table(g)
            except OSError as exc:
                raise disk_error(exc, staging) from None
            with id_lock:
                merged_in.setdefault(merge_into[sid], []).append((pos_of[sid], path))
            new_shards[sid], new_entries[sid], feeds[sid] = [], [], shard_feed(sid, feed)
            return
        # the main file's and the tail's rows after the change, from the index (the rows leaving
        # them) and the rows new to the tail: each file is read only to be rewritten, the main file
        # a row group at a time; a tail holds at most ~1/TAIL_SHARE of a shard and is read whole
        # (once: a tail spliced in place was read a first time only to be counted). The count
        # check of every export compares the shards' rows with the row index's.
        main_rows = old_files[main_path].rows - int((~rem.get_column("p_tail")).sum())
        tail_rows = (old_files[tail_path].rows if tail_path else 0) - int(rem.get_column("p_tail").sum()) \
            + sum(t.num_rows for t in ins_part)
        if main_rows + tail_rows == 0:
            new_shards[sid], new_entries[sid], feeds[sid] = [], [], shard_feed(sid, feed)
            return
        fold = tail_rows > 0 and (tail_rows * TAIL_SHARE > main_rows)
        tail_read: list[list[pa.Table]] = []

        def tail_new() -> list[pa.Table]:
            """The tail's rows after the change, then the rows new to it (read once)."""
            if not tail_read:
                tail_read.append((list(applied(tail_path)) if tail_path else []) + ins_part)
            return tail_read[0]

        rewritten = main_changed or fold   # else the main file stays as it is
        pieces: list[tuple[dict, FileEntry]] = []
        reused: list[FileEntry] = []
        if rewritten and ((fold and main_rows == 0) or _fragmented(previous(main_path).metadata)):
            # compacted (or only the tail is left): one file under a new name, its rows in the order
            # they were, in full row groups again, streamed: held whole and sorted, a 107 MB shard's
            # compaction peaked at 2.3 GB and sent all of it to Xet; streamed, 0.7 GB and 9.9 MB
            # (bench/README.md; the order within a shard buys nothing, it holds one key range)
            sid_new = fresh_id()
            shard = {"id": sid_new, "lower": s["lower"], "path": shard_file(sid_new)}
            rows_in = _regrouped(itertools.chain(applied(main_path), tail_new()), options.parquet.row_group_bytes)
            pieces = [(shard, _write(staging / shard["path"], rows_in, plan, options.parquet))]
            folded.add(sid)
        elif fold:
            appended = pa.concat_tables(tail_new())
            shard = {"id": sid, "lower": s["lower"], "path": main_path}
            pieces = [(shard, _write(staging / main_path, itertools.chain(applied(main_path), [appended]), plan, options.parquet))]
            feed += in_place(main_path, False)
            # the tail's rows were all released before: updates; then the rows new to the shard
            old_tail = appended.num_rows - sum(t.num_rows for t in ins_part)
            ops = pa.concat_arrays([_ops("update", old_tail), *ins_ops])
            feed.append(_change_rows(appended, ops, main_path, plan))
            folded.add(sid)
        else:
            shard = {"id": sid, "lower": s["lower"], "path": main_path}
            if rewritten:
                pieces.append((shard, write_in_place(main_path)))
                feed += in_place(main_path, False)
            else:
                f = old_files[main_path]
                reused.append(f.reused_in(base_date, sid))
            if tail_changed and tail_rows:
                shard["tail"] = tail_path or tail_file(sid)
                # a tail that only lost or updated rows is rewritten as a main file is (and as the
                # change feed's replay rewrites any file that keeps its rows in place)
                pieces.append((shard, write_in_place(tail_path) if tail_path and not ins_part else
                               _write(staging / shard["tail"], tail_new(), plan, options.parquet)))
                feed += in_place(shard["tail"], True)
                for part, ops in zip(ins_part, ins_ops):
                    feed.append(_change_rows(part, ops, shard["tail"], plan))
            elif not tail_changed and tail_path:
                shard["tail"] = tail_path
                f = old_files[tail_path]
                reused.append(f.reused_in(base_date, sid))
            main_bytes = pieces[0][1].bytes if rewritten else old_files[main_path].bytes
            if main_bytes > 2 * cfg.shard_bytes:
                # its files as just written (or reused), removed once the split has read them
                sources = _shard_sources(store, base_prefix, staging, shard, pieces, reused)
                parts = max(2, round(sum(p.stat().st_size for p in sources) / cfg.shard_bytes))
                split = _split(staging, s, sources, plan, options, key, fresh_id, parts)
                for _, e in pieces:
                    (staging / e.path).unlink(missing_ok=True)
                pieces, reused = split, []
                folded.add(sid)
        if sid in folded and not (fold and len(pieces) == 1 and pieces[0][0]["path"] == main_path):
            # new files (compacted or split): the feed lists every row of each
            # (read when the feed is written, a row group at a time: not held here)
            feed = [t for t in feed if isinstance(t, pa.Table) and t.column(CHANGE_COLUMN)[0].as_py() == "delete"]
            feed += [_EveryRow(staging / entry.path, entry.path) for _shard, entry in pieces]
        for shard_doc, entry in pieces:
            entry.chunk = shard_doc["id"]
        out_docs = list({id(d): d for d, _ in pieces}.values()) or [shard]
        new_shards[sid] = [dict(d) for d in out_docs]
        new_entries[sid] = [e for _, e in pieces] + reused
        feeds[sid] = shard_feed(sid, feed)

    # the row index: the previous one without what changed, plus what changed; written while the
    # shards are (0.15-0.3 s at 1M rows), and again after them only if a shard folds, is compacted or splits.
    # Rows the filters left out before and still leave out keep their index rows: nothing of an
    # unreleased row but its key is ever read there (not its hashes, shard or tail), and a touch of
    # such rows alone rewrote the whole index (S5 of make bench-refresh: 2,390 of its 199,935 rows,
    # 0.2 s waiting for an index of 1M rows; mode content: every unreleased row of the table)
    still_out = (pl.col("op") == "excluded") & (~pl.col("p_keep")).fill_null(False)
    j_index = j.filter(~still_out)
    changed_keys = pl.concat([j_index.select(key), removals.select(key), gone_all]).unique()
    held, at = before.rows(changed_keys.get_column(key))  # the index rows they replace (an anti join: 40-55 ms at 1M)
    out = np.zeros(index.height, dtype=bool)
    out[at[held]] = True
    tomb_keys = tomb_out.select(key)
    tombs = index.join(tomb_keys, on=key, how="semi").with_columns(pl.lit(False).alias(_KEEP)) if tomb_keys.height else index.clear()
    fresh = j_index.select(
        key, _SKC, pl.col("t_shard").alias(_SHARD), _KEEP, _H1, _H2,
        pl.when(pl.col("op") == "update").then(pl.col("p_tail")).otherwise(pl.col("op").is_in(["insert", "move"])).alias(_TAIL))
    new_index = _NewIndex(index, out, tombs, fresh)
    changed = changed_keys.height > 0 or tomb_keys.height > 0
    early_index = Background(_write_index, staging, new_index.parts(), key, plan) if changed else None
    merge_into = _merges(layout.ids, touched, by_id, old_files, rem_of, ins_of, cfg.shard_bytes)
    merged_in: dict[int, list[tuple[int, Path]]] = {}  # taker -> (position, staged rows) of each shard merging into it
    touched = sorted(set(touched) | set(merge_into.values()))
    # a rewrite can be the whole table (removals spread over every shard): its own progress, by the
    # rows the rewritten shards held
    if touched:
        progress.start(f"{table}: rewriting {len(touched)} shards", sum(rows_before(sid) for sid in touched))
    try:
        with ThreadPoolExecutor(max(1, options.workers)) as pool:
            takers = set(merge_into.values())  # after the shards merging into them, which stage their rows
            list(pool.map(rewrite, [sid for sid in touched if sid not in takers]))
            list(pool.map(rewrite, [sid for sid in touched if sid in takers]))
        stages.done("rewrite")
    finally:
        if touched:
            progress.finish()
        if early_index is not None:
            early_index.wait()  # it writes into staging, which a failure removes
        shutil.rmtree(staging / "_spill", ignore_errors=True)

    # ---- the new layout, index, change feed ------------------------------------------------------
    files: list[FileEntry] = []
    reuse: dict[str, str] = {}
    out_shards: list[dict] = []
    for s in shards:
        sid = s["id"]
        if sid in new_shards:
            out_shards += [dict(x) for x in new_shards[sid]]
            for e in new_entries[sid]:
                files.append(e)
                if e.reused_from is not None:
                    reuse[e.path] = f"{base_prefix}/{e.path}"
            continue
        for path in (s["path"], s.get("tail")):
            if path:
                f = old_files[path]
                files.append(f.reused_in(base_date, sid))
                reuse[f.path] = f"{base_prefix}/{f.path}"
        out_shards.append(dict(s))
    if out_shards:
        out_shards[0]["lower"] = None
    # the row index (see above)
    if not changed and not folded:
        index_entry = dict(old_layout["index"])  # not a row changed: the previous index, linked, not rewritten
        reuse[index_entry["path"]] = f"{base_prefix}/{index_entry['path']}"
    elif folded or merge_into:
        # written again: rows of a merged shard are in its neighbour's tail now, rows of a folded,
        # compacted or split shard in its main file(s)
        merged = pl.col(_SHARD).is_in(sorted(merge_into))
        moves = [pl.when(merged).then(pl.lit(True)).otherwise(pl.col(_TAIL)).alias(_TAIL),
                 pl.col(_SHARD).replace(merge_into).alias(_SHARD)]
        tails = pl.when(pl.col(_SHARD).is_in(sorted(folded))).then(False).otherwise(pl.col(_TAIL)).alias(_TAIL)
        index_entry = _write_index(staging, (_reassign_split(part.with_columns(moves).with_columns(tails), new_shards, key)
                                             for part in new_index.parts()), key, plan)
    else:
        index_entry = early_index.result()

    released = new_index.released()
    in_files = sum(f.rows for f in files)
    if released != in_files:
        raise UserError(f"{table}: the refresh's row index holds {released} released rows but its shards {in_files}; "
                        f"nothing was committed to the store, rerun the export with --full.")
    stages.done("index")
    timings = {"rows_read": read.rows, "bytes_read": read.nbytes, "index_released_rows": released}
    if counting is not None:
        source_rows, seconds = counting.result()
        if source_rows != released:
            raise UserError(f"{table}: the source holds {source_rows} rows at the snapshot but {released} were exported; "
                            f"nothing was committed to the store, rerun the export with --full.")
        timings.update(source_rows_counted=source_rows, count_seconds=seconds,
                       count_check="rows = count(*) with the export's filters, a separate query on the same Postgres snapshot")
    if mode == "xmin" and unchanged is not None:
        timings["source_rows_all_counted"] = every_row
        how = ("the rows the candidates' scans visited" if counted_by == "scans" else "count(*)")
        timings["count_check"] = (f"rows in the row index = rows of the table, filters not applied, in this Postgres "
                                  f"snapshot ({how}); released rows = rows in the shards")
        if index_entry["rows"] != every_row:
            raise UserError(f"{table}: Postgres holds {every_row} rows ({read.rows} of them newer than {base_date}), but "
                            f"the row index {index_entry['rows']}; nothing was committed to the store, rerun the export with --full.")
    feed_parts = [t for sid in touched for t in feeds.get(sid, [])]
    row_groups = {f.path: _row_group_sizes(staging / f.path) for f in files if f.reused_from is None}
    try:
        changes = _write_changes(staging, feed_parts, plan, m, base_date, options, row_groups, feed_op)
    finally:
        shutil.rmtree(feed_dir, ignore_errors=True)  # staged rows, not part of the release
    stages.done("feed")
    timings["stages_seconds"] = stages.seconds
    del_count = true_deletes.height
    layout_doc = {"kind": "clustered", "basis": basis, "cluster_by": list(cfg.cluster_by), "key": key,
                  "shard_bytes": cfg.shard_bytes, "volatile_columns": sorted(cfg.volatile_columns),
                  "hash_scheme": HASH_SCHEME, "shards": out_shards, "index": index_entry,
                  "tombstones": _tombstones(shared, plan),
                  "refresh": {"mode": mode, "base_snapshot": base_date, "why_content": why,
                              "rows_read": read.rows, "bytes_read": read.nbytes,
                              "candidates": cand.height, "unchanged_candidates": counts.get("same", 0),
                              "inserted": counts.get("insert", 0), "updated": counts.get("update", 0),
                              "moved": counts.get("move", 0),
                              "deleted": del_count, "deletions_found_by": deletions_found,
                              "rows_counted_by": counted_by,
                              "shards_rewritten": len(touched), "shards_merged": len(merge_into),
                              "files_reused": sum(1 for f in files if f.reused_from is not None), "files_written": sum(1 for f in files if f.reused_from is None)}}
    log(f"{table}: {cand.height:,} rows read ({mode}) since {base_date}; {counts.get('same', 0):,} unchanged, "
        f"{counts.get('insert', 0):,} inserted, {counts.get('update', 0) + counts.get('move', 0):,} updated, "
        f"{del_count:,} deleted; {len(touched)} of {len(shards)} shards rewritten"
        + (f", {len(merge_into)} merged into a neighbour" if merge_into else ""))
    return ClusteredResult(sorted(files, key=lambda f: f.path), reuse, layout_doc, changes, released, read.rows, timings)


# a rewritten shard's updated rows, read from its spill, are held while they come to this (a row
# group's worth at the default size); past it they are staged on disk, a file per row group they update
UPDATES_HELD_BYTES = 32 << 20
MERGE_SHARE = 4  # a shard that shrinks under 1/4 of shard_bytes merges into a neighbour


def _shard_files(shard: dict, old_files: dict) -> list[FileEntry]:
    """A shard's files in the previous release: its main file, and its tail when it has one."""
    return [old_files[p] for p in (shard["path"], shard.get("tail")) if p]


def _merges(ids: list[int], touched: list[int], by_id: dict, old_files: dict, rem_of, ins_of, shard_bytes: int) -> dict[int, int]:
    """{shard: the neighbour taking its rows} for the touched shards that shrink in this refresh to
    under 1/``MERGE_SHARE`` of ``shard_bytes`` (estimated from their rows after the change and their
    files' bytes per row): the previous shard in sort-key order takes the range and the rows (into
    its tail: its main file is not rewritten), or the next one for the first shard. A shard that
    takes rows does not merge itself, nor does one emptied (it is dropped), nor into one."""
    def rows_after(sid: int) -> tuple[int, int, int]:
        files = _shard_files(by_id[sid], old_files)
        rows = sum(f.rows for f in files)
        return rows, rows - rem_of(sid).height + ins_of(sid).height, sum(f.bytes for f in files)

    out: dict[int, int] = {}
    takers: set[int] = set()
    changed = set(touched)
    for p, sid in enumerate(ids):
        if sid not in changed or sid in takers:
            continue
        before, after, nbytes = rows_after(sid)
        if not (0 < after < before) or after * (nbytes / before) * MERGE_SHARE >= shard_bytes:
            continue
        for q in (p - 1, p + 1):
            if 0 <= q < len(ids) and ids[q] not in out and rows_after(ids[q])[1] > 0:
                out[sid] = ids[q]
                takers.add(ids[q])
                break
    return out


def _by_shard(df: pl.DataFrame, column: str):
    """A function giving ``df``'s rows whose ``column`` is a shard id (empty when none)."""
    parts = {k[0]: v for k, v in df.partition_by(column, as_dict=True).items()} if df.height else {}
    empty = df.clear()
    return lambda sid: parts.get(sid, empty)


def _row_group_sizes(path: Path) -> list[int]:
    md = pq.read_metadata(path)
    return [md.row_group(i).num_rows for i in range(md.num_row_groups)]


def row_group_of(pf: pq.ParquetFile, key: str, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The row group of ``pf`` that holds each of ``keys``, -1 where none does (its key column read
    a row group at a time)."""
    out = np.full(len(keys), -1, dtype=np.int64)
    for i in range(pf.num_row_groups):
        held = pf.read_row_group(i, columns=[key]).column(key)
        out[pc.is_in(keys.cast(held.type), value_set=held).to_numpy(zero_copy_only=False)] = i
    return out


def _row_groups_of(pf: pq.ParquetFile, key: str, keys: pl.Series, name: str) -> np.ndarray:
    """The row group of ``pf`` that holds each of ``keys``, which the row index places there."""
    if pf.num_row_groups == 1:  # where the row index places them, as for a file of several row groups
        return np.zeros(len(keys), dtype=np.int64)
    out = row_group_of(pf, key, keys.to_arrow())
    if (out < 0).any():
        raise UserError(f"the row index places {int((out < 0).sum())} changed rows in {name}, which does not hold them; "
                        f"nothing was committed to the store, rerun the export with --full.")
    return out


def _read_ipc(path: Path) -> pa.Table:
    """An Arrow IPC file, mapped (its pages are the file's)."""
    with pa.memory_map(str(path)) as f:
        return pa.ipc.open_file(f, options=_SPILL_READ).read_all()


def _route(spill: _Spill, pos: int, key: str, main_keys: pl.Series, main_rg: np.ndarray | None, others: list[pl.Series],
           prefix: Path, nbytes: int, held_bytes: int) -> tuple[dict[int, pa.Table | Path], list[pa.Table | None]]:
    """Shard ``pos``'s spilled rows, read a piece of about ``nbytes`` at a time: the rows of
    ``main_keys`` grouped by the row group they update (``main_rg``: each one's), held while they
    come to at most ``held_bytes``, past that written to a file per row group
    (``<prefix>-<row group>.arrow``); and the rows of each of ``others`` gathered, in that list's
    order. (Taken from the whole spill at once, every changed row of a shard was in memory while
    the shard was rewritten, beside the spill's mapped pages: a shard whose every row changed,
    twice over. Staged always, a rewrite of 99 small shards with 100 updates each took 0.3 s more.)"""
    whole = spill.read(pos)  # mapped: only its key column is read here, to place every row at once
    if whole is None or whole.num_rows == 0:
        if len(main_keys) or any(len(k) for k in others):
            raise _not_read()
        return {}, [None for _ in others]
    spilled_keys = whole.column(key)

    def where(spilled: pa.ChunkedArray, keys: pl.Series) -> np.ndarray | None:
        """Each spilled row's position in ``keys`` (-1: not there)."""
        if not len(keys):
            return None
        at = pc.index_in(spilled, value_set=keys.to_arrow().cast(spilled.type))
        return pc.fill_null(at, -1).to_numpy().astype(np.int64)

    def in_order(spilled: pa.Table, spilled_at: pa.ChunkedArray, keys: pl.Series) -> pa.Table | None:
        """The rows of ``keys``, in that order, taken from the whole spill at once."""
        if not len(keys):
            return None
        at = pc.index_in(keys.to_arrow().cast(spilled_at.type), value_set=spilled_at)
        if at.null_count:
            raise _not_read()
        return spilled.take(at)

    # a small spill is taken from as it is, not read again a piece at a time (S1's 99 shards of
    # ~100 new rows each: 0.1 s more); the rows of ``others`` then come in their order at once
    small = whole.get_total_buffer_size() <= held_bytes
    gathered = [in_order(whole, spilled_keys, k) for k in others] if small else None
    main_at = where(spilled_keys, main_keys)
    others_at = [None for _ in others] if small else [where(spilled_keys, k) for k in others]
    pieces = [whole] if small else spill.pieces(pos, nbytes)
    del whole, spilled_keys
    held: dict[int, list[pa.Table]] = {}
    size = 0
    files: dict[int, Path] = {}
    writers: dict[int, tuple[pa.NativeFile, pa.ipc.RecordBatchFileWriter]] = {}
    found: list[list[tuple[pa.Table, np.ndarray]]] = [[] for _ in others]
    routed, start = 0, 0

    def write(rg: int, t: pa.Table) -> None:
        if rg not in writers:
            files[rg] = prefix.parent / f"{prefix.name}-{rg:05d}.arrow"
            files[rg].parent.mkdir(exist_ok=True)
            f = pa.OSFile(str(files[rg]), "wb")
            writers[rg] = (f, pa.ipc.new_file(f, t.schema, options=_SPILL_WRITE))
        writers[rg][1].write_table(t)

    try:
        for piece in pieces:
            end = start + piece.num_rows
            if main_at is not None:
                at = main_at[start:end]
                rows = np.flatnonzero(at >= 0)
                if len(rows):
                    rgs = main_rg[at[rows]]
                    order = np.argsort(rgs, kind="stable")
                    taken = piece.take(pa.array(rows[order]))
                    size += taken.nbytes
                    for rg, a, b in _runs(rgs[order]):
                        held.setdefault(rg, []).append(taken.slice(a, b - a))
                    if size > held_bytes:  # too many to hold: to disk, these and the rest
                        for rg, ts in held.items():
                            for t in ts:
                                write(rg, t)
                        held = {}
                    routed += len(rows)
            for j, other_at in enumerate(others_at):
                if other_at is not None:
                    at = other_at[start:end]
                    rows = np.flatnonzero(at >= 0)
                    if len(rows):
                        found[j].append((piece.take(pa.array(rows)), at[rows]))
            start = end
    except OSError as exc:
        raise disk_error(exc, prefix.parent) from None
    finally:
        for f, w in writers.values():
            with contextlib.suppress(Exception):
                w.close()
            with contextlib.suppress(Exception):
                f.close()
    if routed != len(main_keys):
        raise _not_read()
    out = gathered if gathered is not None else []
    for j, got in enumerate(found if gathered is None else []):
        t = pa.concat_tables([t for t, _ in got]) if got else None
        if (t.num_rows if t is not None else 0) != len(others[j]):
            raise _not_read()
        # in the list's order (they came in the spill's)
        out.append(t.take(pa.array(np.argsort(np.concatenate([a for _, a in got]), kind="stable"))) if t is not None else None)
    return {**{rg: pa.concat_tables(ts) for rg, ts in held.items()}, **files}, out


def _not_read() -> UserError:
    return UserError("a changed row was not among the rows read; nothing was committed to the store, rerun the export.")


def _apply(rg: pa.Table, key: str, out_keys: pl.Series, upd_keys: pl.Series, upd_tbl: pa.Table | None) -> pa.Table:
    """:func:`_apply_columns`' rows."""
    return _apply_columns(rg, key, out_keys, upd_keys, upd_tbl)[0]


def _apply_columns(rg: pa.Table, key: str, out_keys: pl.Series, upd_keys: pl.Series,
                   upd_tbl: pa.Table | None) -> tuple[pa.Table, list[int] | None]:
    """A previous row group with the rows of ``out_keys`` removed and those of ``upd_keys``
    replaced in place by the rows of ``upd_tbl`` (same order as ``upd_keys``).

    Arrow's set lookups and numpy, not a polars join: a rewrite applies this to every row group of
    every touched shard (S2 of make bench-refresh: 99 shards), and polars' join, filter and select
    on a few thousand keys cost more in dispatch than in work. 99 row groups of 10,000 rows of
    ``image`` with 100 updated rows each (micro-benchmark, 2026-12-02): 1.13 -> 0.65 CPU-s, of
    which the gather that copies the row group is 0.45. So a column whose updated rows hold the
    values they held (bit for bit: :func:`_same_values`) is not gathered: it is the previous column
    as it is, or filtered when rows leave (an update of a title changes 3 of ``image``'s 26 columns,
    with the volatile ones). With the rows, the columns whose values changed (positions; None when
    rows left, which changes every column)."""
    if len(out_keys) == 0 and len(upd_keys) == 0:
        return rg, []
    keys = rg.column(key)
    n = rg.num_rows
    take = np.arange(n, dtype=np.int64)
    here = np.zeros(0, dtype=np.int64)  # positions of the updated rows in ``rg``, and of their new versions in ``upd``
    src = here
    if len(upd_keys):
        at = pc.index_in(keys, value_set=upd_keys.to_arrow().cast(keys.type))
        hit = at.is_valid().to_numpy(zero_copy_only=False)
        here = np.flatnonzero(hit)
        src = pc.fill_null(at, 0).to_numpy(zero_copy_only=False)[hit].astype(np.int64)
        take[here] = src + n
    keep = None
    if len(out_keys):
        keep = ~pc.is_in(keys, value_set=out_keys.to_arrow().cast(keys.type)).to_numpy(zero_copy_only=False)
        if keep.all():  # none of them here
            keep = None
        else:
            take = take[keep]
    if len(here) == 0 and keep is None:
        return rg, []
    upd = upd_tbl.select(rg.schema.names).cast(rg.schema) if len(here) else None
    gather = pa.array(take, pa.int64())
    kept = pa.array(keep) if keep is not None else None
    old_at, new_at = pa.array(here, pa.int64()), pa.array(src, pa.int64())
    columns = []
    changed: list[int] = []
    for i in range(rg.num_columns):
        col = rg.column(i)
        if upd is not None and not _same_values(col.take(old_at), upd.column(i).take(new_at)):
            columns.append(pa.chunked_array(col.chunks + upd.column(i).chunks, col.type).take(gather))
            changed.append(i)
        else:
            columns.append(col.filter(kept) if kept is not None else col)
    return pa.Table.from_arrays(columns, schema=rg.schema), (changed if keep is None else None)


def _same_values(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Whether two columns hold the same values bit for bit, nulls in the same places: floats by
    their bits (-0.0 is not 0.0, a NaN is the NaN it was), anything nested or dictionary-encoded
    counts as different (gathered: always right, only slower)."""
    if pa.types.is_nested(a.type) or pa.types.is_dictionary(a.type):
        return False
    return _by_bits(a.combine_chunks()).equals(_by_bits(b.combine_chunks()))


def _shard_sources(store: Store, base_prefix: str, staging: Path, shard: dict, pieces, reused) -> list:
    """Paths of a shard's current files (just written, or reused from the base)."""
    out = [staging / e.path for _, e in pieces]
    for e in reused:
        out.append(store.local_path(f"{base_prefix}/{e.path}") or _spooled(store, f"{base_prefix}/{e.path}", staging))
    return out


def _spooled(store: Store, key: str, staging: Path) -> Path:
    path = staging / "_spill" / key.replace("/", "_")
    path.parent.mkdir(parents=True, exist_ok=True)
    with store.open(key) as src_file, open(path, "wb") as out:
        shutil.copyfileobj(src_file, out, 4 << 20)
    return path


def _regrouped(parts: Iterable[pa.Table], nbytes: int) -> Iterator[pa.Table]:
    """``parts`` gathered into tables of at least ``nbytes`` (the last: what is left), in order."""
    pending: list[pa.Table] = []
    size = 0
    for t in parts:
        if t.num_rows == 0:
            continue
        pending.append(t)
        size += t.nbytes
        if size >= nbytes:
            yield pa.concat_tables(pending)
            pending, size = [], 0
    if pending:
        yield pa.concat_tables(pending)


def _split(staging: Path, s: dict, sources: list[Path], plan: TablePlan, options, key: str, fresh_id,
           parts: int = 2) -> list[tuple[dict, FileEntry]]:
    """A shard grown past twice its size (its files: ``sources``): ``parts`` shards (about
    ``shard_bytes`` each), each as many of its rows by sort key (no tails), in the order they are
    in its files (a shard holds one key range; the order within it buys nothing). Streamed: the
    bounds from the sort keys of every row (its cluster and key columns only), then its files a
    row group at a time, each row placed and written as a first export places and writes its rows
    (:class:`_Layout`, :class:`_Buffered`). Read whole and sorted, the shard was held twice in
    Arrow, ~5.5x its parquet bytes each (a compaction done that way peaked at 2.3 GB for a 107 MB
    shard)."""
    cluster = list(plan.config.cluster_by) + [key]
    fields = pa.schema([plan.schema.arrow.field(c) for c in cluster])
    sk = pl.concat([sort_keys(pq.read_table(p, columns=cluster).select(cluster).cast(fields), cluster)
                    for p in sources]).sort()
    n = len(sk)
    parts = max(1, min(parts, n))
    layout = _Layout(list(plan.config.cluster_by), key, [s["lower"], *(sk[n * i // parts] for i in range(1, parts))],
                     [fresh_id() for _ in range(parts)])
    del sk
    # every part's row group waits whole (no budget flush cuts it smaller): parts + 1 row groups at most
    sink = _Buffered(staging, plan, layout.ids, options.parquet, (parts + 1) * options.parquet.row_group_bytes)
    try:
        for source in sources:
            pf = pq.ParquetFile(source)
            for g in range(pf.num_row_groups):
                t = _data(pf.read_row_group(g), plan)
                if t.num_rows:
                    pos = layout.shard_of(*layout.cluster_parts(t), t)
                    order = np.argsort(pos, kind="stable")
                    sink.put(t, order, pos[order])
    except BaseException:
        sink.abort()
        raise
    files = sink.finish(1)
    return [({"id": layout.ids[p], "lower": layout.lowers[p], "path": files[p].path}, files[p]) for p in range(parts)]


def _reassign_split(index: pl.DataFrame, new_shards: dict[int, list[dict]], key: str) -> pl.DataFrame:
    """Index rows of a shard that was split (or dropped) point at the shard now holding them."""
    for sid, parts in new_shards.items():
        if not parts or (len(parts) == 1 and parts[0]["id"] == sid):
            continue
        lowers = [p["lower"] for p in parts]
        ids = [p["id"] for p in parts]
        mask = pl.col(_SHARD) == sid
        sub = index.filter(mask)
        cuts = pl.Series([x for x in lowers[1:]], dtype=pl.String)
        sk = sub.get_column(_SKC) + _key_part(sub.get_column(key))
        where = cuts.search_sorted(sk, side="right").to_numpy()
        sub = sub.with_columns(pl.Series(_SHARD, np.array(ids, dtype=np.int32)[where]))
        index = pl.concat([index.filter(~mask), sub])
    return index


def changes_schema(table_schema: pa.Schema) -> pa.Schema:
    """The change feed's columns: ``change`` (insert | update | delete), ``file`` (the release file
    the row belongs to, or left), then the table's, all nullable (a delete carries only the key)."""
    fields = [pa.field(CHANGE_COLUMN, pa.string(), nullable=False), pa.field(FILE_COLUMN, pa.string(), nullable=False)]
    return pa.schema(fields + [f.with_nullable(True) for f in table_schema])


def _ops(op: str, n: int) -> pa.Array:
    """The change feed's ``change`` column for ``n`` rows of one kind."""
    return pa.array([op] * n, pa.string())


def _change_rows(t: pa.Table, ops: pa.Array, file: str, plan: TablePlan) -> pa.Table:
    t = t.select(plan.schema.names).cast(plan.schema.arrow)
    files = pa.array([file] * t.num_rows, pa.string())
    return pa.Table.from_arrays([ops, files, *t.columns], schema=changes_schema(plan.schema.arrow))


def _delete_rows(keys: pl.Series, file: str, plan: TablePlan, key: str) -> pa.Table:
    arr = keys.to_arrow().cast(plan.schema.arrow.field(key).type)
    cols = [pa.array(["delete"] * len(arr), pa.string()), pa.array([file] * len(arr), pa.string())]
    cols += [arr if f.name == key else pa.nulls(len(arr), f.type) for f in plan.schema.arrow]
    return pa.Table.from_arrays(cols, schema=changes_schema(plan.schema.arrow))


@dataclass
class _Staged:
    """Rows of the change feed staged on disk (Arrow IPC) while the shards are rewritten, read back
    a batch at a time when the feed is written."""
    path: Path


def _staged_feed(folder: Path, sid: int, parts: list) -> list:
    """Shard ``sid``'s part of the change feed with its rows (deletes, updates in place, appended
    rows) written to disk as soon as the shard is rewritten, in their order; a new file's rows
    (:class:`_EveryRow`) stay where they are. Held until the feed is written, the changed rows of
    every shard were in memory at once: all the rows of a provider whose popularity was recomputed."""
    out: list = []
    run: list[pa.Table] = []

    def flush() -> None:
        if not run:
            return
        folder.mkdir(exist_ok=True)
        path = folder / f"{sid:06d}-{len(out)}.arrow"
        try:
            with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, run[0].schema, options=_SPILL_WRITE) as w:
                for t in run:
                    w.write_table(t)
        except OSError as exc:
            raise disk_error(exc, folder) from None
        out.append(_Staged(path))
        run.clear()

    for part in parts:
        if isinstance(part, (_EveryRow, _StagedRows)):  # on disk already
            flush()
            out.append(part)
        elif part.num_rows:
            run.append(part)
    flush()
    return out


@dataclass
class _StagedRows:
    """Rows of a file's change feed staged on disk in the spill's schema (a rewritten main file's
    updated rows, one file per row group: :func:`_route`), listed as ``op`` rows of ``file``."""
    path: Path
    op: str
    file: str


@dataclass
class _EveryRow:
    """A file new in this release (a shard split or compacted): the change feed lists every row
    of it, read from the file when the feed is written, a row group at a time."""
    path: Path
    name: str


def _write_changes(staging: Path, parts: list, plan: TablePlan, m: Manifest, base_date: str, options,
                   row_groups: dict[str, list[int]], feed_op: Callable[[pa.Table], pa.Array]) -> dict:
    """The change feed as one parquet file (``changes/changes-00000.parquet``), in the order the
    parts come (per file: deletes, updates in place, appended rows, staged on disk, :class:`_Staged`;
    or every row of a new file, :class:`_EveryRow`, with ``feed_op`` telling inserts from updates),
    written as it is read, in row groups of about ``row_group_bytes``."""
    schema = changes_schema(plan.schema.arrow)

    def tables() -> Iterator[pa.Table]:
        for part in parts:
            if isinstance(part, _EveryRow):
                pf = pq.ParquetFile(part.path)
                for i in range(pf.num_row_groups):
                    t = pf.read_row_group(i).cast(plan.schema.arrow)
                    yield _change_rows(t, feed_op(t), part.name, plan)
            elif isinstance(part, (_Staged, _StagedRows)):
                for b in _read_ipc(part.path).to_batches():  # mapped: a batch's pages are read as it is written
                    t = pa.Table.from_batches([b])
                    yield _change_rows(t, _ops(part.op, t.num_rows), part.file, plan) if isinstance(part, _StagedRows) else t
            else:
                yield part

    folder = staging / CHANGES_DIR
    folder.mkdir(exist_ok=True)
    path = folder / "changes-00000.parquet"
    counts: Counter = Counter()
    rows = 0
    w = parquet_writer(path, plan.schema, options.parquet, arrow_schema=schema)
    try:
        for t in _regrouped(tables(), options.parquet.row_group_bytes):
            counts.update(_op_counts(t))
            rows += _write_part(w, t, options.parquet)
        if rows == 0:
            w.write_table(schema.empty_table(), row_group_size=1)
    finally:
        w.close()
    entry = FileEntry.written(path, rows, name=f"{CHANGES_DIR}/{path.name}")
    return {"base_snapshot": base_date, "base_root_hash": m.root_hash, "files": [dataclasses.asdict(entry)],
            "inserted": counts["insert"], "updated": counts["update"], "deleted": counts["delete"],
            "row_groups": row_groups}


def _op_counts(t: pa.Table) -> dict[str, int]:
    vc = pc.value_counts(t.column(CHANGE_COLUMN))
    return {v.as_py(): c.as_py() for v, c in zip(vc.field("values"), vc.field("counts"))}


