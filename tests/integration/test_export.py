"""The export engine against a real Postgres: exact round trips, consistency, parallelism."""

from __future__ import annotations

import json
import math
import threading

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_assets.export.run import ExportOptions, export_snapshot
from dataset_assets.export.progress import Progress
from dataset_assets.storage.verify import verify_snapshot
from dataset_assets.export.shards import MiB, ParquetOptions
from dataset_assets.errors import SnapshotExists, UserError

DATE = "2026-11-21"


def comparable(table: pa.Table) -> list[dict]:
    """Rows with NaN made comparable (NaN != NaN otherwise)."""
    def fix(v):
        return "NaN" if isinstance(v, float) and math.isnan(v) else v
    return [{k: fix(v) for k, v in r.items()} for r in table.to_pylist()]


def read_snapshot(store, table, date=DATE) -> pa.Table:
    folder = store.local_path(f"snapshots/{date}/{table}")
    files = sorted(folder.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def source_rows(uri: str, table: str, where: str = "") -> dict[str, dict]:
    """Every row through an independent driver (psycopg, text protocol), keyed by identifier."""
    with psycopg.connect(uri) as conn:
        cur = conn.execute(f'SELECT * FROM "{table}" {where}')
        names = [d.name for d in cur.description]
        rows = {}
        for r in cur.fetchall():
            row = dict(zip(names, r))
            rows[str(row["identifier"])] = row
    return rows


def normalise_source(value):
    if isinstance(value, (dict, list)) and not isinstance(value, str):
        return value
    if hasattr(value, "hex") and type(value).__name__ == "UUID":
        return str(value)
    return value


def assert_same(parquet_value, pg_value, column):
    if pg_value is None:
        assert parquet_value is None, column
        return
    if isinstance(pg_value, float):
        if math.isnan(pg_value):
            assert math.isnan(parquet_value), column
        else:
            assert parquet_value == pg_value, column
        return
    if isinstance(pg_value, (dict, list)) and column in ("meta_data", "tags", "audio_set", "alt_files"):
        assert json.loads(parquet_value) == pg_value, column
        return
    assert parquet_value == normalise_source(pg_value), (column, parquet_value, pg_value)


@pytest.mark.parametrize("table", ["image", "audio"])
def test_every_column_round_trips_exactly(seeded_uri, store, table):
    [res] = export_snapshot(seeded_uri, [table], DATE, store, ExportOptions(workers=2))
    got = read_snapshot(store, table)
    expected = source_rows(seeded_uri, table, "WHERE removed_from_source IS NOT TRUE AND identifier NOT IN (SELECT identifier FROM deleted_%s)" % table)
    assert res.rows == got.num_rows == len(expected)
    assert got.schema.names == list(next(iter(expected.values())).keys())
    for row in got.to_pylist():
        src = expected[row["identifier"]]
        for col, val in row.items():
            assert_same(val, src[col], col)
    # the schema is the documented mapping
    s = got.schema
    assert s.field("identifier").type == pa.string()
    assert s.field("created_on").type == pa.timestamp("us", tz="UTC")
    assert s.field("meta_data").type == pa.string()
    assert s.field("standardized_popularity").type == pa.float64()
    assert s.field("filesize").type == pa.int32()
    if table == "audio":
        assert s.field("genres").type == pa.list_(pa.string())


def test_edge_values_round_trip(fresh_db, store, tmp_path, monkeypatch):
    uri = fresh_db("edge")
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("""CREATE TABLE edge (identifier uuid PRIMARY KEY, ts timestamptz, j jsonb, arr varchar(80)[], f float8,
                     t text, n numeric(12,3), nu numeric, b bool, big int8, small int2, d date)""")
        c.execute("""INSERT INTO edge VALUES
          ('00000000-0000-0000-0000-000000000001', '2020-06-01 12:00:00+05:30', '{}', '{}', 'NaN', '', 1.5, 3.14159265358979323846, true, 9223372036854775807, -32768, '1999-12-31'),
          ('00000000-0000-0000-0000-000000000002', '1970-01-01 00:00:00-08', '[]', '{"a",NULL,""}', 'Infinity', 'emoji 😀 RTL שלום CJK 漢字 nul-free', -0.001, 'NaN', false, -1, 0, NULL),
          ('00000000-0000-0000-0000-000000000003', NULL, '{"a": {"b": [1, 2, {"c": null}]}, "ü": "é"}', NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          ('ffffffff-ffff-ffff-ffff-ffffffffffff', '2038-01-19 03:14:08.123456+00', 'null', '{"x"}', -0.0, 'a"b''c\\d', 0, 0, NULL, 0, 1, '2000-02-29')""")
    cfg = tmp_path / "tables.yaml"
    cfg.write_text("tables:\n  edge: {primary_key: identifier}\n")
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(cfg))
    from dataset_assets import tables as config

    config._load.cache_clear()
    export_snapshot(uri, ["edge"], DATE, store, ExportOptions(workers=1))
    got = {r["identifier"]: r for r in read_snapshot(store, "edge").to_pylist()}
    with psycopg.connect(uri) as c:
        src = {str(r[0]): r for r in c.execute("SELECT identifier, ts, j::text, arr, f, t, n, nu::text, b, big, small, d FROM edge").fetchall()}
    assert set(got) == set(src)
    for k, r in got.items():
        s = src[k]
        assert r["ts"] == s[1]
        assert (r["j"] is None and s[2] is None) or json.loads(r["j"]) == json.loads(s[2])
        assert r["arr"] == s[3]
        assert (math.isnan(r["f"]) and math.isnan(s[4])) if (s[4] is not None and math.isnan(s[4])) else r["f"] == s[4]
        assert r["t"] == s[5] and r["n"] == s[6] and r["nu"] == s[7] and r["b"] == s[8]
        assert r["big"] == s[9] and r["small"] == s[10] and r["d"] == s[11]
    t = read_snapshot(store, "edge")
    assert t.schema.field("n").type == pa.decimal128(12, 3)
    assert t.schema.field("nu").type == pa.string()
    assert str(t.schema.field("ts").type) == "timestamp[us, tz=UTC]"


