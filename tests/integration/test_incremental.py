"""Incremental snapshots: unchanged chunks are reused byte for byte, and the
result always equals a full export of the same database state."""

from __future__ import annotations

import datetime as dt
import math

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataset_assets import settings as da_settings
from dataset_assets import tables as config
from dataset_assets.export.run import ExportOptions, export_snapshot
from dataset_assets.local.seed import change_rows, seed
from dataset_assets.storage.stores import LocalStore


@pytest.fixture
def small_chunks(tmp_path, monkeypatch):
    """Table configuration with small chunks, so a few thousand rows make many chunks."""
    raw = yaml.safe_load(da_settings.tables_file().read_text())
    for spec in raw["tables"].values():
        spec["chunk_rows"] = 100
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(path))
    config._load.cache_clear()
    yield
    config._load.cache_clear()


def rows(store, prefix) -> list[dict]:
    folder = store.local_path(prefix)
    t = pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob("*.parquet"))])
    out = t.sort_by("identifier").to_pylist()
    for r in out:
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                r[k] = "NaN"
    return out


def test_changed_chunks_only_and_equal_to_full(fresh_db, tmp_path, small_chunks):
    uri = fresh_db("inc")
    seed(uri, tables=["audio"], rows=3000, seed=5)
    store = LocalStore(tmp_path / "inc")
    [base] = export_snapshot(uri, ["audio"], "2026-11-01", store, ExportOptions(workers=2))
    chunks = len(base.manifest.chunking["fingerprints"])
    assert chunks >= 20 and base.manifest.chunking["base_snapshot"] is None

    # nothing changed: nothing is read, every file is reused as it is, even after the rows were
    # frozen and other transactions moved the xid counter (the fingerprint's xmin is recovered
    # from age(xmin) against each connection's own reference xid)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("VACUUM (FREEZE) audio")
        for _ in range(5):
            conn.execute("SELECT txid_current()")
    [same] = export_snapshot(uri, ["audio"], "2026-11-02", store, ExportOptions(workers=2))
    assert same.manifest.timings["rows_exported"] == 0
    assert same.manifest.chunking["changed_chunks"] == 0
    assert [f.sha256 for f in same.manifest.files] == [f.sha256 for f in base.manifest.files]

    changed = change_rows(uri, "audio", fraction=0.01, seed=3, mode="clustered")
    assert sum(changed.values()) > 0
    [inc] = export_snapshot(uri, ["audio"], "2026-11-03", store, ExportOptions(workers=2))
    ch = inc.manifest.chunking
    assert 0 < ch["changed_chunks"] < chunks / 2
    assert inc.manifest.timings["rows_exported"] < inc.manifest.row_count / 2
    reused = [f for f in inc.manifest.files if f.reused_from]
    assert reused and all(f.reused_from == "2026-11-01" for f in reused)
    for f in reused:  # byte for byte: the same file (a hard link locally)
        new = store.local_path(f"{inc.prefix}/{f.path}")
        old = store.local_path(f"snapshots/2026-11-01/audio/{f.path}")
        assert new.read_bytes() == old.read_bytes() and new.stat().st_ino == old.stat().st_ino

    full_store = LocalStore(tmp_path / "full")
    [full] = export_snapshot(uri, ["audio"], "2026-11-03", full_store, ExportOptions(workers=2, incremental=False))
    assert full.manifest.row_count == inc.manifest.row_count
    assert rows(store, inc.prefix) == rows(full_store, full.prefix)
    from dataset_assets.storage.verify import verify_snapshot

    assert all(r.ok for r in verify_snapshot(store, "2026-11-03"))


OPS = st.lists(
    st.tuples(st.sampled_from(["update", "insert", "delete", "tombstone", "remove", "restore"]), st.integers(0, 10_000), st.integers(1, 25)),
    min_size=1, max_size=5,
)


def apply(uri: str, ops) -> None:
    with psycopg.connect(uri, autocommit=True) as c:
        ids = [r[0] for r in c.execute("SELECT identifier FROM audio ORDER BY identifier").fetchall()]
        for kind, pos, n in ops:
            if not ids:
                break
            start = pos % len(ids)
            sel = ids[start:start + n]
            if kind == "update":
                c.execute("UPDATE audio SET title = coalesce(title, '') || '+', updated_on = now() WHERE identifier = ANY(%s)", (sel,))
            elif kind == "delete":
                c.execute("DELETE FROM audio WHERE identifier = ANY(%s)", (sel,))
            elif kind == "tombstone":
                c.execute("INSERT INTO deleted_audio SELECT a.*, now(), 'test' FROM audio a WHERE identifier = ANY(%s) ON CONFLICT DO NOTHING", (sel,))
            elif kind == "remove":
                c.execute("UPDATE audio SET removed_from_source = true WHERE identifier = ANY(%s)", (sel,))
            elif kind == "restore":
                c.execute("DELETE FROM deleted_audio WHERE identifier = ANY(%s)", (sel,))
                c.execute("UPDATE audio SET removed_from_source = false WHERE identifier = ANY(%s)", (sel,))
            else:
                c.execute(
                    "INSERT INTO audio (identifier, created_on, updated_on, url, license, removed_from_source, title) "
                    "SELECT md5(%s || ':' || g)::uuid, now(), now(), 'https://new.example/' || md5(%s || ':' || g), 'by', false, 'new' "
                    "FROM generate_series(1, %s) g ON CONFLICT DO NOTHING",
                    (f"{pos}-{len(ids)}", f"{pos}-{len(ids)}", n),
                )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(OPS, min_size=1, max_size=3))
