"""A rewritten shard spliced from column chunks (export/splice.py, refresh.write_spliced): the
file Arrow's writer would have written, byte for byte, with only the changed columns encoded;
and the change feed's replay writes the same bytes."""

from __future__ import annotations

import io
import random
from types import SimpleNamespace

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_assets.errors import UserError
from dataset_assets.export import refresh, splice
from dataset_assets.export.shards import ParquetOptions, open_writer

MiB = 1 << 20
SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False), pa.field("provider", pa.string()), pa.field("title", pa.string()),
    pa.field("popularity", pa.float64()), pa.field("updated_on", pa.timestamp("us", tz="UTC")),
    pa.field("width", pa.int32()), pa.field("flag", pa.bool_()), pa.field("meta", pa.string()),
])
DICTIONARY, STATISTICS = ["provider"], ["id", "provider", "popularity", "updated_on", "width"]


def _plan():
    schema = SimpleNamespace(arrow=SCHEMA, names=SCHEMA.names, dictionary_columns=lambda: DICTIONARY,
                             statistics_columns=lambda: STATISTICS)
    return SimpleNamespace(schema=schema)


def _spliced(path, raw, groups, options=None):
    return refresh.write_spliced(path, raw, groups, SCHEMA, DICTIONARY, STATISTICS, options or ParquetOptions())


def _rows(n: int, seed: int) -> pa.Table:
    rnd = random.Random(seed)
    pop = [rnd.choice([None, float("nan"), -0.0, float("inf")]) if rnd.random() < 0.05 else rnd.random() for _ in range(n)]
    return pa.table({
        "id": [f"{seed:02d}-{i:06d}" for i in range(n)],
        "provider": [rnd.choice(["flickr", "met", "wikimedia", None]) for _ in range(n)],
        "title": [None if rnd.random() < 0.1 else "t" * rnd.randint(0, 40) + str(i) for i in range(n)],
        "popularity": pop,
        "updated_on": pa.array(np.arange(n, dtype=np.int64) * 1_000_003, pa.timestamp("us", tz="UTC")),
        "width": pa.array([rnd.randint(-5, 5000) for _ in range(n)], pa.int32()),
        "flag": [rnd.random() < 0.5 for _ in range(n)],
        # a column big enough for several pages per row group
        "meta": ['{"k": "%s"}' % ("x" * rnd.randint(50, 400)) for _ in range(n)],
    }, schema=SCHEMA)


def _previous(path, groups: list[pa.Table]) -> None:
    w = open_writer(path, SCHEMA, ParquetOptions(), DICTIONARY, STATISTICS)
    for g in groups:
        w.write_table(g, row_group_size=g.num_rows)
    w.close()