def test_unmappable_type_fails_before_data_moves(fresh_db, store, tmp_path, monkeypatch):
    uri = fresh_db("badtype")
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("CREATE TABLE geo (identifier uuid PRIMARY KEY, where_ point)")
        c.execute("INSERT INTO geo VALUES (gen_random_uuid(), point(1,2))")
    cfg = tmp_path / "tables.yaml"
    cfg.write_text("tables:\n  geo: {primary_key: identifier}\n")
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(cfg))
    from dataset_assets import tables as config

    config._load.cache_clear()
    with pytest.raises(UserError, match=r"geo\.where_ has type point"):
        export_snapshot(uri, ["geo"], DATE, store)
    assert store.list("snapshots") == []


def test_parallel_export_equals_single_worker(seeded_uri, tmp_path):
    from dataset_assets.storage.stores import LocalStore

    one, four = LocalStore(tmp_path / "one"), LocalStore(tmp_path / "four")
    opts = ParquetOptions(shard_bytes=1 * MiB, row_group_bytes=1 * MiB)
    export_snapshot(seeded_uri, ["image"], DATE, one, ExportOptions(workers=1, parquet=opts, incremental=False))
    [r4] = export_snapshot(seeded_uri, ["image"], DATE, four, ExportOptions(workers=4, parquet=opts, incremental=False))
    assert r4.manifest.timings["units"] > 1
    a = read_snapshot(one, "image").sort_by("identifier")
    b = read_snapshot(four, "image").sort_by("identifier")
    assert a.schema == b.schema
    assert comparable(a) == comparable(b)
    # every shard carries the one stable schema
    for f in r4.manifest.files:
        assert pq.read_schema(four.local_path(f"{r4.prefix}/{f.path}")).remove_metadata() == a.schema.remove_metadata()


class ChangeOnFirstBatch(Progress):
    """When the export reports its first batch, commits ``statements`` from another connection."""

    def __init__(self, uri, *statements):
        self.uri = uri
        self.statements = statements
        self.done = threading.Event()

    def advance(self, rows, nbytes):
        if self.done.is_set():
            return
        self.done.set()
        with psycopg.connect(self.uri, autocommit=True) as c:
            for sql in self.statements:
                c.execute(sql)


def test_rows_changed_during_export_are_not_in_snapshot(mutable_uri, store):
    before = source_rows(mutable_uri, "image", "WHERE removed_from_source IS NOT TRUE AND identifier NOT IN (SELECT identifier FROM deleted_image)")
    hook = ChangeOnFirstBatch(
        mutable_uri,
        "UPDATE image SET title = 'CHANGED DURING EXPORT' WHERE identifier IN (SELECT identifier FROM image ORDER BY identifier DESC LIMIT 50)",
        "DELETE FROM image WHERE identifier IN (SELECT identifier FROM image ORDER BY identifier LIMIT 50)",
        "INSERT INTO image SELECT (md5('new'||n))::uuid, now(), now(), NULL, 'flickr', 'flickr', NULL, NULL, 'https://new/'||n, NULL, NULL, "
        "'by', '4.0', NULL, NULL, 'NEW DURING EXPORT', NULL, NULL, NULL, NULL, false FROM generate_series(1, 30) n",
    )
    [res] = export_snapshot(mutable_uri, ["image"], DATE, store, ExportOptions(workers=2, parquet=ParquetOptions(row_group_bytes=1 * MiB)), progress=hook)
    assert hook.done.is_set()
    got = read_snapshot(store, "image")
    assert sorted(got.column("identifier").to_pylist()) == sorted(before)
    assert "CHANGED DURING EXPORT" not in got.column("title").to_pylist()
    assert "NEW DURING EXPORT" not in got.column("title").to_pylist()
    assert res.manifest.timings["source_rows_counted"] == len(before)
    # ...and they are there for the next snapshot
    after = source_rows(mutable_uri, "image")
    assert sum(r["title"] == "NEW DURING EXPORT" for r in after.values()) == 30