def test_incremental_equals_full_export_property(fresh_db, tmp_path_factory, small_chunks, steps):
    """Random inserts, updates, deletes, tombstones and removals between snapshots:
    every incremental snapshot equals a full export of the same state, row for row."""
    uri = fresh_db("prop")
    seed(uri, tables=["audio"], rows=600, seed=9)
    base = tmp_path_factory.mktemp("prop")
    inc_store, full_store = LocalStore(base / "inc"), LocalStore(base / "full")
    day = dt.date(2026, 1, 1)
    export_snapshot(uri, ["audio"], day.isoformat(), inc_store, ExportOptions(workers=2))
    for ops in steps:
        apply(uri, ops)
        day += dt.timedelta(days=1)
        [inc] = export_snapshot(uri, ["audio"], day.isoformat(), inc_store, ExportOptions(workers=2))
        [full] = export_snapshot(uri, ["audio"], day.isoformat(), full_store, ExportOptions(workers=2, incremental=False))
        assert inc.manifest.row_count == full.manifest.row_count
        assert rows(inc_store, inc.prefix) == rows(full_store, full.prefix)


def test_chunk_read_is_checked_against_its_count(fresh_db, tmp_path, small_chunks, monkeypatch):
    """Each chunk read must stream exactly the rows the fingerprint scan counted in the same
    snapshot; a mismatch fails the export and publishes nothing."""
    from dataset_assets.source import fingerprints as chunks_mod
    from dataset_assets.errors import UserError

    uri = fresh_db("inc_count")
    seed(uri, tables=["audio"], rows=1000, seed=5)
    store = LocalStore(tmp_path / "s")
    [base] = export_snapshot(uri, ["audio"], "2026-11-01", store, ExportOptions(workers=2))
    assert base.manifest.timings["source_rows_counted"] == base.manifest.row_count
    assert "per chunk" in base.manifest.timings["count_check"]
    change_rows(uri, "audio", fraction=0.02, seed=3, mode="clustered")
    real = chunks_mod.chunk_rows
    monkeypatch.setattr(chunks_mod, "chunk_rows", lambda fp: real(fp) + 1)  # as if a row went missing in transit
    with pytest.raises(UserError, match=r"chunk \d+ streamed \d+ rows but Postgres counted"):
        export_snapshot(uri, ["audio"], "2026-11-02", store, ExportOptions(workers=2))
    assert not store.is_complete("snapshots/2026-11-02/audio")

    # one chunk in the middle of a run read by one query: the check is per chunk, and names it
    calls = []

    def off_for_the_third(fp):
        calls.append(fp)
        return real(fp) + (1 if len(calls) == 3 else 0)

    monkeypatch.setattr(chunks_mod, "chunk_rows", off_for_the_third)
    with pytest.raises(UserError, match=r"chunk 2 streamed \d+ rows but Postgres counted"):
        export_snapshot(uri, ["audio"], "2026-11-02", LocalStore(tmp_path / "fresh"), ExportOptions(workers=2))
    monkeypatch.setattr(chunks_mod, "chunk_rows", real)
    [ok] = export_snapshot(uri, ["audio"], "2026-11-02", store, ExportOptions(workers=2))
    assert ok.manifest.chunking["changed_chunks"] > 0 and store.is_complete(ok.prefix)


def test_an_empty_table_gets_one_file_with_its_schema_and_it_is_never_reused(fresh_db, tmp_path, small_chunks):
    """A table without a row is released as one parquet file with its schema and no row (the
    card's config of it names a file); the next export, once rows came, does not carry it over."""
    uri = fresh_db("inc_empty")
    seed(uri, tables=["audio"], rows=500, seed=8)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE stash AS SELECT * FROM audio")
        conn.execute("DELETE FROM audio")
    store = LocalStore(tmp_path / "s")
    [empty] = export_snapshot(uri, ["audio"], "2026-11-01", store, ExportOptions(workers=2))
    assert [(f.path, f.rows) for f in empty.manifest.files] == [("train-empty.parquet", 0)]
    f = pq.ParquetFile(store.local_path(f"{empty.prefix}/train-empty.parquet"))
    assert f.metadata.num_rows == 0
    assert f.schema_arrow.remove_metadata().equals(empty.manifest.arrow().remove_metadata())
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("INSERT INTO audio SELECT * FROM stash")
    [full] = export_snapshot(uri, ["audio"], "2026-11-02", store, ExportOptions(workers=2))
    assert full.manifest.row_count == full.manifest.timings["rows_exported"] > 0
    assert "train-empty.parquet" not in [f.path for f in full.manifest.files]


