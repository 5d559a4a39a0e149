"""Parquet shards: size-bounded files with bounded row groups, one stable schema."""

from __future__ import annotations

import errno
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataset_assets.errors import StoreError, UserError
from dataset_assets.storage.manifest import FileEntry, sha256_file
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
        o = self.options
        self._writer = pq.ParquetWriter(
            str(self._path),
            self.schema.arrow,
            compression=o.compression,
            compression_level=o.compression_level,
            use_dictionary=self.schema.dictionary_columns(),
            write_statistics=self.schema.statistics_columns(),
            write_page_index=o.page_index,
            use_content_defined_chunking=o.content_defined_chunking,
            store_schema=True,
        )
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
        entry = FileEntry(path=path.name, rows=self._rows_in_file, bytes=path.stat().st_size, sha256=sha256_file(path), chunk=self.unit)
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
