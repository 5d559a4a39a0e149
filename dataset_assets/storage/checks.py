"""Checks of a stored table snapshot (used by the blocking Dagster asset checks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from dataset_assets.storage.stores import Store
from dataset_assets.storage.manifest import Manifest


@dataclass
class KeyReport:
    rows: int
    nulls: int
    duplicates: int
    examples: list[str]

    @property
    def ok(self) -> bool:
        return self.nulls == 0 and self.duplicates == 0


def _read_column(store: Store, key: str, column: str):
    with store.open_parquet(key) as pf:  # a remote object is spooled: parquet needs to seek
        return pf.read(columns=[column]).column(column)


def primary_key_report(store: Store, prefix: str, manifest: Manifest, column: str) -> KeyReport:
    """Nulls and duplicates of ``column`` across every shard.

    Memory: 8 bytes per row (a 64-bit hash of each key); hash collisions are
    re-checked against the real values, so the answer is exact.
    """
    hashes, nulls, rows = [], 0, 0
    for f in manifest.files:
        s = pl.Series(_read_column(store, f"{prefix}/{f.path}", column))
        rows += len(s)
        nulls += s.null_count()
        hashes.append(s.drop_nulls().hash(seed=0).to_numpy())
    h = np.sort(np.concatenate(hashes)) if hashes else np.array([], dtype=np.uint64)
    suspects = np.unique(h[1:][h[1:] == h[:-1]]) if len(h) > 1 else h[:0]
    duplicates, examples = 0, []
    if suspects.size:
        seen: dict[str, int] = {}
        wanted = pl.Series(suspects)
        for f in manifest.files:
            s = pl.Series(_read_column(store, f"{prefix}/{f.path}", column)).drop_nulls()
            for value in s.filter(s.hash(seed=0).is_in(wanted)).to_list():
                seen[value] = seen.get(value, 0) + 1
        dups = {k: v for k, v in seen.items() if v > 1}
        duplicates = sum(v - 1 for v in dups.values())
        examples = [str(k) for k in list(dups)[:5]]
    return KeyReport(rows=rows, nulls=nulls, duplicates=duplicates, examples=examples)