def test_a_damaged_earlier_manifest_is_no_base(fresh_db, tmp_path, small_chunks):
    """The newest earlier snapshot whose manifest is damaged is skipped as a base (with no other,
    every chunk is read); the export neither fails nor reuses files it cannot vouch for."""
    uri = fresh_db("inc_damaged")
    seed(uri, tables=["audio"], rows=1000, seed=6)
    store = LocalStore(tmp_path / "s")
    [base] = export_snapshot(uri, ["audio"], "2026-11-01", store, ExportOptions(workers=2))
    store.local_path(f"{base.prefix}/_manifest.json").write_text('{"table": "audio"}')
    [nxt] = export_snapshot(uri, ["audio"], "2026-11-02", store, ExportOptions(workers=2))
    assert nxt.manifest.chunking["base_snapshot"] is None and not any(f.reused_from for f in nxt.manifest.files)
    assert nxt.manifest.timings["rows_exported"] == nxt.manifest.row_count == base.manifest.row_count


def test_disk_full_while_chunks_are_finished_leaves_nothing_visible(fresh_db, tmp_path, small_chunks, monkeypatch):
    """A chunk's shard is encoded while the next chunk streams (export._finish in the background); a write error
    there (ENOSPC from /dev/full, for real) still fails the export with one sentence and
    leaves no snapshot and no staging behind."""
    from dataset_assets.export import shards as writer_mod
    from dataset_assets.errors import StoreError

    uri = fresh_db("inc_full")
    seed(uri, tables=["audio"], rows=1500, seed=2)
    store = LocalStore(tmp_path / "full")
    real = writer_mod.StagedWriter
    monkeypatch.setattr(writer_mod, "StagedWriter", lambda where, *a, **kw: real(open("/dev/full", "wb", buffering=0), *a, **kw))
    with pytest.raises(StoreError, match=r"is full; free space"):
        export_snapshot(uri, ["audio"], "2026-11-01", store, ExportOptions(workers=2))
    monkeypatch.setattr(writer_mod, "StagedWriter", real)
    assert not store.exists("snapshots/2026-11-01/audio")
    assert list((store.root / ".staging").glob("*")) == []
    [done] = export_snapshot(uri, ["audio"], "2026-11-01", store, ExportOptions(workers=2))  # a rerun completes
    [full] = export_snapshot(uri, ["audio"], "2026-11-01", LocalStore(tmp_path / "ref"), ExportOptions(incremental=False))
    assert done.manifest.chunking["changed_chunks"] == len(done.manifest.chunking["fingerprints"])
    assert rows(store, done.prefix) == rows(LocalStore(tmp_path / "ref"), full.prefix)


def test_a_chunk_read_cut_short_by_another_workers_failure_is_not_a_count_error(fresh_db, tmp_path, small_chunks):
    """When one worker fails, the others stop mid-stream; a stopped read must not report a
    count mismatch of its own (which could reach the user first instead of the real cause)."""
    import threading

    from dataset_assets.tables import table_config
    from dataset_assets.source import fingerprints as chunks_mod
    from dataset_assets.export import run as ex
    from dataset_assets.source.snapshot import PostgresSnapshot
    from dataset_assets.source.plan import plan_table
    from dataset_assets.export.progress import Progress
    from dataset_assets.errors import UserError

    uri = fresh_db("inc_stop")
    seed(uri, tables=["audio"], rows=500, seed=8)
    stop = threading.Event()
    stop.set()  # another worker has failed
    with PostgresSnapshot(uri) as shared:
        plan = plan_table(shared.cur, table_config("audio"), 1)
        bounds = chunks_mod.choose_boundaries(shared.cur, plan, 100)
        with shared.connection() as (_, cur), pytest.raises(Exception) as raised:
            ex._copy_unit(cur, plan, chunks_mod.chunk_sql(plan, bounds, 0, 1), 0, [100, 100], tmp_path / "stage",
                          ex.ExportOptions(workers=1), Progress(), ex._Counter(), stop)
    assert not isinstance(raised.value, UserError), raised.value  # nothing for the user: the other failure is the cause
    assert isinstance(raised.value, ex._Interrupted)
