"""Layout ``clustered`` (export/refresh.py): a first export cuts shards by (provider, identifier)
ranges with a row index; a refresh reads what changed since the previous release, rewrites only
the shards whose rows changed, and writes a change feed.

Every refresh here is compared with a full export of the same data (``incremental=False`` into a
second store, no write in between), row for row, NaN = NaN; its stats with what the two releases
show; its change feed, applied to the previous release, with the new release
(``tests/refresh_helpers.py``: :func:`check_refresh`).

The scenario tests share one database of 20,000 rows (1 MiB shards: four shards; fewer rows give
one shard and nothing to reuse); each starts with a first export of the database as it is, in a
store of its own. The property test uses its own small table (1,500 rows in a heap padded with
``fillfactor=10`` so that the engine's size estimate, by heap pages, still cuts two shards),
re-seeded per example.

Regression tests for a bug fixed while they were written: a row the release leaves out (removed
from source, tombstoned) that is then deleted from the table, or whose key changes, stayed in the
row index and every later refresh failed its count check (test_deleting_a_row_the_release_left_out,
test_tombstoned_then_deleted_from_table, the property test, whose deletes and key changes pick
from every row).
"""

from __future__ import annotations

import re
import threading
from collections import Counter

import psycopg
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dataset_assets.export.progress import Progress
from dataset_assets.export.run import ExportOptions, export_snapshot
from dataset_assets.local.seed import change_rows, seed
from dataset_assets.storage.manifest import load_manifest
from dataset_assets.storage.stores import LocalStore
from dataset_assets.storage.verify import verify_table
from refresh_helpers import (
    SHARD_BYTES, CLUSTER, FILE, KEY, RELEASED, TABLE, VOLATILE, WORKERS, autocommit, by_key, check_refresh, differences,
    export_pair, first_export, in_flight, keys, manifest, prefix, query, rebuild_and_swap, release, released_count, sha256, shard_files, shard_ranges,
    shard_tables,
    sql, table_count, tombstone, write_config,
)

D1, D2, D3 = "2026-03-01", "2026-03-02", "2026-03-03"
SCENARIO_ROWS = 20_000
PROPERTY_ROWS = 1_500


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    """A table configuration file of this module's own (tables._load caches by path)."""
    return write_config(tmp_path_factory.mktemp("refresh_config") / "tables.yaml")


@pytest.fixture(autouse=True)
def _clustered_tables(monkeypatch, config_path):
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(config_path))


@pytest.fixture(scope="module")
def db(fresh_db) -> str:
    """The scenario tests' database (20,000 image rows); tests change it, each on top of the last."""
    uri = fresh_db("refresh")
    seed(uri, tables=[TABLE], rows={TABLE: SCENARIO_ROWS}, seed=21)
    return uri


@pytest.fixture
def stores(tmp_path):
    """(the store refreshes build in, a store for full exports of the same data)."""
    return LocalStore(tmp_path / "refresh"), LocalStore(tmp_path / "full")


def released_ids(uri: str, n: int, salt: str) -> list[str]:
    """``n`` rows the current release holds, picked pseudo-randomly by ``salt``."""
    return keys(uri, RELEASED, limit=n, order=f"md5(i.{KEY}::text || '{salt}')")


def assert_nothing_rewritten(c) -> None:
    s = c.stats
    assert s["shards_rewritten"] == 0 and s["files_reused"] == len(c.manifest.files), s
    assert all(f.reused_from == D1 for f in c.manifest.files)
    assert (s["inserted"], s["updated"], s["moved"], s["deleted"]) == (0, 0, 0, 0), s


# ---------------------------------------------------------------------------------------------
# 1. First export
# ---------------------------------------------------------------------------------------------


# how the first export writes its shards: while it reads, a row group per shard at a time (the
# default for this table); while it reads, with a memory budget so small that the shard holding
# most is written (as a smaller row group) every few read groups; after the read, from a spill
# (small read batches and groups there: each shard's pieces are a few KiB)
# {way: (the engine's settings, the export's options)}
WRITING = {"buffered": ({}, {}),
           "buffered, budget flushes": ({"BUFFER_BYTES": 2 << 20, "MIN_BUFFERED_GROUP": 256 << 10, "GROUP_BYTES": 128 << 10},
                                        {"batch_bytes": 64 << 10}),
           "spilled": ({"BUFFER_BYTES": 1}, {})}


@pytest.mark.parametrize("writing", WRITING)
def test_first_export_shards_hold_disjoint_ranges_and_a_row_index(db, stores, monkeypatch, writing):
    from dataset_assets.export import refresh

    settings, options = WRITING[writing]
    for name, value in settings.items():
        monkeypatch.setattr(refresh, name, value)
    # what waits in memory for a shard holds that shard's rows only (no slice of a bigger gather,
    # which the budget would count at its own size and which would keep the rest alive)
    waiting = []
    write = refresh._Buffered.write
    monkeypatch.setattr(refresh._Buffered, "write", lambda self, pos, piece: (
        waiting.append((piece.nbytes, piece.get_total_buffer_size())), write(self, pos, piece)))
    store, _ = stores
    m = first_export(db, D1, store, **options)
    assert m.layout["kind"] == "clustered" and m.layout["refresh"]["mode"] == "first export"
    assert m.layout["refresh"]["written_while_reading"] == (writing != "spilled")
    groups = [pq.ParquetFile(store.local_path(f"snapshots/{D1}/{TABLE}/{f.path}")).num_row_groups for f in m.files]
    if writing == "buffered, budget flushes":
        assert max(groups) > 1, "a budget of 2 MiB over four shards of ~5 MiB writes several row groups per shard"
    else:
        assert groups == [1] * len(m.files), "a shard under one row group's size is one row group"
    assert m.changes is None
    assert len(m.files) >= 3, "20,000 rows at 1 MiB make several shards"
    if writing != "spilled":
        assert len(waiting) > len(m.files) and all(buffers <= 1.1 * rows + 4096 for rows, buffers in waiting), \
            [w for w in waiting if w[1] > 1.1 * w[0] + 4096][:5]

    tables = shard_tables(store, D1, m)
    # across shards, in the layout's order: disjoint ascending ranges
    assert [s["path"] for s in m.layout["shards"]] == sorted(tables) == [f.path for f in m.files]
    assert not any(s.get("tail") for s in m.layout["shards"]), "a first export writes each shard whole"
    assert m.layout["shards"][0]["lower"] is None
    ranges = shard_ranges(store, D1, m)
    for (p1, _, hi, _), (p2, lo, _, _) in zip(ranges, ranges[1:]):
        assert hi < lo, f"{p1} and {p2} overlap: {hi} >= {lo}"

    # the released rows: those the filters keep, each once
    rows, _ = release(store, D1)
    assert m.row_count == rows.num_rows == sum(f.rows for f in m.files) == released_count(db)
    assert rows.column(KEY).to_pylist() == sorted(keys(db, RELEASED))

    # the row index: every row of the table (released or not), its sha256 in the manifest
    idx = m.layout["index"]
    assert idx["path"] == "_index.parquet"
    path = store.local_path(f"snapshots/{D1}/{TABLE}/_index.parquet")
    assert sha256(path) == idx["sha256"] and path.stat().st_size == idx["bytes"]
    assert pq.read_metadata(path).num_rows == idx["rows"] == table_count(db)

    # verify re-hashes the shards and the files beside them (the row index, the change feed)
    report = verify_table(store, D1, TABLE)
    assert report.ok, report.problems

    # within a shard the rows keep the order they were read in (a sort there cost as much as the
    # encoding, export/refresh.py): every row of a shard lies in its range, which the checks of
    # disjoint ranges above already cover; here, that no shard repeats a key
    for path, t in tables.items():
        ks = t.column(KEY).to_pylist()
        assert len(ks) == len(set(ks)), f"{path} holds a key twice"


