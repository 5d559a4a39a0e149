"""The clustered layout's first export: its shard count, whether it writes its shards while reading, and its bounded reading of the spill
(export/refresh.py). A shard is streamed to its file, never read whole. Also a refresh's small decisions (row lookups, applying
changes, row hashes)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

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


def test_a_first_exports_read_groups_grow_with_its_shard_count_within_bounds():
    # each group is cut into a piece per shard, and a piece costs the same whatever its rows: with
    # many shards the groups grow (PIECE_BYTES a shard), from 8 MiB up to 32 MiB
    sizes = [refresh.first_export_group_bytes(n) for n in (1, 99, 256, 257, 512, 912, 1024, 5000)]
    assert sizes[:3] == [refresh.GROUP_BYTES] * 3 == [8 * MiB] * 3
    assert sizes[3] > 8 * MiB and sizes[4] == 16 * MiB and sizes[5] == 912 * refresh.PIECE_BYTES
    assert sizes[6:] == [32 * MiB, 32 * MiB]
    assert sizes == sorted(sizes)


def test_spill_pieces_are_bounded_and_keep_every_row_in_order(tmp_path):
    schema = pa.schema([pa.field("k", pa.int64()), pa.field("s", pa.string())])
    spill = refresh._Spill(tmp_path / "spill", schema, shards=2)
    batches = [pa.table({"k": pa.array(range(i * 1000, (i + 1) * 1000), pa.int64()),
                         "s": pa.array(["x" * 100] * 1000, pa.string())}) for i in range(40)]
    for b in batches:
        spill.write(1, b)
    spill.close()
    # a batch as the stream gives it back: its buffers' total, padding included (what pieces() adds up)
    with pa.OSFile(str(spill.path(1))) as f:
        one = next(iter(pa.ipc.open_stream(f))).get_total_buffer_size()
    pieces = list(spill.pieces(1, 5 * one))
    assert all(p.get_total_buffer_size() <= 5 * one for p in pieces)
    assert [p.num_rows for p in pieces] == [5000] * 8, "five whole batches to a piece"
    assert pa.concat_tables(pieces).column("k").to_pylist() == list(range(40_000))
    assert list(spill.pieces(0, 5 * one)) == []  # a shard that received nothing


def _resident(path: Path) -> int:
    """Bytes of ``path``'s mappings resident in this process (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_reading_a_spill_holds_about_one_piece_of_it_in_memory(tmp_path):
    # the spill is mapped, not read: pieces handed out are dropped from the process's memory, so a
    # shard's spill of 63 MiB read in pieces of 4 MiB never holds much more than one piece
    schema = pa.schema([pa.field("k", pa.int64()), pa.field("s", pa.string())])
    spill = refresh._Spill(tmp_path / "spill", schema, shards=1)
    for i in range(64):
        spill.write(0, pa.table({"k": pa.array(range(i * 1000, (i + 1) * 1000), pa.int64()),
                                 "s": pa.array([f"{i:04d}" * 256] * 1000, pa.string())}))
    spill.close()
    path = spill.path(0)
    assert path.stat().st_size > 60 * MiB
    keys, most = [], 0
    for piece in spill.pieces(0, 4 * MiB):
        piece = piece.combine_chunks()  # reads every byte of the piece, as encoding it does
        keys.extend(piece.column("k").to_pylist())
        most = max(most, _resident(path))
    assert keys == list(range(64_000)), "every row, in order"
    assert 0 < most <= 10 * MiB, f"{most / MiB:.1f} MiB of the spill resident at once"


def test_shards_are_written_while_reading_when_their_row_groups_fit_the_budget():
    from dataset_assets.export.shards import ParquetOptions

    o = ParquetOptions()  # row groups of 32 MiB
    assert refresh.BUFFER_BYTES == 64 * MiB
    # 1M rows of image in 2 shards: a full row group each; 5M in 4, 10M in 8: 16 and 8 MiB
    assert refresh._buffered(2, o)
    assert refresh._buffered(4, o)
    assert refresh._buffered(8, o)
    # more shards: row groups under MIN_BUFFERED_GROUP, spilled instead
    assert not refresh._buffered(9, o)
    assert not refresh._buffered(99, o)
    # small row groups asked for: a full one each while they fit
    assert refresh._buffered(60, ParquetOptions(row_group_bytes=1 * MiB))


class _FewHashes(refresh._Known):
    """Three hash values for every key: most lookups meet other keys with the same hash first."""

    def _hash(self, keys):
        return (keys.hash(seed=1) % 3).to_numpy()


