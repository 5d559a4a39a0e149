"""The clustered layout's first export: its shard count, whether it writes its shards while reading, and its bounded reading of the spill
(export/refresh.py). A shard is streamed to its file, never read whole."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa

from dataset_assets.export import refresh

MiB = 1 << 20


def _plan(heap_bytes: int):
    return SimpleNamespace(pages=heap_bytes // 8192, info=SimpleNamespace(block_size=8192))


def test_one_shard_per_worker_once_the_table_is_big_enough():
    # ~195 MB of parquet (a 1.1 GB heap) under a 256 MiB shard size: one shard by size, two for two workers
    assert refresh._estimate_shards(_plan(1_100 * MiB), 256 * MiB, workers=2) == 2
    # a small table stays one shard: each would be under MIN_SHARD_BYTES
    assert refresh._estimate_shards(_plan(200 * MiB), 256 * MiB, workers=2) == 1
    # a big table is cut by size; workers add nothing
    assert refresh._estimate_shards(_plan(100 * 1024 * MiB), 256 * MiB, workers=2) == 72


def test_spill_pieces_are_bounded_and_keep_every_row_in_order(tmp_path):
    schema = pa.schema([pa.field("k", pa.int64()), pa.field("s", pa.string())])
    spill = refresh._Spill(tmp_path / "spill", schema, shards=2)
    batches = [pa.table({"k": pa.array(range(i * 1000, (i + 1) * 1000), pa.int64()),
                         "s": pa.array(["x" * 100] * 1000, pa.string())}) for i in range(40)]
    for b in batches:
        spill.write(1, b)
    spill.close()
    one = batches[0].nbytes
    pieces = list(spill.pieces(1, 5 * one))
    assert all(p.nbytes <= 5 * one for p in pieces)
    assert len(pieces) == 8
    assert pa.concat_tables(pieces).column("k").to_pylist() == list(range(40_000))
    assert list(spill.pieces(0, 5 * one)) == []  # a shard that received nothing


def test_shards_are_written_while_reading_when_their_row_groups_fit_the_budget():
    from dataset_assets.export.shards import ParquetOptions

    o = ParquetOptions()  # row groups of 32 MiB
    assert refresh.BUFFER_BYTES == 64 * MiB
    # 1M rows of image (1.1 GB heap) in 2 shards: a full row group each
    assert refresh._buffered(_plan(1_100 * MiB), 2, o)
    # 5M in 4, 10M in 8: row groups of 16 and 8 MiB
    assert refresh._buffered(_plan(5_500 * MiB), 4, o)
    assert refresh._buffered(_plan(11_000 * MiB), 8, o)
    # 1M rows in ~100 shards: row groups of ~0.65 MiB, ~17 of them per shard
    assert refresh._buffered(_plan(1_100 * MiB), 99, o)
    # 20M in 16 shards: 4 MiB row groups, ~340 per shard (more than MAX_ROW_GROUPS): spilled
    assert not refresh._buffered(_plan(22_000 * MiB), 16, o)
    # 10^9 rows in 1000 shards: row groups under MIN_BUFFERED_GROUP
    assert not refresh._buffered(_plan(1_100_000 * MiB), 1000, o)