def test_a_file_spliced_from_its_own_chunks_is_the_same_file(tmp_path):
    path = tmp_path / "a.parquet"
    _previous(path, [_rows(n, s) for s, n in enumerate((3000, 1, 7000, 2500))])
    raw = path.read_bytes()
    src = splice.Source(io.BytesIO(raw))
    assert len(src.row_groups) == 4 and max(len(c.offset_index.get(1).items) for c in src.chunks(2)) > 1  # several pages
    out = io.BytesIO()
    w = splice.Writer(out, src)
    for i in range(4):
        w.add(src.rows(i), src.chunks(i))
    assert w.close() == len(raw) and out.getvalue() == raw


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_rewrite_spliced_from_its_changed_columns_is_the_file_encoded_whole(tmp_path, seed):
    """Row groups unchanged, updated in one column or several (also to the values they held), and
    losing rows: the spliced file is _write's byte for byte, and every reader reads its rows."""
    rnd = random.Random(seed)
    groups = [_rows(n, seed * 10 + i) for i, n in enumerate((4000, 2000, 3000, 500, 2500))]
    prev = tmp_path / "prev.parquet"
    _previous(prev, groups)
    plan, options = _plan(), ParquetOptions()
    applied = []
    for i, g in enumerate(groups):
        ids = g.column("id").to_pylist()
        kind = ["none", "title", "two", "same", "delete"][i] if seed == 1 else rnd.choice(["none", "title", "two", "same", "delete"])
        out_keys: list[str] = []
        upd = None
        if kind == "delete":
            out_keys = rnd.sample(ids, 50)
        elif kind != "none":
            at = sorted(rnd.sample(range(len(ids)), 40))
            upd = g.take(pa.array(at))
            if kind in ("title", "two"):
                upd = upd.set_column(2, SCHEMA.field("title"), pa.array([f"new {k}" for k in range(40)], pa.string()))
            if kind == "two":
                upd = upd.set_column(3, SCHEMA.field("popularity"), pa.array([float(k) for k in range(40)]))
        keys = pl.Series(upd.column("id").to_pylist() if upd is not None else [], dtype=pl.String)
        rows, changed = refresh._apply_columns(g, "id", pl.Series(out_keys, dtype=pl.String), keys, upd)
        assert changed == {"none": [], "same": [], "title": [2], "two": [2, 3], "delete": None}[kind]
        applied.append((i, None if kind == "none" else rows, changed))
    want = refresh._write(tmp_path / "whole.parquet", [g if r is None else r for (_, r, _), g in zip(applied, groups)], plan, options)
    with open(prev, "rb") as raw:
        got = _spliced(tmp_path / "spliced.parquet", raw, iter(applied), options)
    assert (tmp_path / "spliced.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert (got.rows, got.bytes, got.sha256) == (want.rows, want.bytes, want.sha256)
    table = pq.read_table(tmp_path / "spliced.parquet")
    assert table.num_rows == want.rows and pl.read_parquet(tmp_path / "spliced.parquet").height == want.rows
    duckdb = pytest.importorskip("duckdb")
    assert duckdb.sql(f"select count(*), count(title) from '{tmp_path / 'spliced.parquet'}'").fetchone() == \
        (table.num_rows, table.num_rows - table.column("title").null_count)


def test_a_damaged_previous_file_is_a_clear_error(tmp_path):
    prev = tmp_path / "prev.parquet"
    _previous(prev, [_rows(100, 1)])
    data = prev.read_bytes()
    n = int.from_bytes(data[-8:-4], "little")
    damaged = {
        "its pages cut short": data[:100] + data[-8 - n:],
        "its footer cut short": data[:-8 - n] + data[-8 - n // 2:],
        "a footer length past its start": data[:-8] + (len(data) + 1).to_bytes(4, "little") + b"PAR1",
    }
    for what, content in damaged.items():
        prev.write_bytes(content)
        with open(prev, "rb") as raw, pytest.raises(UserError, match="rerun the export with --full") as err:
            _spliced(tmp_path / "x.parquet", raw, iter([(0, None, None)]))
        assert "cannot be read as it is" in str(err.value), what


def test_the_feeds_replay_splices_the_same_bytes_as_the_refresh(tmp_path):
    """The replay (export/feed.py, what ``apply-changes`` runs) splices a file whose rows stay in
    place from the same decisions as the refresh, each row group with its own updates whatever the
    feed's order, and writes the refresh's file byte for byte; a file the feed appends rows to is
    left to the replay's other way (nothing written). (A copied column keeps the pages it had: a
    first export hands row groups to the writer in pieces, and at 1M rows one column chunk written
    again in one piece came out with other pages, bench/README.md. These small pieces encode alike
    either way, so here the bytes are compared, not that difference.)"""
    from dataset_assets.export import feed as feed_mod

    rnd = random.Random(11)
    groups = [_rows(n, 40 + i) for i, n in enumerate((6000, 5000, 7000))]
    prev = tmp_path / "prev.parquet"
    w = open_writer(prev, SCHEMA, ParquetOptions(), DICTIONARY, STATISTICS)
    for g in groups:  # each row group in three pieces, as a first export writes them
        w.write_table(pa.concat_tables([g.slice(0, 1000), g.slice(1000, 2000), g.slice(3000)]), row_group_size=g.num_rows)
    w.close()
    per_group, gone = [], []
    for i, g in enumerate(groups):
        at = sorted(rnd.sample(range(g.num_rows), 30))
        upd = g.take(pa.array(at))
        upd = upd.set_column(3, SCHEMA.field("popularity"), pa.array([rnd.random() for _ in at]))
        per_group.append(upd if i != 1 else None)
        if i == 2:
            gone += rnd.sample([k for k in g.column("id").to_pylist() if k not in set(upd.column("id").to_pylist())], 5)
    every = pa.concat_tables([u for u in per_group if u is not None])
    order = list(range(every.num_rows))
    rnd.shuffle(order)  # the feed's order is not the file's
    feed = every.take(pa.array(order))
    out_keys = pl.Series(gone, dtype=pl.String)

    def keys(t):
        return pl.Series(t.column("id").to_pylist() if t is not None else [], dtype=pl.String)

    # the refresh: each row group with its own updated rows (refresh.rewrite_shard's ``updated``)
    with open(prev, "rb") as raw, pq.ParquetFile(prev) as pf:
        _spliced(tmp_path / "refresh.parquet", raw,
                 refresh.splice_groups(pf, "id", out_keys, lambda i: (per_group[i], keys(per_group[i])), SCHEMA))

    def replay(rows: pa.Table, target):
        mine = pl.DataFrame({"row": pl.Series(range(rows.num_rows), dtype=pl.UInt32)})
        return feed_mod._rebuilt_in_place(prev, target, rows, mine, out_keys, pl.Series([], dtype=pl.String), "id",
                                          SCHEMA, ParquetOptions(), DICTIONARY, STATISTICS)

    assert replay(feed, tmp_path / "replay.parquet")
    refreshed = (tmp_path / "refresh.parquet").read_bytes()
    assert (tmp_path / "replay.parquet").read_bytes() == refreshed
    assert not replay(pa.concat_tables([feed, _rows(3, 99)]), tmp_path / "appended.parquet")
    assert not (tmp_path / "appended.parquet").exists()

    got = pq.read_table(tmp_path / "refresh.parquet")
    assert got.num_rows == sum(g.num_rows for g in groups) - 5 and not set(gone) & set(got.column("id").to_pylist())
    new_pop = dict(zip(every.column("id").to_pylist(), every.column("popularity").to_pylist()))
    for k, v in zip(got.column("id").to_pylist(), got.column("popularity").to_pylist()):
        if k in new_pop:
            assert v == new_pop[k]
    # row group 1 was copied as it was, pages and all; row group 0 kept every column but popularity
    a, b = splice.Source(open(prev, "rb")), splice.Source(io.BytesIO(refreshed))
    for c in range(len(SCHEMA)):
        for rg in (0, 1):
            ca, cb = a.chunk(rg, c), b.chunk(rg, c)
            same = ca.source.read(ca.start, ca.length) == cb.source.read(cb.start, cb.length)
            assert same == (rg == 1 or SCHEMA.names[c] != "popularity"), (rg, SCHEMA.names[c])