def test_a_shards_rows_are_gathered_from_each_read_batch_as_a_take_from_the_whole_group_would():
    import numpy as np

    rng = np.random.default_rng(7)
    sizes = [0, 5, 1, 0, 17, 9]  # empty batches too
    batches, n = [], 0
    for k in sizes:
        batches.append(pa.record_batch({"i": pa.array(range(n, n + k), pa.int64()),
                                        "s": pa.array([f"row {j}" if j % 3 else None for j in range(n, n + k)], pa.large_string())}))
        n += k
    whole = pa.Table.from_batches(batches)
    for rows in (np.arange(n), np.array([], np.int64), np.array([0, n - 1]), np.sort(rng.choice(n, 11, replace=False))):
        got = refresh._gather(batches, rows, whole.schema)
        assert got.equals(whole.take(pa.array(rows, pa.int64()))), rows
        # one take per batch that holds some of the rows: never a concatenation of the group
        assert got.column(0).num_chunks == len({int(np.searchsorted(np.cumsum(sizes), r, side="right")) for r in rows})


@pytest.mark.parametrize("kept", [refresh.KEPT_CLUSTER_PARTS, 3])
def test_a_rows_shard_from_its_cluster_part_is_the_one_its_whole_sort_key_falls_in(monkeypatch, kept):
    """The layout places rows by their sort key's cluster part (made once per distinct value, kept
    between read groups) and makes the key's part only for rows whose cluster part a bound shares; that
    must be the shard the whole sort key falls in, whatever the values: nulls, prefixes of one another,
    characters beyond the BMP, integers of both signs, several cluster columns or none, bounds that
    are rows' own sort keys; also when more distinct values come than the layout keeps (``kept`` 3)."""
    import random

    import numpy as np
    import polars as pl

    monkeypatch.setattr(refresh, "KEPT_CLUSTER_PARTS", kept)
    rng = random.Random(3)
    for trial in range(300):
        n = rng.randint(1, 200)
        t = pa.table({"k": [f"{rng.randint(0, 10**6):x}" for _ in range(n)] if trial % 2 else [rng.randint(-10**9, 10**9) for _ in range(n)],
                      "p": pa.array([rng.choice([None, "a", "ab", "b", "", "abc", "z\u00e9", "\U0001f600", "\uffff"]) for _ in range(n)]),
                      "q": pa.array([rng.choice([None, -5, 0, 3, 10**12, -10**12]) for _ in range(n)], pa.int64())})
        cluster = rng.choice([[], ["p"], ["q"], ["p", "q"], ["q", "p"]])
        whole = (refresh.sort_keys(t, cluster) + refresh.sort_keys(t, ["k"]))
        cuts = sorted(set(rng.sample(whole.to_list(), min(n, rng.randint(0, 6)))))
        layout = refresh._Layout(cluster, "k", [None, *cuts], list(range(len(cuts) + 1)))
        want = pl.Series(cuts, dtype=pl.String).search_sorted(whole, side="right").to_numpy() if cuts else np.zeros(n)
        chunked = pa.Table.from_batches(t.to_batches(max_chunksize=max(1, n // 3)))  # as a read group is
        for _ in range(2):  # the second time from the parts the layout kept
            parts, rows = layout.cluster_parts(chunked)
            assert [parts[i] for i in rows] == refresh.sort_keys(t, cluster).to_list()
            assert layout.shard_of(parts, rows, chunked).tolist() == want.tolist(), (trial, cluster)
        assert len(layout._parts) <= kept


def test_known_rows_are_found_by_key_hash_and_told_apart_by_key():
    import numpy as np
    import polars as pl

    keys = [f"k{i:04d}" for i in range(300)]
    index = pl.DataFrame({"id": keys, refresh._KEEP: [i % 10 != 0 for i in range(300)],
                          refresh._H1: np.arange(300, dtype=np.uint64), refresh._H2: np.arange(300, dtype=np.uint64) + 7})
    probe = pl.Series("id", ["k0005", "k0010", "nope", "k0299", "k0000", "k0123"])
    for known in (refresh._Known(index, "id"), _FewHashes(index, "id")):
        # k0010 and k0000 are in the index but not released; "nope" is not there at all
        assert known.released(probe).tolist() == [True, False, False, True, False, True]
        h1 = pl.Series(np.array([5, 10, 0, 299, 0, 999], dtype=np.uint64))
        h2 = h1 + 7
        assert known.unchanged(probe, h1, h2).tolist() == [True, False, False, True, False, False]
        # every row of the index is found, released or not, at its row
        found, row = known.rows(probe)
        assert found.tolist() == [True, True, False, True, True, True]
        assert [int(r) for r, f in zip(row, found) if f] == [5, 10, 299, 0, 123]
        # the classification's left join: the index's columns beside each candidate, null where it holds no row
        frame = pl.DataFrame({"id": probe, "x": range(6)})
        names = {refresh._KEEP: "p_keep", refresh._H1: "p_h1", refresh._H2: "p_h2"}
        joined = known.joined(frame, found, row, names)
        assert joined.equals(frame.join(index.rename(names), on="id", how="left", maintain_order="left"))
        assert joined.row(2) == ("nope", 2, None, None, None)
        # no key found: every index column null
        none = frame.filter(pl.col("id") == "nope")
        assert known.joined(none, *known.rows(none.get_column("id")), names).equals(
            none.join(index.rename(names), on="id", how="left"))
    # an empty index (every row of the previous release deleted, say): nothing is found
    empty = refresh._Known(index.clear(), "id")
    assert not empty.rows(probe)[0].any() and not empty.released(probe).any()
    assert not empty.unchanged(probe, h1, h2).any()
    assert empty.joined(frame, *empty.rows(probe), names).equals(frame.join(index.clear().rename(names), on="id", how="left"))


def test_a_row_group_with_its_changes_applied():
    import random

    import polars as pl

    rg = pa.table({"id": [f"k{i:03d}" for i in range(200)], "v": list(range(200))})
    rnd = random.Random(7)
    cases = [(set(), ["k199"]),                       # the last row updated
             ({"k000", "k150"}, ["k001", "k199"]),     # a few changes
             (set(), [f"k{i:03d}" for i in range(200)]),  # every row updated
             (set(f"k{i:03d}" for i in range(200)), [])]  # every row deleted
    for _ in range(30):
        ids = rg.column("id").to_pylist()
        cases.append((set(rnd.sample(ids, rnd.randint(0, 30))), rnd.sample(ids, rnd.randint(0, 60))))
    for out, upd in cases:
        upd = [k for k in upd if k not in out]
        rnd.shuffle(upd)
        upd_tbl = pa.table({"id": upd, "v": [1000 + int(k[1:]) for k in upd]}) if upd else None
        got = refresh._apply(rg, "id", pl.Series(sorted(out), dtype=pl.String), pl.Series(upd, dtype=pl.String), upd_tbl)
        want = [(k, 1000 + int(k[1:]) if k in upd else int(k[1:])) for k in rg.column("id").to_pylist() if k not in out]
        assert list(zip(got.column("id").to_pylist(), got.column("v").to_pylist())) == want


def test_applying_changes_copies_only_the_columns_that_changed_bit_for_bit():
    """_apply gathers a column only when an updated row's value differs in it (floats by their bits);
    the other columns are the previous row group's own buffers (or filtered, when rows leave)."""
    import polars as pl

    nan = float("nan")
    rg = pa.table({"id": [f"k{i}" for i in range(6)], "f": [0.0, 1.0, nan, 2.5, None, 3.0],
                   "s": ["a", "b", None, "d", "e", "f"], "l": [[1], [2], None, [4], [5], [6]]})

    def apply(out, rows):
        upd = pa.table({c: [r[c] for r in rows] for c in rg.column_names}, schema=rg.schema) if rows else None
        return refresh._apply(rg, "id", pl.Series(out, dtype=pl.String), pl.Series([r["id"] for r in rows], dtype=pl.String), upd)

    def bits(t):
        return t.column("f").combine_chunks().view(pa.int64()).to_pylist()

    def buffers(t, c):
        return [b.address for ch in t.column(c).chunks for b in ch.buffers() if b is not None]

    same = [{"id": "k1", "f": 1.0, "s": "b", "l": [2]}, {"id": "k2", "f": nan, "s": None, "l": None}]
    got = apply([], same)  # updated rows that hold what they held: nothing is copied
    assert bits(got) == bits(rg) and got.drop_columns(["f"]).equals(rg.drop_columns(["f"]))  # (NaN != NaN in equals)
    assert all(buffers(got, c) == buffers(rg, c) for c in ("id", "f", "s")), "not copied"
    got = apply([], [{"id": "k0", "f": -0.0, "s": "a", "l": [1]}])  # only the sign bit of 0.0 changes
    assert bits(got)[0] != bits(rg)[0] and bits(got)[1:] == bits(rg)[1:]
    assert buffers(got, "s") == buffers(rg, "s") and got.column("l").to_pylist() == rg.column("l").to_pylist()
    got = apply(["k3"], [{"id": "k4", "f": None, "s": "E", "l": [5]}])  # a row leaves, a string changes
    assert got.column("id").to_pylist() == ["k0", "k1", "k2", "k4", "k5"]
    assert got.column("s").to_pylist() == ["a", "b", None, "E", "f"]
    assert bits(got) == [bits(rg)[i] for i in (0, 1, 2, 4, 5)] and got.column("f").null_count == 1
    got = apply([], [{"id": "k5", "f": 3.0, "s": "F", "l": [6]}])  # a nested column is gathered even when it holds what it held
    assert got.column("l").to_pylist() == rg.column("l").to_pylist() and buffers(got, "l") != buffers(rg, "l")
    assert got.column("s").to_pylist()[5] == "F" and buffers(got, "f") == buffers(rg, "f")
    got = apply([], [{"id": "k5", "f": 3.0, "s": "f", "l": [7]}])  # and when it changes
    assert got.column("l").to_pylist()[5] == [7] and got.column("id").to_pylist() == rg.column("id").to_pylist()


def test_row_hashes_from_one_table_equal_those_column_by_column_and_tell_floats_by_their_bits():
    """row_hashes converts the columns to polars as one table; the row index of earlier releases holds
    hashes made one column at a time, so both must give the same numbers (else every row of the next
    refresh would count as changed). Floats hash by their bits; a type polars cannot hold, by its text."""
    import polars as pl

    ts = pa.timestamp("us", tz="UTC")
    chunks = [pa.record_batch({"k": pa.array(["a", "b", "c"]), "f": pa.array([0.0, -0.0, float("nan")]),
                               "i": pa.array([1, None, 3], pa.int32()), "t": pa.array([0, 1, None], ts),
                               "b": pa.array([True, None, False]), "j": pa.array(['{"x": 1}', None, "[]"])}),
              pa.record_batch({"k": pa.array(["d", "e"]), "f": pa.array([None, float("inf")]), "i": pa.array([4, 5], pa.int32()),
                               "t": pa.array([2, 3], ts), "b": pa.array([None, True]), "j": pa.array(["", "{}"])})]
    table = pa.Table.from_batches(chunks)  # two chunks, as a read group is
    cols = table.column_names
    h1, h2 = refresh.row_hashes(table, cols)
    one_by_one = pl.DataFrame({c: refresh._hashable(table.column(c)) for c in cols})
    assert h1.equals(one_by_one.hash_rows(seed=refresh._SEEDS[0])) and h2.equals(one_by_one.hash_rows(seed=refresh._SEEDS[1]))
    assert len(set(zip(h1.to_list(), h2.to_list()))) == table.num_rows
    # 0.0 and -0.0 are different values in the release: a change between them is a change
    zero = refresh.row_hashes(pa.table({"f": [0.0]}), ["f"])
    minus_zero = refresh.row_hashes(pa.table({"f": [-0.0]}), ["f"])
    assert zero[0][0] != minus_zero[0][0]
    # a type polars cannot hold (an interval) is hashed by its exact text, both ways alike
    iv = pa.table({"k": ["a", "b"], "iv": pa.array([pa.MonthDayNano([1, 2, 3]), pa.MonthDayNano([1, 2, 4])], pa.month_day_nano_interval())})
    a1, _ = refresh.row_hashes(iv, ["k", "iv"])
    assert a1.equals(pl.DataFrame({c: refresh._hashable(iv.column(c)) for c in ["k", "iv"]}).hash_rows(seed=refresh._SEEDS[0]))
    assert a1[0] != refresh.row_hashes(iv.set_column(1, "iv", pa.array([pa.MonthDayNano([1, 2, 4])] * 2,
                                                                        pa.month_day_nano_interval())), ["k", "iv"])[0][0]


def test_a_part_up_to_one_and_a_half_row_groups_is_one_row_group_and_a_bigger_one_equal_row_groups(tmp_path):
    """A rewrite hands each previous row group over with its changes applied; cut again by size, one
    whose rows grew by a few bytes became a row group and a sliver, and every column chunk after it
    held other rows (Xet found none of them). Nor does a first export write a sliver after each
    row group."""
    import pyarrow.parquet as pq

    from dataset_assets.export.shards import MiB, ParquetOptions

    options = ParquetOptions(row_group_bytes=1 * MiB)
    row = 1000  # bytes of a row of this table
    table = pa.table({"s": pa.array([b"x" * (row - 8)] * 4000, pa.binary()), "i": pa.array(range(4000), pa.int64())})
    per_row = table.nbytes / table.num_rows
    for share, want in [(0.5, [1]), (1.2, [1]), (1.5, [1]), (1.6, [2, 2]), (3.1, [4, 4, 4, 4])]:
        rows = int(share * MiB / per_row)
        path = tmp_path / f"{share}.parquet"
        with pq.ParquetWriter(path, table.schema) as w:
            assert refresh._write_part(w, table.slice(0, rows), options) == rows
        md = pq.read_metadata(path)
        sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        assert sum(sizes) == rows and len(sizes) == len(want), (share, sizes)
        assert max(sizes) - min(sizes) <= 1, f"equal row groups, no sliver: {sizes}"


def test_a_shard_is_compacted_for_many_small_row_groups_not_for_many_full_ones(tmp_path):
    """A shard of the default 256 MiB is written in some 40 full row groups: compacting it (a sorted
    file under a new name) on every rewrite sent all of it to the Hub again. Folded tails and
    deletions leave small row groups: past MAX_ROW_GROUPS and twice what its rows need, it is."""
    import pyarrow.parquet as pq

    def shard(sizes: list[int]) -> pq.FileMetaData:
        path = tmp_path / "s.parquet"
        with pq.ParquetWriter(path, pa.schema([("i", pa.int64())])) as w:
            for n in sizes:
                w.write_table(pa.table({"i": pa.array(range(n), pa.int64())}), row_group_size=n)
        return pq.read_metadata(path)

    many = refresh.MAX_ROW_GROUPS + 13
    assert not refresh._fragmented(shard([1000] * many)), "full row groups"
    assert not refresh._fragmented(shard([1000] * (many - 1) + [10])), "full row groups and a tail folded in"
    assert not refresh._fragmented(shard([1000] * 20 + [10] * 5)), "few row groups"
    assert refresh._fragmented(shard([1000] * 10 + [50] * (many - 10))), "many small ones"
    assert refresh._fragmented(shard([400] * many + [1000])), "deletions left most of them under half full"


def test_the_change_feed_is_staged_on_disk_shard_by_shard_and_written_as_it_would_be_from_memory(tmp_path):
    """A refresh held every rewritten shard's changed rows until it wrote the change feed (after a
    provider's popularity is recomputed: all of that provider's rows). Each shard's part goes to
    disk as soon as the shard is rewritten, and the feed reads it back in the same order."""
    import polars as pl
    import pyarrow.parquet as pq

    from dataset_assets.export.shards import ParquetOptions

    schema = pa.schema([pa.field("k", pa.int64()), pa.field("s", pa.string())])
    plan = SimpleNamespace(schema=SimpleNamespace(arrow=schema, names=schema.names,
                                                  dictionary_columns=lambda: [], statistics_columns=lambda: []))

    def rows(lo: int, hi: int) -> pa.Table:
        return pa.table({"k": pa.array(range(lo, hi), pa.int64()), "s": pa.array([f"v{i}" for i in range(lo, hi)])})

    def ops(op: str, n: int) -> pa.Array:
        return pa.array([op] * n, pa.string())

    new_file = tmp_path / "new.parquet"  # a file new in the release: the feed lists its every row
    pq.write_table(rows(100, 130), new_file, row_group_size=10)
    parts = {3: [refresh._delete_rows(pl.Series("k", [1, 2]), "a.parquet", plan, "k"),
                 refresh._change_rows(rows(10, 20), ops("update", 10), "a.parquet", plan),
                 refresh._change_rows(rows(20, 25), ops("insert", 5), "a-tail.parquet", plan),
                 refresh._EveryRow(new_file, "new.parquet"),
                 refresh._change_rows(rows(40, 42), ops("insert", 2), "b.parquet", plan)],
             7: [refresh._change_rows(rows(50, 53), ops("update", 3), "c.parquet", plan)],
             9: []}
    staged = {sid: refresh._staged_feed(tmp_path / "_feed", sid, p) for sid, p in parts.items()}
    assert [type(p).__name__ for p in staged[3]] == ["_Staged", "_EveryRow", "_Staged"]
    assert [type(p).__name__ for p in staged[7]] == ["_Staged"] and staged[9] == []
    assert not any(isinstance(p, pa.Table) for ps in staged.values() for p in ps), "no row held in memory"
    assert len(list((tmp_path / "_feed").iterdir())) == 3

    def feed(all_parts: list, folder: str) -> pa.Table:
        (tmp_path / folder).mkdir()
        out = refresh._write_changes(tmp_path / folder, all_parts, plan, SimpleNamespace(root_hash="r"), "2026-01-01",
                                     SimpleNamespace(parquet=ParquetOptions()), {}, lambda t: ops("insert", t.num_rows))
        assert (out["inserted"], out["updated"], out["deleted"]) == (37, 13, 2)
        return pq.read_table(tmp_path / folder / refresh.CHANGES_DIR / "changes-00000.parquet")

    held = feed([p for sid in (3, 7, 9) for p in parts[sid]], "held")
    from_disk = feed([p for sid in (3, 7, 9) for p in staged[sid]], "staged")
    assert from_disk.equals(held)
    assert from_disk.column("k").to_pylist() == [1, 2, *range(10, 25), *range(100, 130), 40, 41, 50, 51, 52]
    assert from_disk.column("file").to_pylist()[:3] == ["a.parquet", "a.parquet", "a.parquet"]


def test_a_shards_changed_rows_are_routed_from_its_spill_to_the_row_groups_they_update(tmp_path):
    """A rewrite took every changed row of a shard from its spill at once and held them while it
    rewrote the shard. Now they are read a piece at a time: a main file's updates go to a file per
    row group (each row group is rewritten with its own), the tail's updates and the inserts come
    back in the order asked for; a changed row missing from the spill is an error, not a row lost."""
    import numpy as np
    import polars as pl

    from dataset_assets.errors import UserError

    schema = pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64())])
    spill = refresh._Spill(tmp_path / "spill", schema, shards=2)
    keys = [f"k{i:04d}" for i in range(3000)]
    rng = np.random.default_rng(7)
    order = rng.permutation(3000)  # the spill holds them in read order, not key order
    for a in range(0, 3000, 70):
        rows = order[a:a + 70]
        spill.write(1, pa.table({"k": pa.array([keys[i] for i in rows]), "v": pa.array(rows.astype(np.int64))}, schema=schema))
    spill.close()
    main = pl.Series("k", [keys[i] for i in range(0, 3000, 3)])  # updates of the main file, 4 row groups
    main_rg = np.array([i * 4 // 3000 for i in range(0, 3000, 3)], dtype=np.int64)
    tail = pl.Series("k", [keys[i] for i in (2999, 4, 1000)])
    ins = pl.Series("k", [keys[i] for i in (10, 5, 2000, 7)])
    # held while they fit (a few updates: no file), else staged a file per row group
    for held_bytes, staged in ((1 << 30, False), (8 << 10, True)):
        prefix = tmp_path / f"feed-{held_bytes}" / "upd-000001"
        routed, (tail_rows, ins_rows) = refresh._route(spill, 1, "k", main, main_rg, [tail, ins], prefix, 4 << 10, held_bytes)
        assert sorted(routed) == [0, 1, 2, 3]
        assert all(isinstance(v, Path) == staged for v in routed.values())
        assert prefix.parent.exists() == staged
        for rg, got in routed.items():
            got = refresh._read_ipc(got) if staged else got
            assert sorted(got.column("k").to_pylist()) == sorted(k for k, r in zip(main.to_list(), main_rg) if r == rg)
            assert all(keys[v] == k for k, v in zip(got.column("k").to_pylist(), got.column("v").to_pylist()))
        assert tail_rows.column("k").to_pylist() == tail.to_list() and tail_rows.column("v").to_pylist() == [2999, 4, 1000]
        assert ins_rows.column("k").to_pylist() == ins.to_list()
    none, (nothing,) = refresh._route(spill, 1, "k", main.clear(), None, [ins.clear()], tmp_path / "x" / "x", 4 << 10, 0)
    assert none == {} and nothing is None
    for held_bytes in (0, 1 << 30):  # read a piece at a time, or taken from the whole spill
        with pytest.raises(UserError, match="not among the rows read"):
            refresh._route(spill, 1, "k", main.clear(), None, [pl.Series("k", ["k0001", "gone"])], tmp_path / "y" / "y",
                           4 << 10, held_bytes)
    with pytest.raises(UserError, match="not among the rows read"):
        refresh._route(spill, 0, "k", pl.Series("k", ["k0001"]), np.zeros(1, np.int64), [], tmp_path / "z" / "z", 4 << 10, 0)
