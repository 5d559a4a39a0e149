"""Parquet shards: size-bounded files with bounded row groups, one stable schema."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataset_assets.errors import StoreError, UserError
from dataset_assets.storage.manifest import FileEntry
from dataset_assets.source.types import TableSchema

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class ParquetOptions:
    """How shards are written. Defaults were chosen by measurement (bench/README.md)."""

    compression: str = "zstd"
    compression_level: int = 1            # level 1: about half the CPU of level 3, no bigger
    shard_bytes: int = 512 * MiB          # roll to a new file once a shard passes this size
    row_group_bytes: int = 32 * MiB       # in-memory Arrow bytes per row group (~6 MiB on disk with zstd)
    content_defined_chunking: bool = True  # lets the Hub (Xet) deduplicate unchanged data between snapshots
    page_index: bool = True

    def __post_init__(self) -> None:
        if not (1 * MiB <= self.shard_bytes <= 2 * GiB):
            raise UserError(f"Shard size {self.shard_bytes} bytes is out of range; choose between 1 MiB and 2 GiB.")
        if not (1 * MiB <= self.row_group_bytes <= 128 * MiB):
            raise UserError(f"Row group size {self.row_group_bytes} bytes is out of range; choose between 1 MiB and 128 MiB.")

    def as_dict(self) -> dict:
        return asdict(self)


def shard_name(unit: int, part: int) -> str:
    """File names sort in table order: unit (range or chunk), then part."""
    return f"train-{unit:05d}-{part:03d}.parquet"


def parquet_writer(path: Path, schema: TableSchema, options: ParquetOptions, arrow_schema: pa.Schema | None = None) -> pq.ParquetWriter:
    """The one way a shard is opened: every setting that shapes its bytes comes from ``options``
    and ``schema``, so the same rows written twice give the same bytes (what Xet deduplicates)."""
    return open_writer(path, arrow_schema if arrow_schema is not None else schema.arrow, options,
                       schema.dictionary_columns(), schema.statistics_columns())


def open_writer(path: Path, arrow_schema: pa.Schema, options: ParquetOptions, dictionary: list[str],
                statistics: list[str]) -> pq.ParquetWriter:
    """:func:`parquet_writer` from what a published manifest records (``writer_settings``)."""
    return StagedWriter(str(path), arrow_schema, **writer_arguments(options, dictionary, statistics))


def writer_arguments(options: ParquetOptions, dictionary: list[str], statistics: list[str]) -> dict:
    """The ``ParquetWriter`` arguments that shape a shard's bytes (a refresh encodes changed
    columns with them on their own: ``export/splice.py``)."""
    return dict(
        compression=options.compression,
        compression_level=options.compression_level,
        use_dictionary=list(dictionary),
        write_statistics=list(statistics),
        write_page_index=options.page_index,
        use_content_defined_chunking=options.content_defined_chunking,
        store_schema=True,
    )


def writer_settings(schema: TableSchema, options: ParquetOptions) -> dict:
    """Everything that shapes a shard's bytes besides its rows, as a manifest records it."""
    return {**options.as_dict(), "dictionary_columns": schema.dictionary_columns(),
            "statistics_columns": schema.statistics_columns(), "pyarrow": pa.__version__}


def options_from(settings: dict) -> tuple[ParquetOptions, list[str], list[str]]:
    """The inverse of :func:`writer_settings` (ValueError/TypeError when it is not one)."""
    known = {k: settings[k] for k in ParquetOptions.__dataclass_fields__ if k in settings}
    return ParquetOptions(**known), list(settings["dictionary_columns"]), list(settings["statistics_columns"])


class _WriteBehind:
    """Sends staged files to the disk while the export goes on.

    A local store makes every file durable before it is visible (``LocalStore.commit_dir`` fsyncs
    the staging folder, then renames it). Done only there, that fsync waited for all the data at
    once: 0.4-0.5 s for the 195 MB of 1M rows here, 5 % of a whole export, with both cores idle.
    So each file is handed over here as its row groups land and when it closes (:class:`StagedWriter`
    does it for every staged parquet file), and one thread
    ``fdatasync``s them in the background; the commit's fsync then finds them clean (measured:
    0.37 s -> 0.001 s for 200 MB written in 6 MB steps, the writer no slower). This is only a head
    start: the commit's fsync still decides, so a failure here is ignored (a file already removed,
    a staging folder renamed). The data would reach the disk anyway (any store: the kernel writes
    dirty pages back after 30 s; an S3 store's staged files too), only sooner."""

    def __init__(self) -> None:
        self._reset()
        # a forked child has no such thread, and may have copied the lock held: it starts afresh
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._pending: dict[str, None] = {}  # ordered, without duplicates
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def __call__(self, path: Path | str) -> None:
        with self._ready:
            self._pending[str(path)] = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
                self._thread.start()
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
                path = next(iter(self._pending))
                del self._pending[path]
            with contextlib.suppress(OSError):  # gone or renamed meanwhile: the commit's fsync decides
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)


write_behind = _WriteBehind()


class StagedWriter(pq.ParquetWriter):
    """Every parquet file an export stages (shards, the row index, the change feed): a
    ``ParquetWriter`` that hands its file to :data:`write_behind` after each row group it writes
    and when it closes, so no writer has to remember to."""

    def write_table(self, table, row_group_size=None):
        super().write_table(table, row_group_size)
        write_behind(self.where)

    def close(self):
        was_open = self.is_open
        super().close()
        if was_open:
            write_behind(self.where)


class ShardWriter:
    """Writes the batches of one work unit into one or more shards in ``directory``."""

    def __init__(self, directory: Path, unit: int, schema: TableSchema, options: ParquetOptions):
        self.directory = directory
        self.unit = unit
        self.schema = schema
        self.options = options
        self.files: list[FileEntry] = []
        self._part = 0
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._rows_in_file = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0

    def _open(self) -> None:
        self._path = self.directory / shard_name(self.unit, self._part)
        self._writer = parquet_writer(self._path, self.schema, self.options)
        self._rows_in_file = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        if self._pending_bytes >= self.options.row_group_bytes:
            self._flush_row_group()

    def _flush_row_group(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema.arrow)
        self._pending, self._pending_bytes = [], 0
        try:
            if self._writer is None:
                self._open()
            self._writer.write_table(table, row_group_size=table.num_rows)
            self._rows_in_file += table.num_rows
            if os.path.getsize(self._path) >= self.options.shard_bytes:
                self._close_file()
        except OSError as exc:
            raise disk_error(exc, self.directory) from None

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        path = self._path
        entry = FileEntry.written(path, self._rows_in_file, chunk=self.unit)
        self.files.append(entry)
        self._part += 1

    def close(self) -> list[FileEntry]:
        try:
            self._flush_row_group()
            self._close_file()
        except OSError as exc:
            raise disk_error(exc, self.directory) from None
        return self.files

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - best effort on the failure path
                pass
            self._writer = None


def disk_error(exc: OSError, where: Path) -> StoreError:
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc):
        return StoreError(f"The disk holding {where} is full; free space (or choose another --store) and rerun: nothing was committed to the store.")
    if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS) or "Permission denied" in str(exc):
        return StoreError(f"Cannot write to {where} ({exc}); fix its permissions or choose another --store.")
    return StoreError(f"Writing parquet to {where} failed ({exc}); check the disk and rerun.")