class Stages(Progress):
    """Each progress stage an export reports: its label, the rows it announced, the rows and bytes
    it advanced by, whether it finished."""

    def __init__(self):
        self.stages: list[dict] = []
        self._lock = threading.Lock()

    def start(self, label, total_rows):
        self.stages.append({"label": label, "total": total_rows, "rows": 0, "bytes": 0, "finished": False})

    def advance(self, rows, nbytes):
        with self._lock:
            self.stages[-1]["rows"] += rows
            self.stages[-1]["bytes"] += nbytes

    def finish(self):
        self.stages[-1]["finished"] = True


def test_writing_shards_from_the_spill_and_rewriting_shards_report_their_progress(db, stores, monkeypatch):
    # the read reports progress; so do the two other stages that can take as long (at 10^9 rows,
    # hours): a first export writing every shard from its spill, a refresh rewriting shards
    from dataset_assets.export import refresh

    monkeypatch.setattr(refresh, "BUFFER_BYTES", 1)  # the shards are spilled, then written
    store, _ = stores
    p = Stages()
    [r] = export_snapshot(db, [TABLE], D1, store, ExportOptions(workers=WORKERS), progress=p)
    m = r.manifest
    assert [s["label"] for s in p.stages][0] == TABLE
    assert len(p.stages) == 2 and re.fullmatch(rf"{TABLE}: writing \d+ shards from the spill", p.stages[1]["label"]), p.stages
    writing = p.stages[1]
    assert writing["total"] == writing["rows"] == m.row_count > 0 and writing["finished"]
    assert writing["bytes"] == sum(f.bytes for f in m.files)

    # a refresh that changes rows in every shard: its rewrite, by the rows those shards held
    ids = keys(db, "true", limit=table_count(db) // 50, order=f"md5(i.{KEY}::text || 'progress')")
    sql(db, f"UPDATE {TABLE} SET title = coalesce(title, '') || ' (progress)' WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[])")
    p = Stages()
    [r2] = export_snapshot(db, [TABLE], D2, store, ExportOptions(workers=WORKERS), progress=p)
    rewritten = [f for f in r2.manifest.files if f.reused_from is None]
    assert len(rewritten) == len(m.files), "a change in every shard rewrites every shard"
    assert [s["label"] for s in p.stages] == [f"{TABLE} changes since {D1}", f"{TABLE}: rewriting {len(m.files)} shards"]
    rewrite = p.stages[1]
    assert rewrite["total"] == rewrite["rows"] == m.row_count and rewrite["finished"]
    assert rewrite["bytes"] == sum(f.bytes for f in rewritten)

    # nothing to rewrite: no such stage
    p = Stages()
    export_snapshot(db, [TABLE], D3, store, ExportOptions(workers=WORKERS), progress=p)
    assert [s["label"] for s in p.stages] == [f"{TABLE} changes since {D2}"]


@pytest.mark.parametrize("full", ["row index", "shards written while reading", "spill"])
def test_disk_full_during_a_first_export_is_one_sentence_and_leaves_nothing(db, stores, monkeypatch, full):
    """The file named goes to /dev/full, so the kernel answers ENOSPC for real while the rows are
    read: the user reads that the disk is full, nothing is committed, and a rerun completes."""
    from pathlib import Path

    from dataset_assets.errors import StoreError
    from dataset_assets.export import refresh

    store, _ = stores
    with monkeypatch.context() as m:
        if full == "row index":
            m.setattr(refresh, "INDEX", "/dev/full")  # staging / "/dev/full" is /dev/full; the shards are written as usual
        elif full == "shards written while reading":  # a budget so small that row groups are written during the read
            m.setattr(refresh, "BUFFER_BYTES", 1 << 20)
            m.setattr(refresh, "MIN_BUFFERED_GROUP", 64 << 10)
            m.setattr(refresh, "shard_file", lambda shard_id: "/dev/full")  # staging / "/dev/full" is /dev/full
        else:
            m.setattr(refresh, "BUFFER_BYTES", 1)
            m.setattr(refresh._Spill, "path", lambda self, pos: Path("/dev/full"))
        with pytest.raises(StoreError, match=r"is full; free space"):
            first_export(db, D1, store)
    assert not store.exists(f"snapshots/{D1}/{TABLE}")
    assert list((store.root / ".staging").glob("*")) == []
    assert first_export(db, D1, store).row_count == released_count(db)


def test_disk_full_while_a_refresh_writes_its_row_index_is_one_sentence_and_a_rerun_completes(db, stores, monkeypatch):
    """A refresh writes its row index while its shards are rewritten (in a thread of its own):
    a full disk there reaches the user as the same sentence, nothing is committed, and a rerun
    refreshes as if nothing had happened."""
    from dataset_assets.errors import StoreError
    from dataset_assets.export import refresh

    store, full = stores
    first_export(db, D1, store)
    change_rows(db, TABLE, fraction=0.01, seed=11, mode="random", kinds=("insert", "update"))
    with monkeypatch.context() as m:
        m.setattr(refresh, "INDEX", "/dev/full")  # staging / "/dev/full" is /dev/full
        with pytest.raises(StoreError, match=r"is full; free space"):
            first_export(db, D2, store)
    assert not store.exists(f"snapshots/{D2}/{TABLE}")
    assert list((store.root / ".staging").glob("*")) == []
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    assert c.stats["inserted"] > 0 and c.stats["updated"] > 0


# ---------------------------------------------------------------------------------------------
# 2. Refresh scenarios: each equals a full export; its stats say what changed
# ---------------------------------------------------------------------------------------------


def test_rows_after_an_empty_release_are_exported(fresh_db, stores):
    """A table released while empty (no shard, an empty row index, one file without rows), then
    given rows: the next export reads every row (there is no shard range to build on) and equals
    a full export. It failed on every rerun with "list index out of range" before."""
    uri = fresh_db("refresh_empty")
    seed(uri, tables=[TABLE], rows={TABLE: 300}, seed=41)
    autocommit(uri, f"CREATE TABLE stash AS SELECT * FROM {TABLE}", f"DELETE FROM {TABLE}", f"VACUUM {TABLE}")
    store, full = stores
    m = first_export(uri, D1, store)
    assert m.row_count == 0 and m.layout["index"]["rows"] == 0 and not m.layout["shards"]
    # no shard, but one file: the table's schema and no row (the card's config of it names a file)
    assert [(f.path, f.rows) for f in m.files] == [("train-empty.parquet", 0)]
    assert release(store, D1)[0].num_rows == 0
    sql(uri, f"INSERT INTO {TABLE} SELECT * FROM stash")
    m2, fm = export_pair(uri, D2, store, full)
    assert m2.row_count == fm.row_count == released_count(uri) > 0
    assert m2.layout["refresh"]["mode"] == "first export"
    assert not differences(release(store, D2)[0], release(full, D2)[0])


def test_appends_only(db, stores):
    store, full = stores
    first_export(db, D1, store)
    before = released_count(db)
    got = change_rows(db, TABLE, fraction=0.01, seed=5, mode="random", kinds=("insert",))
    assert got["insert"] > 100
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    s = c.stats
    assert s["candidates"] == got["insert"] and s["unchanged_candidates"] == 0
    assert s["inserted"] == len(c.diff.inserted) == released_count(db) - before > 0
    assert (s["updated"], s["moved"], s["deleted"]) == (0, 0, 0)


def test_uniform_title_updates(db, stores):
    store, full = stores
    first_export(db, D1, store)
    ids = keys(db, "true", limit=table_count(db) // 100, order=f"md5(i.{KEY}::text || 'titles')")
    [n] = sql(db, f"UPDATE {TABLE} SET title = coalesce(title, '') || ' (revised)', updated_on = updated_on + interval '1 hour' "
                  f"WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[])")
    assert n == len(ids)
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    in_release = set(ids) & set(c.previous.column(KEY).to_pylist())
    s = c.stats
    assert c.diff.changed == in_release and s["updated"] == len(in_release) and s["moved"] == 0
    assert s["candidates"] == len(ids) and s["unchanged_candidates"] == 0
    assert (s["inserted"], s["deleted"]) == (0, 0)
    # the updated rows carry their new updated_on (not a volatile-only change)
    new = by_key(c.refreshed, in_release)
    assert not differences(new, by_key(c.full, in_release), VOLATILE)
    # the feed: exactly these rows, as updates
    assert sorted(c.feed.column(KEY).to_pylist()) == sorted(in_release) and set(c.feed.column("change").to_pylist()) == {"update"}


class CountingStore(LocalStore):
    """A local store that counts the parquet files opened through it: on S3 each opening is a whole
    download (``Store.open_parquet_raw``, behind ``open_parquet`` too, spools the object), so a
    refresh must open each file once."""

    def __init__(self, root):
        super().__init__(root)
        self.opened: Counter = Counter()

    def open_parquet_raw(self, key: str):
        self.opened[key] += 1
        return super().open_parquet_raw(key)


def test_a_refresh_opens_each_previous_file_once(db, tmp_path):
    store, full = CountingStore(tmp_path / "refresh"), LocalStore(tmp_path / "full")
    first_export(db, D1, store)
    ids = keys(db, "true", limit=table_count(db) // 100, order=f"md5(i.{KEY}::text || 'opened once')")
    sql(db, f"UPDATE {TABLE} SET title = coalesce(title, '') || ' (once)' WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[])")
    store.opened.clear()
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    previous = {k: n for k, n in store.opened.items() if k.startswith(f"snapshots/{D1}/")}
    assert c.stats["shards_rewritten"] >= 1 and previous, (c.stats, store.opened)
    assert max(previous.values()) == 1, previous


def test_touch_only_rewrites_nothing_and_release_keeps_previous_updated_on(db, stores):
    """A change only in volatile columns is no change: no shard is rewritten, and the refreshed
    release keeps the rows as they were, with their OLD updated_on (a full export has the new one)."""
    store, full = stores
    first_export(db, D1, store)
    ids = keys(db, "true", limit=table_count(db) // 5, order=f"md5(i.{KEY}::text || 'touch')")
    sql(db, f"UPDATE {TABLE} SET updated_on = updated_on + interval '1 day' WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[])")
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    in_release = set(ids) & set(c.previous.column(KEY).to_pylist())
    s = c.stats
    assert s["candidates"] == len(ids)
    assert s["unchanged_candidates"] == len(in_release) > 0.15 * c.previous.num_rows
    assert_nothing_rewritten(c)
    assert s["files_written"] == 0
    assert set(ids) - in_release, "rows the filters leave out were touched too"
    assert c.manifest.layout["index"] == manifest(store, D1).layout["index"], \
        "no released row changed: the previous row index is kept (rows the filters leave out keep their index rows)"
    old, kept, new = (by_key(t, in_release).column("updated_on") for t in (c.previous, c.refreshed, c.full))
    assert kept.equals(old), "the refresh keeps the previous updated_on of rows touched only in volatile columns"
    assert not pc.any(pc.equal(kept, new)).as_py(), "the full export has the new updated_on"
    assert c.feed.num_rows == 0 and (c.manifest.changes["inserted"], c.manifest.changes["updated"], c.manifest.changes["deleted"]) == (0, 0, 0)


def test_provider_wide_popularity_change_rewrites_only_that_providers_shards(db, stores):
    store, full = stores
    m = first_export(db, D1, store)
    rows, _ = release(store, D1)
    shard_of_file = shard_files(m)
    shards_of: dict = {}
    for p, f in zip(rows.column(CLUSTER).to_pylist(), rows.column(FILE).to_pylist()):
        shards_of.setdefault(p, set()).add(shard_of_file[f])
    counts = Counter(rows.column(CLUSTER).to_pylist())
    # a provider held by one shard (the most rows among those), else by as few as possible
    provider = max((p for p in shards_of if p is not None), key=lambda p: (-len(shards_of[p]), counts[p]))
    assert len(shards_of[provider]) < len(m.layout["shards"])
    finite = "standardized_popularity IS NOT NULL AND standardized_popularity NOT IN ('NaN', 'Infinity', '-Infinity')"
    [n] = sql(db, f"UPDATE {TABLE} SET standardized_popularity = standardized_popularity + 1 WHERE provider = '{provider}' AND {finite}")
    assert n > 0
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    pop = rows.filter(pc.equal(rows.column(CLUSTER), provider)).column("standardized_popularity")
    changed_in_release = sum(1 for v in pop.to_pylist() if v is not None and v == v and abs(v) != float("inf"))
    s = c.stats
    assert s["updated"] == changed_in_release > 0 and s["moved"] == 0 and s["candidates"] == n
    assert c.touched == shards_of[provider], (c.touched, shards_of[provider])
    assert s["shards_rewritten"] == len(shards_of[provider]) < len(m.layout["shards"])


def test_a_rewritten_shard_keeps_its_row_groups_and_a_big_one_is_not_compacted(db, stores, monkeypatch):
    """Copy-on-write keeps each rewritten file's row groups: the same rows in each, in the same
    order, so a column whose values did not change is written as it was and Xet sends only the
    changed column chunks. Re-cut by size, a row group whose rows grew by a few bytes became a row
    group and a sliver, and every column chunk after it held other rows (S4 with 256 MiB shards:
    15.8 MB sent for a 2.5 MB column). A shard of many full row groups (the default 256 MiB makes
    some 40) is rewritten in place, not compacted: MAX_ROW_GROUPS (32) is 2 here, under the ~5 row
    groups of 1 MiB these 1 MiB shards hold."""
    from dataset_assets.export import refresh
    from dataset_assets.export.shards import MiB, ParquetOptions

    store, _ = stores
    options = ExportOptions(workers=WORKERS, parquet=ParquetOptions(row_group_bytes=1 * MiB))

    def groups(date: str, path: str) -> list[pa.Table]:
        pf = pq.ParquetFile(store.local_path(f"snapshots/{date}/{TABLE}/{path}"))
        return [pf.read_row_group(i) for i in range(pf.num_row_groups)]

    def chunks(date: str, path: str) -> dict[tuple[int, str], bytes]:
        """(row group, column) -> the column chunk's bytes."""
        file = store.local_path(f"snapshots/{date}/{TABLE}/{path}")
        md, data = pq.read_metadata(file), file.read_bytes()
        out = {}
        for i in range(md.num_row_groups):
            for j in range(md.num_columns):
                c = md.row_group(i).column(j)
                start = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
                out[i, c.path_in_schema] = data[start:start + c.total_compressed_size]
        return out

    [first] = export_snapshot(db, [TABLE], D1, store, options)
    before = {f.path: groups(D1, f.path) for f in first.manifest.files}
    assert min(len(g) for g in before.values()) > 2, {p: len(g) for p, g in before.items()}
    monkeypatch.setattr(refresh, "MAX_ROW_GROUPS", 2)
    provider = query(db, f"SELECT {CLUSTER} FROM {TABLE} GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")[0][0]
    finite = "standardized_popularity IS NOT NULL AND standardized_popularity NOT IN ('NaN', 'Infinity', '-Infinity')"
    [n] = sql(db, f"UPDATE {TABLE} SET standardized_popularity = standardized_popularity + 1, updated_on = now() "
                  f"WHERE {CLUSTER} = '{provider}' AND {finite}")
    assert n > 0
    [second] = export_snapshot(db, [TABLE], D2, store, options)
    m = second.manifest
    assert m.layout["refresh"]["mode"] == "xmin" and m.layout["refresh"]["updated"] > 0
    assert [s["id"] for s in m.layout["shards"]] == [s["id"] for s in first.manifest.layout["shards"]]
    rewritten = [f.path for f in m.files if f.reused_from is None]
    assert rewritten and all(p in before for p in rewritten), ("rewritten in place, under their names", rewritten)
    changed_columns = {"standardized_popularity", "updated_on"}
    same = kept = 0
    for path in rewritten:
        after = groups(D2, path)
        assert [g.num_rows for g in after] == [g.num_rows for g in before[path]], path
        old_chunks, new_chunks = chunks(D1, path), chunks(D2, path)
        for i, (old, new) in enumerate(zip(before[path], after)):
            assert new.column(KEY).equals(old.column(KEY)), f"{path}: row group {i} holds the same rows in the same order"
            for name in old.column_names:
                if name not in changed_columns:
                    assert new.column(name).equals(old.column(name)), (path, i, name)
                    same += 1
                    kept += old_chunks[i, name] == new_chunks[i, name]
    # Arrow's content-defined chunking can cut a page elsewhere where the first export handed a
    # row group over in pieces (a rewrite hands it over whole): a few chunks differ in a page or two
    assert kept >= 0.9 * same, f"{kept} of {same} unchanged column chunks written as they were"


def test_a_shards_many_updated_rows_are_staged_a_row_group_at_a_time(db, stores, monkeypatch):
    """A shard's updated rows past UPDATES_HELD_BYTES (0 here: all of them) are read from its spill
    a piece at a time into a file per row group they update; each row group is rewritten with its
    own, and the change feed lists them from those files. Shards of several row groups (1 MiB),
    a provider's popularity recomputed, titles elsewhere, new rows: the release equals a full
    export, the feed rebuilds it, and each rewritten file keeps its row groups."""
    from dataset_assets.export import refresh
    from dataset_assets.export.shards import MiB, ParquetOptions

    store, full = stores
    parquet = ParquetOptions(row_group_bytes=1 * MiB)
    m = first_export(db, D1, store, parquet=parquet)
    rgs = {f.path: pq.ParquetFile(store.local_path(f"snapshots/{D1}/{TABLE}/{f.path}")).num_row_groups for f in m.files}
    assert max(rgs.values()) > 2, rgs
    monkeypatch.setattr(refresh, "UPDATES_HELD_BYTES", 0)
    staged: list[Path] = []
    route = refresh._route

    def watched(*args):
        out = route(*args)
        staged.extend(v for v in out[0].values() if isinstance(v, Path))
        return out

    monkeypatch.setattr(refresh, "_route", watched)
    provider = query(db, f"SELECT {CLUSTER} FROM {TABLE} GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")[0][0]
    finite = "standardized_popularity IS NOT NULL AND standardized_popularity NOT IN ('NaN', 'Infinity', '-Infinity')"
    [n] = sql(db, f"UPDATE {TABLE} SET standardized_popularity = standardized_popularity + 1, updated_on = now() "
                  f"WHERE {CLUSTER} = '{provider}' AND {finite}")
    ids = keys(db, RELEASED, limit=30, order=f"md5(i.{KEY}::text || 'staged')")
    sql(db, f"UPDATE {TABLE} SET title = coalesce(title, '') || ' (staged)' WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[])")
    change_rows(db, TABLE, fraction=0.005, seed=53, mode="random", kinds=("insert",))
    c = check_refresh(db, store, full, D1, D2, mode="xmin", parquet=parquet)
    assert n > 0 and c.stats["updated"] > n // 2 and c.stats["inserted"] > 0, c.stats  # (rows the filters leave out are not)
    assert len({p.name.rsplit("-", 1)[1] for p in staged}) > 1, "updates staged for several row groups"
    assert not any(p.exists() for p in staged), "staged rows are not left behind"
    for f in c.manifest.files:
        if f.reused_from is None and f.path in rgs:  # a main file rewritten in place (new rows go to tails)
            assert pq.ParquetFile(store.local_path(f"snapshots/{D2}/{TABLE}/{f.path}")).num_row_groups == rgs[f.path], f.path


def test_a_compacted_shard_is_one_new_file_of_its_rows_and_the_feed_lists_them(db, stores, monkeypatch):
    """A shard compacted when it is rewritten (here every shard with a change, as if each had many
    small row groups) is streamed into one file under a new id: its rows as they were, changes
    applied, in row groups of about ``row_group_bytes``; the change feed lists every row of it,
    read back from that file as the feed is written. The release equals a full export and the
    feed rebuilds it (check_refresh); the next refresh builds on it."""
    from dataset_assets.export import refresh

    store, full = stores
    m = first_export(db, D1, store)
    ids = keys(db, RELEASED, limit=table_count(db) // 50, order=f"md5(i.{KEY}::text || 'compacted')")
    sql(db, f"UPDATE {TABLE} SET title = coalesce(title, '') || ' (compacted)' WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[])")
    fragmented = refresh._fragmented
    monkeypatch.setattr(refresh, "_fragmented", lambda md: True)
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    before = {s["id"] for s in m.layout["shards"]}
    after = c.manifest.layout["shards"]
    new = [s for s in after if s["id"] not in before]
    assert new and len(after) == len(m.layout["shards"]) and c.stats["shards_rewritten"] == len(new), (c.stats, after)
    assert all(not s.get("tail") for s in new)
    feed_files = set(c.feed.column(refresh.FILE_COLUMN).to_pylist())
    old_by_lower = {s["lower"]: s for s in m.layout["shards"]}

    def file_keys(date: str, path: str) -> list:
        return pq.read_table(store.local_path(f"snapshots/{date}/{TABLE}/{path}"), columns=[KEY]).column(KEY).to_pylist()

    for s in new:
        rows = pq.read_metadata(store.local_path(f"snapshots/{D2}/{TABLE}/{s['path']}")).num_rows
        assert s["path"] in feed_files and c.feed.filter(pc.equal(c.feed.column(refresh.FILE_COLUMN), s["path"])).num_rows == rows
        # only titles changed, no shard had a tail: the compacted file holds the shard's rows in their order
        assert file_keys(D2, s["path"]) == file_keys(D1, old_by_lower[s["lower"]]["path"]), s
    monkeypatch.setattr(refresh, "_fragmented", fragmented)
    sql(db, f"UPDATE {TABLE} SET title = title || '.' WHERE {KEY} = ANY('{{{','.join(ids[:10])}}}'::uuid[])")
    check_refresh(db, store, full, D2, D3, mode="xmin")


@pytest.mark.parametrize("how", ["tombstone_and_delete", "removed_from_source", "tombstone_row_stays"])
def test_removals(db, stores, how):
    store, full = stores
    first_export(db, D1, store)
    ids = released_ids(db, 40, how)
    if how == "removed_from_source":
        sql(db, f"UPDATE {TABLE} SET removed_from_source = true WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[])")
    else:
        tombstone(db, ids, delete=how == "tombstone_and_delete")
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    s = c.stats
    assert c.diff.deleted == set(ids) and s["deleted"] == len(ids)
    assert (s["inserted"], s["updated"], s["moved"]) == (0, 0, 0)
    assert s["candidates"] == (len(ids) if how == "removed_from_source" else 0)
    # rows gone from the table are found through the tombstones, without listing the table's keys
    assert s["deletions_found_by"] == ("tombstones" if how == "tombstone_and_delete" else None), s
    deletes = c.feed.filter(pc.equal(c.feed.column("change"), "delete"))
    assert sorted(deletes.column(KEY).to_pylist()) == sorted(ids)
    assert all(deletes.column(col).null_count == len(ids) for col in c.refreshed.column_names if col not in (KEY, FILE)), \
        "a delete carries only the key"


@pytest.mark.parametrize("how", ["tombstones", "tombstones_and_a_plain_delete", "a_new_row_tombstoned"])
def test_deleted_rows_are_found_through_tombstones_or_else_by_the_keys(db, stores, how):
    """Rows gone from the table since the previous release are found through the tombstones added
    since (upstream moves a row there, then deletes it) when those account for every gone row;
    otherwise (here a row deleted without a tombstone) by listing the keys of every unchanged row.
    A row inserted after the previous release, then tombstoned and deleted, was never released:
    it is no gone row of the release, and does not hide one."""
    store, full = stores
    first_export(db, D1, store)
    ids = released_ids(db, 12, f"gone-{how}")
    tombstone(db, ids[:8], delete=True)
    gone = set(ids[:8])
    if how == "tombstones_and_a_plain_delete":
        sql(db, f"DELETE FROM {TABLE} WHERE {KEY} = ANY('{{{','.join(ids[8:10])}}}'::uuid[])")
        gone |= set(ids[8:10])
    elif how == "a_new_row_tombstoned":
        before = set(keys(db, "true"))
        change_rows(db, TABLE, fraction=3 / table_count(db), seed=31, mode="random", kinds=("insert",))
        new = sorted(set(keys(db, "true")) - before)
        assert new
        tombstone(db, new, delete=True)
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    s = c.stats
    assert c.diff.deleted == gone and s["deleted"] == len(gone), (c.diff.deleted ^ gone, s)
    assert s["deletions_found_by"] == ("keys" if how == "tombstones_and_a_plain_delete" else "tombstones"), s


@pytest.mark.parametrize("track_counts", ["on", "off"])
def test_the_unchanged_rows_are_counted_by_the_candidates_scans_or_else_by_a_count(db, stores, track_counts):
    """Whether rows were deleted rests on counting the unchanged rows. The scans that read the
    candidates count every row of the snapshot they visit (Postgres's per-transaction statistics),
    so no query of its own counts them; with that counter off (``track_counts``) a ``count(*)``
    does. Either way the plain deletes here are found and the release is the full export's."""
    store, full = stores
    first_export(db, D1, store)
    ids = released_ids(db, 6, f"count-{track_counts}")
    sql(db, f"DELETE FROM {TABLE} WHERE {KEY} = ANY('{{{','.join(ids[:3])}}}'::uuid[])",
        f"UPDATE {TABLE} SET title = 'counted ' || {KEY}::text WHERE {KEY} = ANY('{{{','.join(ids[3:])}}}'::uuid[])")
    name = query(db, "SELECT current_database()")[0][0]
    autocommit(db, f'ALTER DATABASE "{name}" SET track_counts = {track_counts}')
    try:
        c = check_refresh(db, store, full, D1, D2, mode="xmin")
    finally:
        autocommit(db, f'ALTER DATABASE "{name}" RESET track_counts')
    s = c.stats
    assert s["rows_counted_by"] == ("scans" if track_counts == "on" else "count"), s
    assert c.diff.deleted == set(ids[:3]) and s["deleted"] == 3 and s["updated"] == 3, s
    assert s["deletions_found_by"] == "keys", s


@pytest.mark.parametrize("damage", ["none", "altered", "missing"])
def test_a_previous_row_index_that_fails_its_check_means_a_first_export(db, stores, damage):
    """The row index is what a refresh builds on: one whose bytes are not those its manifest
    records (or that is gone) is never used; the export reads every row instead, and its
    release is the full export's. (Intact, the same previous release is built on.)"""
    store, full = stores
    first_export(db, D1, store)
    change_rows(db, TABLE, fraction=0.01, seed=41, mode="random", kinds=("insert", "update"))
    path = store.local_path(f"{prefix(D1)}/_index.parquet")
    if damage == "altered":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.unlink()  # (linked into later snapshots: a new file, not the shared inode)
        path.write_bytes(bytes(data))
    elif damage == "missing":
        path.unlink()
    m, _ = export_pair(db, D2, store, full)
    assert m.layout["refresh"]["mode"] == ("xmin" if damage == "none" else "first export"), m.layout["refresh"]
    got, want = release(store, D2)[0], release(full, D2)[0]
    assert not differences(got, want, what=("export", "full export"))


def test_tombstoned_then_deleted_from_table(db, stores):
    """The upstream way to delete: a tombstone first (the row stays in the table, leaves the
    release), a later run deletes the row from the table. The second refresh has nothing to
    change in the release and must not fail."""
    store, full = stores
    first_export(db, D1, store)
    ids = released_ids(db, 10, "two-phase")
    tombstone(db, ids)
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    assert c.diff.deleted == set(ids)
    sql(db, f"DELETE FROM {TABLE} WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[])")
    c = check_refresh(db, store, full, D2, D3, mode="xmin", tolerate_tombstone_window=True)
    s = c.stats
    assert (s["inserted"], s["updated"], s["moved"], s["deleted"], s["shards_rewritten"]) == (0, 0, 0, 0, 0), s


@pytest.mark.parametrize("left_out_by", ["removed_from_source", "tombstone"])
def test_deleting_a_row_the_release_left_out(db, stores, left_out_by):
    """A row the filters leave out (removed from source, or tombstoned in the seed) is deleted from
    the table: the release does not change, and the refresh must neither fail nor rewrite a shard."""
    store, full = stores
    where = ("i.removed_from_source" if left_out_by == "removed_from_source" else
             f"EXISTS (SELECT 1 FROM deleted_{TABLE} d WHERE d.{KEY} = i.{KEY})")
    ids = keys(db, where, limit=2)
    assert len(ids) == 2
    first_export(db, D1, store)
    sql(db, f"DELETE FROM {TABLE} WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[])")
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    assert c.stats["candidates"] == 0
    assert_nothing_rewritten(c)


def test_tombstones_added_while_a_transaction_is_open_keep_xmin(db, stores):
    """Tombstones committed while an older transaction is still open (on any database of the
    server) are visible to the base export but newer than its snapshot's xmin. Nothing was
    removed, so the next refresh must stay in mode xmin and rewrite nothing."""
    store, full = stores
    ids = released_ids(db, 3, "window")
    with psycopg.connect(db) as older:
        older.execute("SELECT pg_current_xact_id()")       # an open transaction with an xid
        tombstone(db, ids)                                  # a newer one, committed
        m = first_export(db, D1, store)
        older.rollback()
    assert in_flight(m), m.source_snapshot
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    assert c.stats["candidates"] == 0
    assert_nothing_rewritten(c)


def test_vacuum_full_stays_xmin_and_rewrites_nothing(db, stores):
    store, full = stores
    sql(db, f"DELETE FROM {TABLE} WHERE {KEY} = ANY('{{{','.join(keys(db, 'true', limit=300, order='md5(i.url)'))}}}'::uuid[])")
    first_export(db, D1, store)
    ctids = query(db, f"SELECT ctid::text FROM {TABLE} ORDER BY {KEY} LIMIT 50")
    autocommit(db, f"VACUUM FULL {TABLE}", f"VACUUM FULL deleted_{TABLE}")
    assert query(db, f"SELECT ctid::text FROM {TABLE} ORDER BY {KEY} LIMIT 50") != ctids, "VACUUM FULL moved rows"
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    assert c.stats["candidates"] == 0
    assert_nothing_rewritten(c)


def test_rebuilt_and_swapped_by_rename_compares_content_and_rewrites_nothing(db, stores):
    store, full = stores
    first_export(db, D1, store)
    oid = query(db, f"SELECT '{TABLE}'::regclass::oid")
    rebuild_and_swap(db)
    assert query(db, f"SELECT '{TABLE}'::regclass::oid") != oid
    c = check_refresh(db, store, full, D1, D2, mode="content")
    assert c.stats["why_content"]
    assert c.stats["candidates"] == table_count(db)
    assert c.stats["unchanged_candidates"] == c.refreshed.num_rows == c.previous.num_rows
    assert_nothing_rewritten(c)
    assert c.manifest.layout["index"] == manifest(store, D1).layout["index"], \
        "every row compared, none changed (those the filters leave out included): the previous row index is kept"


def test_tombstone_removed_row_reappears(db, stores):
    """Un-tombstoning: a tombstone row deleted while its row stays in the table brings the row
    back; xmin cannot see a deleted tombstone, so the refresh compares content."""
    store, full = stores
    ids = keys(db, f"NOT i.removed_from_source AND EXISTS (SELECT 1 FROM deleted_{TABLE} d WHERE d.{KEY} = i.{KEY})", limit=3)
    assert ids, "the seed leaves some tombstoned rows in the table"
    first_export(db, D1, store)
    sql(db, f"DELETE FROM deleted_{TABLE} WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[])")
    c = check_refresh(db, store, full, D1, D2, mode="content")
    s = c.stats
    assert c.diff.inserted == set(ids) and s["inserted"] == len(ids)
    assert (s["updated"], s["moved"], s["deleted"]) == (0, 0, 0)
    assert 0 < s["shards_rewritten"] <= len(ids)


def test_key_changed(db, stores):
    store, full = stores
    first_export(db, D1, store)
    ids = released_ids(db, 5, "rekey")
    new = [r[0] for r in query(db, f"UPDATE {TABLE} SET {KEY} = md5({KEY}::text || ':rekeyed')::uuid "
                                   f"WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[]) RETURNING {KEY}::text")]
    assert len(new) == len(ids)
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    s = c.stats
    assert c.diff.deleted == set(ids) and c.diff.inserted == set(new)
    assert (s["inserted"], s["deleted"], s["updated"], s["moved"]) == (len(ids), len(ids), 0, 0)


def test_provider_changed_moves_row_to_another_shard(db, stores):
    store, full = stores
    m = first_export(db, D1, store)
    ranges = shard_ranges(store, D1, m)
    first, last = ranges[0], ranges[-1]
    target = last[2][1]              # the largest provider, in the last shard only
    assert target > ranges[-2][2][1], "the largest provider lies in the last shard only"
    rows, _ = release(store, D1)
    first_path = m.layout["shards"][0]["path"]
    in_first = rows.filter(pc.and_(pc.equal(rows.column(FILE), first_path), pc.not_equal(rows.column(CLUSTER), target)))
    ids = in_first.column(KEY).to_pylist()[:: max(1, in_first.num_rows // 4)][:4]
    sql(db, f"UPDATE {TABLE} SET provider = '{target}' WHERE {KEY} = ANY('{{{','.join(ids)}}}'::uuid[])")
    c = check_refresh(db, store, full, D1, D2, mode="xmin")
    s = c.stats
    assert c.moved == set(ids) and s["moved"] == len(ids) and s["updated"] == 0
    assert (s["inserted"], s["deleted"]) == (0, 0)
    assert c.touched == {first[0], last[0]} and s["shards_rewritten"] == 2
    assert {c.shard_of[k] for k in ids} == {last[0]}
    assert set(by_key(c.refreshed, ids).column(CLUSTER).to_pylist()) == {target}
    ups = c.feed.filter(pc.equal(c.feed.column("change"), "update"))
    assert sorted(ups.column(KEY).to_pylist()) == sorted(ids), "a moved row is an update in the feed"


def test_tails_past_a_quarter_fold_and_shards_past_twice_their_size_split(fresh_db, tmp_path):
    """Growth: rows appended to a shard's range go to its tail, which folds into the shard once it
    holds more than a quarter of the shard's rows; a shard past twice ``shard_bytes`` is split into
    shards of about ``shard_bytes`` the next time a refresh touches it without folding. The row index those refreshes write
    (tails and shards reassigned) is what the next refresh builds on: after the split, updates and
    deletes in every shard, found through it."""
    uri = fresh_db("refresh_growth")
    seed(uri, tables=[TABLE], rows={TABLE: SCENARIO_ROWS}, seed=23)
    store, full = LocalStore(tmp_path / "refresh"), LocalStore(tmp_path / "full")
    dates = [D1, D2, D3, "2026-03-04", "2026-03-05"]
    first = first_export(uri, dates[0], store).layout["shards"]

    def grown(date: int, inserts: list[float]) -> list[dict]:
        for salt, fraction in enumerate(inserts):
            change_rows(uri, TABLE, fraction=fraction, seed=date * 10 + salt, mode="random", kinds=("insert",))
        c = check_refresh(uri, store, full, dates[date - 1], dates[date], mode="xmin")
        shards = c.manifest.layout["shards"]
        assert not any(s.get("tail") for s in shards), "every tail folded into its shard"
        assert [s["id"] for s in shards] == [s["id"] for s in first], "folding keeps each shard's id"
        assert not any(f.reused_from for f in c.manifest.files), "every shard's main file was rewritten with its tail"
        return shards

    grown(1, [0.4])         # 40 % more rows, in every shard's range
    grown(2, [1.0, 1.0])    # four times as many: every shard past twice shard_bytes (as written, ~0.7 of it)

    def changed(date: int) -> list[dict]:
        change_rows(uri, TABLE, fraction=0.05, seed=date, mode="random", kinds=("update", "delete"))
        c = check_refresh(uri, store, full, dates[date - 1], dates[date], mode="xmin")
        assert c.stats["updated"] > 0 and c.stats["deleted"] > 0
        return c.manifest.layout["shards"]

    split = changed(3)
    sizes = [store.local_path(f"snapshots/{dates[3]}/{TABLE}/{s['path']}").stat().st_size for s in split]
    assert len(split) > 2 * len(first) and max(sizes) < 1.5 * SHARD_BYTES, \
        f"each of the {len(first)} shards split into shards of about shard_bytes: {sizes}"
    assert changed(4) == split, "the split shards are refreshed in place, not split again"


@pytest.mark.parametrize("alone", [False, True], ids=["beside neighbours", "the only shard"])
def test_a_shard_whose_main_rows_are_all_deleted_keeps_its_tails_rows(fresh_db, tmp_path, alone):
    """A shard whose main file loses every row while its tail holds rows: beside neighbours it has
    shrunk under a quarter of ``shard_bytes`` and merges into the shard before it (its tail's rows
    into that shard's tail); the only shard of a table is compacted: one file under a new id holds
    the tail's rows. The refresh after either builds on the index it wrote."""
    uri = fresh_db("refresh_emptied")
    seed(uri, tables=[TABLE], rows={TABLE: 1_500 if alone else SCENARIO_ROWS}, seed=25)
    store, full = LocalStore(tmp_path / "refresh"), LocalStore(tmp_path / "full")
    assert (len(first_export(uri, D1, store).layout["shards"]) == 1) == alone
    change_rows(uri, TABLE, fraction=0.05, seed=1, mode="random", kinds=("insert",))  # into every shard's tail
    shards = check_refresh(uri, store, full, D1, D2, mode="xmin").manifest.layout["shards"]
    shard = shards[0 if alone else 1]
    assert shard.get("tail"), shard
    main = pq.read_table(store.local_path(f"snapshots/{D2}/{TABLE}/{shard['path']}"), columns=[KEY]).column(KEY).to_pylist()
    tail = pq.read_table(store.local_path(f"snapshots/{D2}/{TABLE}/{shard['tail']}"), columns=[KEY]).column(KEY).to_pylist()
    sql(uri, f"DELETE FROM {TABLE} WHERE {KEY} = ANY('{{{','.join(main)}}}'::uuid[])")
    c3 = check_refresh(uri, store, full, D2, D3, mode="xmin")
    after = c3.manifest.layout["shards"]
    file_of = dict(zip(c3.refreshed.column(KEY).to_pylist(), c3.refreshed.column(FILE).to_pylist()))
    if alone:
        [new] = after
        assert new["id"] != shard["id"] and not new.get("tail"), "compacted: one file under a new id"
        assert sorted(file_of) == sorted(tail), "it holds the tail's rows"
    else:
        assert [s["id"] for s in after] == [s["id"] for s in shards if s is not shard], "merged: the others as they were"
        taker = after[0]
        assert {file_of[k] for k in tail} == {taker["tail"]}, "the tail's rows are in the tail of the shard before"
    change_rows(uri, TABLE, fraction=0.05, seed=2, mode="random", kinds=("update", "delete", "insert"))
    check_refresh(uri, store, full, D3, "2026-03-04", mode="xmin")


def test_a_shard_that_shrinks_merges_into_its_neighbours_tail(fresh_db, tmp_path):
    """Shrinking: a shard that falls under a quarter of ``shard_bytes`` merges into the shard
    before it (the first shard: into the one after it), which takes its range and its rows into
    its tail; that shard's main file and every other shard stay as they were (until its tail
    passes a quarter of its rows and folds into its main file, as any tail). The release equals
    a full export, the change feed rebuilds it byte for byte (root hash), and the refreshes after
    build on the row index the merge wrote."""
    from dataset_assets.export.feed import apply_changes

    uri = fresh_db("refresh_merge")
    seed(uri, tables=[TABLE], rows={TABLE: SCENARIO_ROWS}, seed=26)
    store, full = LocalStore(tmp_path / "refresh"), LocalStore(tmp_path / "full")
    dates = [D1, D2, D3, "2026-03-04", "2026-03-05"]
    shards = first_export(uri, D1, store).layout["shards"]
    assert len(shards) >= 4, shards

    def shard_keys(date: str, s: dict) -> list[str]:
        return [k for p in (s["path"], s.get("tail")) if p
                for k in pq.read_table(store.local_path(f"snapshots/{date}/{TABLE}/{p}"), columns=[KEY]).column(KEY).to_pylist()]

    def shrink(date: int, s: dict) -> tuple[list[str], object]:
        held = shard_keys(dates[date - 1], s)
        sql(uri, f"DELETE FROM {TABLE} WHERE {KEY} = ANY('{{{','.join(held[: len(held) * 9 // 10])}}}'::uuid[])")
        c = check_refresh(uri, store, full, dates[date - 1], dates[date], mode="xmin")
        rebuilt = apply_changes(store.local_path(f"snapshots/{dates[date - 1]}/{TABLE}"),
                                store.local_path(f"snapshots/{dates[date]}/{TABLE}/_manifest.json"),
                                store.local_path(f"snapshots/{dates[date]}/{TABLE}"), tmp_path / f"rebuilt-{date}")
        assert rebuilt.ok and rebuilt.root_hash == c.manifest.root_hash, rebuilt.problems
        return held[len(held) * 9 // 10:], c

    # a middle shard: into the one before it
    left, c = shrink(1, shards[2])
    after = c.manifest.layout["shards"]
    assert [s["id"] for s in after] == [s["id"] for i, s in enumerate(shards) if i != 2], "its range joins the shard before"
    taker = after[1]
    assert taker["lower"] == shards[1]["lower"] and taker["path"] == shards[1]["path"]
    assert sorted(left) == sorted(pq.read_table(store.local_path(f"snapshots/{D2}/{TABLE}/{taker['tail']}"),
                                                columns=[KEY]).column(KEY).to_pylist()), "its rows are the taker's tail"
    reused = {f.path for f in c.manifest.files if f.reused_from}
    assert {s["path"] for s in after} <= reused, "every main file is the previous one, the taker's too"
    assert c.stats["shards_rewritten"] == 2 and c.stats["shards_merged"] == 1
    assert c.stats["deleted"] == len(shard_keys(D1, shards[2])) - len(left)

    # the first shard: into the one after it, which starts the table now
    left, c = shrink(2, after[0])
    again = c.manifest.layout["shards"]
    assert [s["id"] for s in again] == [s["id"] for s in after[1:]] and again[0]["lower"] is None
    assert set(left) <= set(shard_keys(D3, again[0])) and again[0]["path"] == after[1]["path"]

    # a third into that shard: its tail passes a quarter of its rows and folds into its main file
    left, c = shrink(3, again[1])
    taker = c.manifest.layout["shards"][0]
    assert taker["id"] == again[0]["id"] and not taker.get("tail"), "the tail folded"
    assert taker["path"] not in {f.path for f in c.manifest.files if f.reused_from}, "the main file rewritten"
    assert set(left) <= set(shard_keys(dates[3], taker))

    # the next refresh builds on the index the merges wrote: changes everywhere, found through it
    change_rows(uri, TABLE, fraction=0.05, seed=3, mode="random", kinds=("update", "delete", "insert"))
    check_refresh(uri, store, full, dates[3], dates[4], mode="xmin")


def _s3_release(store, date: str) -> pa.Table:
    """The released rows of ``date`` in an object store, sorted by key."""
    m = load_manifest(store, f"snapshots/{date}/{TABLE}", TABLE, date)
    parts = []
    for f in m.files:
        with store.open_parquet(f"snapshots/{date}/{TABLE}/{f.path}") as pf:
            parts.append(pf.read())
    return pa.concat_tables(parts).sort_by(KEY)


def test_a_refresh_on_an_s3_store_builds_on_the_release_there(fresh_db, s3_store, tmp_path):
    """The store production uses: the previous row index and shards come from S3, unchanged
    shards are server-side copies, and the release equals a full export."""
    uri = fresh_db("refresh_s3")
    seed(uri, tables=[TABLE], rows={TABLE: SCENARIO_ROWS}, seed=24)
    full = LocalStore(tmp_path / "full")
    m1 = first_export(uri, D1, s3_store)
    # rows of the first shard's range only (the smallest sort keys): updated, and some deleted
    first = keys(uri, RELEASED, limit=60, order=f"i.{CLUSTER} NULLS FIRST, i.{KEY}")
    arr = lambda xs: f"'{{{','.join(xs)}}}'::uuid[]"  # noqa: E731
    sql(uri, f"UPDATE {TABLE} SET title = 'on s3' WHERE {KEY} = ANY({arr(first[:50])})",
        f"DELETE FROM {TABLE} WHERE {KEY} = ANY({arr(first[50:])})")
    m2, _ = export_pair(uri, D2, s3_store, full)
    stats = m2.layout["refresh"]
    assert stats["mode"] == "xmin" and (stats["updated"], stats["deleted"]) == (50, 10), stats
    assert stats["shards_rewritten"] == 1 and stats["files_reused"] == len(m1.layout["shards"]) - 1, stats
    refreshed, expected = _s3_release(s3_store, D2), release(full, D2)[0]
    # every column, the volatile ones too: no row changed only in them
    assert not differences(refreshed, expected.drop_columns([FILE]), what=("refresh", "full export"))
    assert verify_table(s3_store, D2, TABLE).ok


# ---------------------------------------------------------------------------------------------
# 3. The change feed
# ---------------------------------------------------------------------------------------------


def test_change_feed_applied_to_previous_release_gives_the_new_one(db, stores):
    store, full = stores
    first_export(db, D1, store)
    # a bit of everything: updates, inserts, deletes with tombstones, a tombstone, a removal,
    # a moved row, a changed key, a volatile-only touch
    change_rows(db, TABLE, fraction=0.02, seed=9, mode="clustered", kinds=("update", "insert"))
    # released rows change_rows left alone (its updates mark titles with ✎)
    ids = keys(db, f"{RELEASED} AND coalesce(i.title, '') NOT LIKE '%✎%'", limit=48, order=f"md5(i.{KEY}::text || 'feed')")
    arr = lambda xs: f"'{{{','.join(xs)}}}'::uuid[]"  # noqa: E731
    tombstone(db, ids[8:48], delete=True)   # deletes, of released rows only
    tombstone(db, ids[:2])
    sql(db, f"UPDATE {TABLE} SET removed_from_source = true WHERE {KEY} = ANY({arr(ids[2:4])})",
        f"UPDATE {TABLE} SET provider = 'wikimedia', title = 'moved' WHERE {KEY} = ANY({arr(ids[4:5])})",
        f"UPDATE {TABLE} SET {KEY} = md5({KEY}::text || ':feed')::uuid WHERE {KEY} = ANY({arr(ids[5:6])})",
        f"UPDATE {TABLE} SET last_synced_with_source = now() WHERE {KEY} = ANY({arr(ids[6:8])})")
    c = check_refresh(db, store, full, D1, D2, mode="xmin")   # checks feed + previous == new, and the counts
    ch, m = c.feed, c.manifest
    kinds = ch.column("change").to_pylist()
    assert {"insert", "update", "delete"} <= set(kinds)
    assert sum(m.changes[k] for k in ("inserted", "updated", "deleted")) == ch.num_rows
    [entry] = m.changes["files"]
    path = store.local_path(f"snapshots/{D2}/{TABLE}/{entry['path']}")
    assert sha256(path) == entry["sha256"] and entry["rows"] == ch.num_rows
    prev_keys = set(c.previous.column(KEY).to_pylist())
    for kind, want_in_previous in (("insert", False), ("update", True), ("delete", True)):
        ks = ch.filter(pc.equal(ch.column("change"), kind)).column(KEY).to_pylist()
        assert all((k in prev_keys) == want_in_previous for k in ks), kind
    # the feed's inserted and updated rows carry their new values (those of the new release)
    ups = ch.filter(pc.invert(pc.equal(ch.column("change"), "delete")))
    cols = [col for col in c.refreshed.column_names if col != FILE]
    assert not differences(ups.select(cols).sort_by(KEY), by_key(c.refreshed, ups.column(KEY).to_pylist()).select(cols))
    assert ids[6] not in set(ch.column(KEY).to_pylist()), "a volatile-only touch is not in the feed"
    assert verify_table(store, D2, TABLE).ok

    # the next release chains on this one
    sql(db, f"UPDATE {TABLE} SET title = 'again' WHERE {KEY} = ANY({arr(released_ids(db, 30, 'feed2'))})")
    c3 = check_refresh(db, store, full, D2, D3, mode="xmin", tolerate_tombstone_window=True)
    assert c3.manifest.changes["base_root_hash"] == m.root_hash and c3.manifest.changes["updated"] == 30


# ---------------------------------------------------------------------------------------------
# 4. Property: random short sequences of changes
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_db(fresh_db) -> str:
    return fresh_db("refresh_prop")


def reset_small(uri: str) -> None:
    seed(uri, tables=[TABLE], rows={TABLE: PROPERTY_ROWS}, seed=31, replace=True)
    # a sparse heap: the engine sizes shards by heap pages, so 1,500 rows still make two shards
    autocommit(uri, f"ALTER TABLE {TABLE} SET (fillfactor = 10)", f"VACUUM FULL {TABLE}", f"ANALYZE {TABLE}")


def any_ids(uri: str, k: int, salt: int) -> list[str]:
    """``k`` rows of the table (released or not), picked by ``salt``."""
    return keys(uri, "true", limit=k, order=f"md5(i.{KEY}::text || '{salt}')")


def apply_op(uri: str, op: tuple) -> None:
    kind, k, salt = op
    arr = lambda xs: f"'{{{','.join(xs)}}}'::uuid[]"  # noqa: E731
    if kind == "insert":
        change_rows(uri, TABLE, fraction=k / table_count(uri), seed=salt, mode="random", kinds=("insert",))
    elif kind == "update_title":
        sql(uri, f"UPDATE {TABLE} SET title = coalesce(title, '') || ' #{salt}', updated_on = now() "
                 f"WHERE {KEY} = ANY({arr(any_ids(uri, k, salt))})")
    elif kind == "touch":
        sql(uri, f"UPDATE {TABLE} SET updated_on = updated_on + interval '1 day', last_synced_with_source = now() "
                 f"WHERE {KEY} = ANY({arr(any_ids(uri, k, salt))})")
    elif kind == "delete":
        sql(uri, f"DELETE FROM {TABLE} WHERE {KEY} = ANY({arr(any_ids(uri, k, salt))})")
    elif kind == "tombstone":
        tombstone(uri, any_ids(uri, k, salt))
    elif kind == "remove":
        sql(uri, f"UPDATE {TABLE} SET removed_from_source = true WHERE {KEY} = ANY({arr(any_ids(uri, k, salt))})")
    elif kind == "rekey":
        sql(uri, f"UPDATE {TABLE} SET {KEY} = md5({KEY}::text || ':{salt}')::uuid WHERE {KEY} = ANY({arr(any_ids(uri, k, salt))})")
    elif kind == "vacuum_full":
        autocommit(uri, f"VACUUM FULL {TABLE}")
    elif kind == "rebuild":
        rebuild_and_swap(uri)
    else:
        raise AssertionError(kind)


OPS = st.tuples(
    st.sampled_from(["insert", "update_title", "touch", "delete", "tombstone", "remove", "rekey", "vacuum_full", "rebuild"]),
    st.integers(1, 40), st.integers(0, 10_000),
)


@settings(max_examples=6, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: each example exports 2-4 times
@given(steps=st.lists(OPS, min_size=2, max_size=4))
def test_random_changes_refresh_equals_full_export_and_feed_chains(small_db, tmp_path_factory, steps):
    """Random sequences of changes: each refresh equals a full export of the same Postgres
    snapshot, and its change feed applied to the previous release gives it (``check_refresh``).
    This table's two shards are far under a quarter of ``shard_bytes``, so a refresh in which one
    loses rows merges it into the other: merges are in the sequences too (4 of 16 refreshes of
    one run, counted by hand on 2026-12-03)."""
    reset_small(small_db)
    root = tmp_path_factory.mktemp("prop")
    store, full = LocalStore(root / "refresh"), LocalStore(root / "full")
    dates = [f"2026-04-{d:02d}" for d in range(1, len(steps) + 2)]
    first_export(small_db, dates[0], store)
    for i, op in enumerate(steps):
        apply_op(small_db, op)
        mode = "content" if op[0] == "rebuild" else "xmin"
        check_refresh(small_db, store, full, dates[i], dates[i + 1], mode=mode, tolerate_tombstone_window=True)