def test_several_tables_share_one_snapshot(mutable_uri, store):
    """audio is read after image, yet it is as it was when the export began."""
    where = "WHERE removed_from_source IS NOT TRUE AND identifier NOT IN (SELECT identifier FROM deleted_audio)"
    before = source_rows(mutable_uri, "audio", where)
    # tables are exported one after the other: change audio while image is being read
    hook = ChangeOnFirstBatch(
        mutable_uri,
        "UPDATE audio SET title = 'CHANGED DURING IMAGE' WHERE identifier IN (SELECT identifier FROM audio ORDER BY identifier LIMIT 40)",
        "DELETE FROM audio WHERE identifier IN (SELECT identifier FROM audio ORDER BY identifier DESC LIMIT 40)",
    )
    results = export_snapshot(mutable_uri, ["image", "audio"], DATE, store, ExportOptions(workers=2), progress=hook)
    assert hook.done.is_set() and [r.table for r in results] == ["image", "audio"]
    audio = read_snapshot(store, "audio")
    assert sorted(audio.column("identifier").to_pylist()) == sorted(before)
    assert "CHANGED DURING IMAGE" not in audio.column("title").to_pylist()
    assert len(source_rows(mutable_uri, "audio", where)) < len(before)  # the change did land
    assert len({r.manifest.source_snapshot["txid_snapshot"] for r in results}) == 1


def test_manifest_and_marker(seeded_uri, store):
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(seeded_uri)
    secret = parts.password
    if not secret:  # the embedded server trusts loopback, so any password connects
        secret = "s3cret-Pw"
        parts = parts._replace(netloc=f"{parts.username}:{secret}@{parts.hostname}:{parts.port}")
    [res] = export_snapshot(urlunsplit(parts), ["audio"], DATE, store, ExportOptions(workers=2))
    raw = store.read_bytes(f"{res.prefix}/_manifest.json")
    m = json.loads(raw)
    assert m["row_count"] == sum(f["rows"] for f in m["files"]) == res.rows
    assert secret.encode() not in raw and m["source"]["database"]
    assert len(m["root_hash"]) == 64 and m["source_snapshot"]["snapshot_id"]
    assert store.is_complete(res.prefix)
    names = [f["path"] for f in m["files"]]
    assert names == sorted(names)
    assert [r.ok for r in verify_snapshot(store, DATE)] == [True]


def test_existing_snapshot_is_not_overwritten(seeded_uri, store):
    export_snapshot(seeded_uri, ["audio"], DATE, store)
    with pytest.raises(SnapshotExists, match="--force"):
        export_snapshot(seeded_uri, ["audio"], DATE, store)
    [again] = export_snapshot(seeded_uri, ["audio"], DATE, store, ExportOptions(skip_existing=True))
    assert again.skipped
    [forced] = export_snapshot(seeded_uri, ["audio"], DATE, store, ExportOptions(force=True))
    assert not forced.skipped and store.is_complete(forced.prefix)
    # a damaged manifest of the existing snapshot is one sentence, not a traceback
    store.local_path(f"{forced.prefix}/_manifest.json").write_text('{"table": "audio"}')
    with pytest.raises(UserError, match=r"_manifest.json .* is damaged"):
        export_snapshot(seeded_uri, ["audio"], DATE, store, ExportOptions(skip_existing=True))


def test_verify_catches_one_flipped_byte(seeded_uri, store):
    [res] = export_snapshot(seeded_uri, ["audio"], DATE, store)
    victim = res.manifest.files[0].path
    p = store.local_path(f"{res.prefix}/{victim}")
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    [report] = verify_snapshot(store, DATE)
    assert not report.ok
    assert any(victim in problem for problem in report.problems)


def test_manifest_records_the_key_the_export_resolved(fresh_db, store, tmp_path, monkeypatch):
    """A table keyed by its own primary key (not the configured default) records that key,
    and the primary-key check reads that column."""
    from dataset_assets import tables as config
    from dataset_assets.storage.checks import primary_key_report

    uri = fresh_db("keyed")
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("CREATE TABLE keyed (id int8 PRIMARY KEY, v text)")
        c.execute("INSERT INTO keyed SELECT g, 'v' || g FROM generate_series(1, 5000) g")
    cfg = tmp_path / "tables.yaml"
    cfg.write_text("tables:\n  keyed: {chunk_rows: 1000}\n")  # primary_key left at its default, identifier
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(cfg))
    config._load.cache_clear()
    [res] = export_snapshot(uri, ["keyed"], DATE, store, ExportOptions(workers=2))
    assert res.manifest.primary_key == "id" and res.manifest.chunking["key"] == "id"
    report = primary_key_report(store, res.prefix, res.manifest, res.manifest.primary_key)
    assert (report.rows, report.ok) == (5000, True)
    config._load.cache_clear()
