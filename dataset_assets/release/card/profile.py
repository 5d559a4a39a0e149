"""Value distributions of a few columns of one stored table snapshot.

Reads only the requested columns of each parquet file, batch by batch within
each row group, and never holds a whole table. Files of a local store are read
in place; files of other stores are spooled to a temporary file one at a time
(the store interface has no ranged reads).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataset_assets.storage.stores import Store
from dataset_assets.storage.manifest import FileEntry

BATCH_ROWS = 64 * 1024

Distribution = list[tuple[Any, int]]  # (value, count), most frequent first; None is null


@dataclass
class TableScan:
    """What one pass over a table's files found."""

    rows: int = 0
    schemas: dict[str, pa.Schema] = field(default_factory=dict)   # file path -> Arrow schema in its footer
    file_rows: dict[str, int] = field(default_factory=dict)       # file path -> rows in its footer
    distributions: dict[str, Distribution] = field(default_factory=dict)


def scan_table(store: Store, prefix: str, files: list[FileEntry], columns: list[str] | tuple[str, ...] = (),
               batch_rows: int = BATCH_ROWS) -> TableScan:
    """Footer schema and row count of every file, and the value counts of ``columns``.

    A list column is counted element by element. Columns a file lacks are skipped
    (the caller compares the schemas).
    """
    scan = TableScan()
    counters: dict[str, Counter] = {c: Counter() for c in columns}
    for f in files:
        with store.open_parquet(f"{prefix}/{f.path}") as pf:
            schema = pf.schema_arrow
            scan.schemas[f.path] = schema
            scan.file_rows[f.path] = pf.metadata.num_rows
            scan.rows += pf.metadata.num_rows
            present = [c for c in columns if c in schema.names]
            if not present:
                continue
            for batch in pf.iter_batches(batch_size=batch_rows, columns=present, use_threads=False):
                for c in present:
                    _count(counters[c], batch.column(c))
    scan.distributions = {c: _sorted(counter) for c, counter in counters.items()}
    return scan


def _count(counter: Counter, arr: pa.Array) -> None:
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        arr = pc.list_flatten(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    for item in pc.value_counts(arr):
        counter[item["values"].as_py()] += item["counts"].as_py()


def _sorted(counter: Counter) -> Distribution:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0] is None, str(kv[0])))
