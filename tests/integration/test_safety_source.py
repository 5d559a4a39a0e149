"""Issue 15, items 4-7 and 14, against a real Postgres: locks before the Postgres snapshot
(a TRUNCATE waits; a table locked elsewhere is one sentence), the row-drop check, an
independent count(*) in every mode, no reuse from another source identity, keys that are
not keys refused before data moves, and values read back from the store never spliced
into SQL."""

from __future__ import annotations

import json
import math
import threading
import time

import adbc_driver_manager.dbapi as adbc_dbapi
import dagster as dg
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_assets import tables as config
from dataset_assets.errors import SourceError, UserError
from dataset_assets.export import run as run_mod
from dataset_assets.export.progress import Progress
from dataset_assets.export.run import ExportOptions, export_snapshot
from dataset_assets.local.seed import seed
from dataset_assets.storage.stores import LocalStore
from platform_helpers import check_results, materialize

AUDIO_KEPT = "WHERE removed_from_source IS NOT TRUE AND identifier NOT IN (SELECT identifier FROM deleted_audio)"


# --- helpers ------------------------------------------------------------------------------------

def use_tables(tmp_path, monkeypatch, yaml_text: str) -> None:
    path = tmp_path / "tables.yaml"
    path.write_text(yaml_text)
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(path))
    config._load.cache_clear()


@pytest.fixture
def small_chunks(tmp_path, monkeypatch):
    """image and audio as configured, but chunks of 100 rows."""
    use_tables(tmp_path, monkeypatch, "tables:\n"
               "  image: {primary_key: identifier, tombstone_table: deleted_image, chunk_rows: 100}\n"
               "  audio: {primary_key: identifier, tombstone_table: deleted_audio, chunk_rows: 100}\n")
    yield
    config._load.cache_clear()


@pytest.fixture
def sql_log(monkeypatch):
    """Every SQL text any ADBC cursor sends (from every thread)."""
    sent: list[str] = []
    real = adbc_dbapi.Cursor.execute

    def execute(self, operation, parameters=None):
        sent.append(operation if isinstance(operation, str) else repr(operation))
        return real(self, operation, parameters)

    monkeypatch.setattr(adbc_dbapi.Cursor, "execute", execute)
    return sent


def stored_rows(store, prefix, key: str = "identifier") -> list[dict]:
    folder = store.local_path(prefix)
    t = pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob("*.parquet"))])
    out = t.sort_by(key).to_pylist()
    for r in out:
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                r[k] = "NaN"
    return out


def source_ids(uri: str, table: str = "audio", where: str = AUDIO_KEPT) -> list[str]:
    with psycopg.connect(uri) as c:
        return sorted(str(r[0]) for r in c.execute(f"SELECT identifier FROM {table} {where}").fetchall())


def wait_for(condition, seconds: float, every: float = 0.05) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(every)
    return condition()


def sessions_holding(uri: str, table: str) -> int:
    with psycopg.connect(uri, autocommit=True) as c:
        return c.execute("SELECT count(DISTINCT pid) FROM pg_locks WHERE relation = %s::regclass AND mode = 'AccessShareLock' "
                         "AND granted AND pid <> pg_backend_pid()", (table,)).fetchone()[0]


def waiting_on_a_lock(uri: str, pid: int) -> bool:
    with psycopg.connect(uri, autocommit=True) as c:
        row = c.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        return row is not None and row[0] == "Lock"


class Truncate:
    """``TRUNCATE table`` in a connection of its own, in a thread (given up after 30 s)."""

    def __init__(self, uri: str, table: str):
        self.conn = psycopg.connect(uri, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.table = table
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.conn.execute("SET lock_timeout = '30s'")
            self.conn.execute(f"TRUNCATE {self.table}")
            self.finished_at = time.monotonic()
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
        finally:
            self.conn.close()


# --- item 4: locks before the snapshot ------------------------------------------------------------

@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
def test_truncate_after_the_export_locked_its_tables_waits_and_the_rows_are_those_before(mutable_uri, tmp_path, monkeypatch, incremental):
    """The TRUNCATE starts once the export holds its locks (after the Postgres snapshot was
    exported, before any row is read): it waits for the export, which publishes exactly the rows
    there were before it; the TRUNCATE lands afterwards."""
    before = source_ids(mutable_uri)
    workers = 2
    started: list[Truncate] = []
    real_plan = run_mod.plan_table

    def plan_then_truncate(*args, **kwargs):
        if not started:
            # coordinator + the connections prepared for the workers and the count
            wait_for(lambda: sessions_holding(mutable_uri, "audio") >= workers + 2, 10)
            started.append(Truncate(mutable_uri, "audio"))
            assert wait_for(lambda: started[0].finished_at is not None or waiting_on_a_lock(mutable_uri, started[0].pid), 10)
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(run_mod, "plan_table", plan_then_truncate)
    store = LocalStore(tmp_path / "s")
    [res] = export_snapshot(mutable_uri, ["audio"], "2026-11-01", store, ExportOptions(workers=workers, incremental=incremental))
    done_at = time.monotonic()
    [trunc] = started
    assert [r["identifier"] for r in stored_rows(store, res.prefix)] == before
    assert res.manifest.row_count == len(before) == res.manifest.timings["source_rows_counted"] > 0
    trunc.thread.join(30)
    assert trunc.error is None and trunc.finished_at is not None and trunc.finished_at >= done_at - 0.5
    assert source_ids(mutable_uri, where="") == []  # it did land, after the export


def test_an_exclusive_request_queued_before_the_readers_joined_is_one_sentence(mutable_uri, tmp_path, monkeypatch):
    """A TRUNCATE queued behind the coordinator's lock before the readers joined would wait for
    the export while the readers wait for it; the export stops with one sentence instead (and
    the TRUNCATE goes ahead), nothing is committed."""
    from dataset_assets.source.snapshot import PostgresSnapshot

    started: list[Truncate] = []
    real_prepare = PostgresSnapshot.prepare

    def truncate_then_prepare(self, n):
        started.append(Truncate(mutable_uri, "audio"))
        assert wait_for(lambda: waiting_on_a_lock(mutable_uri, started[0].pid), 10)
        return real_prepare(self, n)

    monkeypatch.setattr(PostgresSnapshot, "prepare", truncate_then_prepare)
    store = LocalStore(tmp_path / "s")
    with pytest.raises(SourceError) as raised:
        export_snapshot(mutable_uri, ["audio"], "2026-11-01", store, ExportOptions(workers=2, incremental=False))
    msg = str(raised.value)
    assert msg.startswith("Another session asked for an exclusive lock on table audio") and "rerun the export" in msg
    assert "\n" not in msg and msg.count(". ") == 0
    assert not store.exists("snapshots/2026-11-01/audio")
    started[0].thread.join(30)
    assert started[0].error is None  # released when the export gave up


def test_a_table_locked_exclusively_elsewhere_fails_after_the_lock_timeout_in_one_sentence(mutable_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("DATASET_ASSETS_LOCK_TIMEOUT_MS", "300")
    store = LocalStore(tmp_path / "s")
    holder = psycopg.connect(mutable_uri)
    holder.execute("LOCK TABLE deleted_audio IN ACCESS EXCLUSIVE MODE")  # the tombstone table counts too
    box: dict = {}

    def run():
        try:
            box["result"] = export_snapshot(mutable_uri, ["audio"], "2026-11-01", store, ExportOptions(workers=2))
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(60)
    hung = t.is_alive()
    holder.rollback()
    holder.close()
    t.join(60)
    assert not hung, "the export waited for the lock with no timeout"
    err = box.get("error")
    assert isinstance(err, SourceError), box
    assert str(err) == (
        "Table deleted_audio is locked by another session (a running TRUNCATE, ALTER TABLE, VACUUM FULL, ...) and the "
        "export could not lock it within 300 ms; nothing was exported, rerun the export once that session is done "
        "(or wait longer with DATASET_ASSETS_LOCK_TIMEOUT_MS)."
    )
    assert time.monotonic() - t0 < 30
    assert not store.exists("snapshots/2026-11-01/audio")
    # and with the lock gone the same export goes through
    [ok] = export_snapshot(mutable_uri, ["audio"], "2026-11-01", store, ExportOptions(workers=2))
    assert ok.manifest.row_count > 0


def test_the_export_outlives_idle_in_transaction_session_timeout(mutable_uri, tmp_path):
    """A database that ends idle transactions after 200 ms: the coordinator (idle in its
    transaction while the workers read) and the pooled connections are immune to it."""
    with psycopg.connect(mutable_uri, autocommit=True) as c:
        db = c.execute("SELECT current_database()").fetchone()[0]
        c.execute(f'ALTER DATABASE "{db}" SET idle_in_transaction_session_timeout = 200')

    class Slow(Progress):
        def start(self, label, total):
            time.sleep(0.6)  # every session of the export sits idle in its transaction meanwhile
            return super().start(label, total)

    store = LocalStore(tmp_path / "s")
    results = export_snapshot(mutable_uri, ["image", "audio"], "2026-11-01", store, ExportOptions(workers=2, incremental=False),
                              progress=Slow())
    assert [r.manifest.row_count > 0 for r in results] == [True, True]
    assert results[1].manifest.row_count == len(source_ids(mutable_uri))


def test_rows_not_collapsed_blocks_a_snapshot_that_lost_most_of_its_rows(defs_module, instance, mutable_uri, tmp_path, monkeypatch):
    """Dates materialised through Dagster: a table that lost 60 % of its rows since the previous
    complete snapshot fails the blocking check (and so stops the card); a limit raised on
    purpose lets it through."""
    store_dir = tmp_path / "store"
    card = store_dir / "snapshots" / "2026-11-03" / "README.md"

    def evaluation(result, table):
        return next(e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                    and e.event_specific_data.asset_key == dg.AssetKey(table) and e.event_specific_data.check_name == "rows_not_collapsed")

    first = materialize(defs_module, instance, "2026-11-01", mutable_uri, store_dir)
    assert first.success and check_results(first)[("audio", "rows_not_collapsed")] is True  # nothing earlier to compare with
    before = json.loads((store_dir / "snapshots" / "2026-11-01" / "audio" / "_manifest.json").read_text())["row_count"]
    with psycopg.connect(mutable_uri, autocommit=True) as c:
        c.execute("DELETE FROM audio WHERE identifier IN (SELECT identifier FROM audio ORDER BY identifier "
                  "LIMIT (SELECT count(*) * 6 / 10 FROM audio))")
    second = materialize(defs_module, instance, "2026-11-03", mutable_uri, store_dir)
    checks = check_results(second)
    assert checks[("audio", "rows_not_collapsed")] is False and checks[("image", "rows_not_collapsed")] is True
    assert not second.success and not card.exists()
    ev = evaluation(second, "audio")
    assert ev.metadata["previous_snapshot"].value == "2026-11-01" and ev.metadata["previous_rows"].value == before
    assert 0.5 < ev.metadata["drop"].value < 0.7
    assert ev.description.startswith("audio holds ") and "DATASET_ASSETS_MAX_ROW_DROP" in ev.description

    monkeypatch.setenv("DATASET_ASSETS_MAX_ROW_DROP", "0.7")  # a real drop, let through on purpose
    third = materialize(defs_module, instance, "2026-11-03", mutable_uri, store_dir)
    assert third.success and check_results(third)[("audio", "rows_not_collapsed")] is True and card.exists()


# --- item 5: an independent count in every mode ------------------------------------------------------

def test_incremental_rows_are_checked_against_a_count_of_their_own(fresh_db, tmp_path, small_chunks, monkeypatch):
    """A change the fingerprints miss (simulated: the scan returns the base's fingerprints) would
    republish stale shards; the count(*) made apart from the export refuses them."""
    uri = fresh_db("s15_count")
    seed(uri, tables=["audio"], rows=1000, seed=5)
    store = LocalStore(tmp_path / "s")
    [base] = export_snapshot(uri, ["audio"], "2026-11-01", store, ExportOptions(workers=2))
    assert base.manifest.timings["source_rows_counted"] == base.manifest.row_count == len(source_ids(uri))
    assert "separate query" in base.manifest.timings["count_check"]

    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("DELETE FROM audio WHERE identifier IN (SELECT identifier FROM audio ORDER BY identifier LIMIT 30)")
    stale = {int(k): v for k, v in base.manifest.chunking["fingerprints"].items()}
    monkeypatch.setattr(run_mod, "_parallel_fingerprints", lambda *a, **kw: dict(stale))
    with pytest.raises(UserError, match=r"^audio: the source holds \d+ rows at the snapshot but \d+ were exported; nothing was "
                                        r"committed to the store, rerun the export with --full"):
        export_snapshot(uri, ["audio"], "2026-11-02", store, ExportOptions(workers=2))
    assert not store.is_complete("snapshots/2026-11-02/audio")

    monkeypatch.undo()
    use_tables(tmp_path, monkeypatch, "tables:\n  audio: {primary_key: identifier, tombstone_table: deleted_audio, chunk_rows: 100}\n")
    [ok] = export_snapshot(uri, ["audio"], "2026-11-02", store, ExportOptions(workers=2))
    assert ok.manifest.timings["rows_reused"] > 0
    assert ok.manifest.timings["source_rows_counted"] == ok.manifest.row_count == len(source_ids(uri))


# --- item 6: no reuse from another source identity ------------------------------------------------------

@pytest.fixture
def keyed(fresh_db, tmp_path, monkeypatch):
    uri = fresh_db("s15_keyed")
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("CREATE TABLE keyed (id int8 PRIMARY KEY, v text, c text)")
        c.execute("INSERT INTO keyed SELECT g, 'v' || g, 'c' || g FROM generate_series(1, 2000) g")
        c.execute("VACUUM ANALYZE keyed")
    use_tables(tmp_path, monkeypatch, "tables:\n  keyed: {chunk_rows: 100}\n")
    yield uri
    config._load.cache_clear()


def test_drop_and_add_of_a_column_is_not_reused_and_equals_a_full_export(keyed, tmp_path):
    uri = keyed
    store = LocalStore(tmp_path / "inc")
    [base] = export_snapshot(uri, ["keyed"], "2026-11-01", store, ExportOptions(workers=2))
    ident = base.manifest.source_identity
    assert ident["system_identifier"] and ident["timeline"] >= 1 and ident["database"] and ident["database_oid"]
    assert set(ident["relations"]) == {"keyed"} and [c[:3] for c in ident["columns"]] == [
        [1, "id", "bigint"], [2, "v", "text"], [3, "c", "text"]]
    [same] = export_snapshot(uri, ["keyed"], "2026-11-02", store, ExportOptions(workers=2))
    assert same.manifest.timings["rows_exported"] == 0  # nothing changed: everything reused

    with psycopg.connect(uri, autocommit=True) as c:  # same name, same type, same place: xmin untouched
        c.execute("ALTER TABLE keyed DROP COLUMN c")
        c.execute("ALTER TABLE keyed ADD COLUMN c text")
    lines: list[str] = []
    [nxt] = export_snapshot(uri, ["keyed"], "2026-11-03", store, ExportOptions(workers=2), log=lines.append)
    assert nxt.manifest.timings["rows_exported"] == nxt.manifest.row_count == 2000
    assert not any(f.reused_from for f in nxt.manifest.files)
    assert nxt.manifest.chunking["base_snapshot"] is None and "columns" in nxt.manifest.chunking["not_reused"]
    assert any("not reusing any file of 2026-11-02" in line and "columns" in line for line in lines), lines
    full_store = LocalStore(tmp_path / "full")
    [full] = export_snapshot(uri, ["keyed"], "2026-11-03", full_store, ExportOptions(workers=2, incremental=False))
    assert stored_rows(store, nxt.prefix, "id") == stored_rows(full_store, full.prefix, "id")
    assert all(r["c"] is None for r in stored_rows(store, nxt.prefix, "id"))


def test_an_unknown_or_different_cluster_identity_is_not_reused(keyed, tmp_path, monkeypatch):
    from dataset_assets.source import catalog

    uri = keyed
    store = LocalStore(tmp_path / "inc")
    real = catalog.cluster_identity

    def export(date, **identity):
        monkeypatch.setattr(catalog, "cluster_identity", lambda cur: {**real(cur), **identity})
        [res] = export_snapshot(uri, ["keyed"], date, store, ExportOptions(workers=2))
        return res.manifest.timings["rows_exported"], res.manifest.chunking["not_reused"]

    assert export("2026-11-01") == (2000, None)  # the first
    assert export("2026-11-02") == (0, None)  # the same source: every file reused
    rows, why = export("2026-11-03", system_identifier=None)  # pg_control_system() refused
    assert rows == 2000 and "system identifier is unknown" in why
    rows, why = export("2026-11-04")  # its base recorded "unknown": that is a difference too
    assert rows == 2000 and "system identifier is unknown" in why
    rows, why = export("2026-11-05", timeline=99)  # a failover or point-in-time recovery since
    assert rows == 2000 and "timeline changed from 1 to 99" in why
    rows, why = export("2026-11-06", timeline=99, system_identifier="1")  # another cluster
    assert rows == 2000 and "system identifier changed" in why
    assert export("2026-11-07", timeline=99, system_identifier="1") == (0, None)
    monkeypatch.setattr(catalog, "cluster_identity", real)
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("VACUUM FULL keyed")  # a rewrite: a new relfilenode
    rows, why = export("2026-11-08", timeline=99, system_identifier="1")
    assert rows == 2000 and "keyed was recreated, truncated or rewritten" in why
    assert export("2026-11-09", timeline=99, system_identifier="1") == (0, None)


# --- item 7: keys that are not keys -------------------------------------------------------------------

class Reads(Progress):
    def __init__(self):
        super().__init__()
        self.rows = 0

    def advance(self, rows, nbytes=0):
        self.rows += rows
        return super().advance(rows, nbytes)


@pytest.mark.parametrize("incremental", [True, False], ids=["incremental", "full"])
@pytest.mark.parametrize("case, fill, expected", [
    ("nulls", "INSERT INTO k SELECT CASE WHEN g % 400 = 0 THEN NULL ELSE g END, 'v' FROM generate_series(1, 1200) g",
     "The key column id of table k holds 3 NULL value(s), so it cannot name each row; nothing was exported: make it "
     "unique and NOT NULL (a primary key) or set primary_key for k in tables.yaml to a column that is."),
    ("duplicates", "INSERT INTO k SELECT g % 1000, 'v' FROM generate_series(1, 1200) g",
     "The key column id of table k holds 200 duplicate value(s), so it cannot name each row; nothing was exported: make it "
     "unique and NOT NULL (a primary key) or set primary_key for k in tables.yaml to a column that is."),
    ("no key", "INSERT INTO k SELECT g, 'v' FROM generate_series(1, 1200) g",
     "Table k has no single-column primary key 'identifier'; set primary_key in the table configuration."),
])
def test_a_key_that_is_not_a_key_fails_before_data_moves(fresh_db, tmp_path, monkeypatch, case, fill, expected, incremental):
    uri = fresh_db("s15_key")
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("CREATE TABLE k (id int8, v text)")
        c.execute(fill)
        c.execute("ANALYZE k")
    key = "" if case == "no key" else "primary_key: id, "
    use_tables(tmp_path, monkeypatch, f"tables:\n  k: {{{key}chunk_rows: 100}}\n")
    store = LocalStore(tmp_path / "s")
    reads = Reads()
    with pytest.raises(UserError) as raised:
        export_snapshot(uri, ["k"], "2026-11-01", store, ExportOptions(workers=2, incremental=incremental), progress=reads)
    assert str(raised.value) == expected
    assert reads.rows == 0 and not store.exists("snapshots/2026-11-01/k")
    config._load.cache_clear()


@pytest.mark.parametrize("layout", ["chunks", "clustered"])
def test_a_table_configured_as_its_own_tombstone_table_fails_before_data_moves(keyed, tmp_path, monkeypatch, layout):
    """Every row would be its own tombstone (an empty release), and a refresh counts the table's
    rows by its candidates' scans, which a lookup in the table itself would add to: refused."""
    use_tables(tmp_path, monkeypatch, f"tables:\n  keyed: {{primary_key: id, tombstone_table: keyed, layout: {layout}}}\n")
    store = LocalStore(tmp_path / "s")
    reads = Reads()
    with pytest.raises(UserError) as raised:
        export_snapshot(keyed, ["keyed"], "2026-11-01", store, ExportOptions(workers=2), progress=reads)
    assert str(raised.value) == ("The tombstone table 'keyed' configured for keyed is keyed itself, so every row would count "
                                 "as deleted; set tombstone_table to the table that holds the deleted rows' keys, or set "
                                 "exclude_tombstoned: false for keyed.")
    assert reads.rows == 0 and not store.exists("snapshots/2026-11-01/keyed")


def test_a_real_key_costs_no_query(fresh_db, tmp_path, monkeypatch, sql_log):
    """A primary key, or a unique index on a NOT NULL column, is proven by the catalog: no
    count(DISTINCT) runs; a unique index on a nullable column costs only a NULL probe."""
    uri = fresh_db("s15_pk")
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("CREATE TABLE pk (id int8 PRIMARY KEY, v text)")
        c.execute("CREATE TABLE uq (id int8 NOT NULL, v text)")
        c.execute("CREATE UNIQUE INDEX ON uq (id)")
        c.execute("CREATE TABLE un (id int8, v text)")
        c.execute("CREATE UNIQUE INDEX ON un (id)")
        for t in ("pk", "uq", "un"):
            c.execute(f"INSERT INTO {t} SELECT g, 'v' FROM generate_series(1, 500) g")
    use_tables(tmp_path, monkeypatch, "tables:\n  pk: {chunk_rows: 100}\n  uq: {primary_key: id}\n  un: {primary_key: id}\n")
    store = LocalStore(tmp_path / "s")
    export_snapshot(uri, ["pk", "uq"], "2026-11-01", store, ExportOptions(workers=2))
    assert not [s for s in sql_log if "count(DISTINCT" in s or "FILTER (WHERE" in s]
    export_snapshot(uri, ["un"], "2026-11-01", store, ExportOptions(workers=2))
    probes = [s for s in sql_log if "count(DISTINCT" in s or "FILTER (WHERE" in s]
    assert len(probes) == 1 and "count(DISTINCT" not in probes[0]
    config._load.cache_clear()


# --- item 14: values from the store are bound, never spliced -----------------------------------------------

@pytest.fixture
def quoted_keys(fresh_db, tmp_path, monkeypatch):
    """A text key whose values hold quotes, backslashes and SQL."""
    uri = fresh_db("s15_quoted")
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("CREATE TABLE tk (k text PRIMARY KEY, v text)")
        c.execute("INSERT INTO tk SELECT format('k%s''); DROP TABLE tk; --\\%s', lpad(g::text, 5, '0'), g), 'v' || g "
                  "FROM generate_series(1, 1000) g")
        c.execute("ANALYZE tk")
    use_tables(tmp_path, monkeypatch, "tables:\n  tk: {primary_key: k, chunk_rows: 100}\n")
    yield uri
    config._load.cache_clear()


def test_values_read_back_from_the_store_never_become_sql_text(quoted_keys, tmp_path, sql_log):
    uri = quoted_keys
    store = LocalStore(tmp_path / "inc")
    [base] = export_snapshot(uri, ["tk"], "2026-11-01", store, ExportOptions(workers=2))
    boundaries = base.manifest.chunking["boundaries"]
    assert len(boundaries) >= 5 and all("'" in b for b in boundaries)
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("UPDATE tk SET v = v || '+' WHERE k IN (SELECT k FROM tk ORDER BY k OFFSET 250 LIMIT 30)")
    sql_log.clear()
    [nxt] = export_snapshot(uri, ["tk"], "2026-11-02", store, ExportOptions(workers=2))
    assert 0 < nxt.manifest.chunking["changed_chunks"] < len(boundaries) and nxt.manifest.timings["rows_reused"] > 0
    for b in boundaries:
        for sql in sql_log:
            assert b not in sql and b not in sql.replace("''", "'") and b.split("'")[0] not in sql, sql[:300]
    full_store = LocalStore(tmp_path / "full")
    [full] = export_snapshot(uri, ["tk"], "2026-11-02", full_store, ExportOptions(workers=2, incremental=False))
    assert stored_rows(store, nxt.prefix, "k") == stored_rows(full_store, full.prefix, "k")


def test_a_manifest_boundary_holding_sql_is_only_ever_a_value(mutable_uri, tmp_path, small_chunks, sql_log):
    """A boundary rewritten in the stored manifest to "x'); DROP TABLE audio; --" runs no SQL:
    Postgres sees it as a value, which is not a uuid, so that base is not used (one log line) and
    every chunk is read again; the result equals a full export and audio is still there."""
    uri = mutable_uri
    store = LocalStore(tmp_path / "inc")
    [base] = export_snapshot(uri, ["audio"], "2026-11-01", store, ExportOptions(workers=2))
    path = store.local_path(f"{base.prefix}/_manifest.json")
    m = json.loads(path.read_text())
    evil = "x'); DROP TABLE audio; --"
    m["chunking"]["boundaries"][3] = evil
    path.write_text(json.dumps(m))
    lines: list[str] = []
    [nxt] = export_snapshot(uri, ["audio"], "2026-11-02", store, ExportOptions(workers=2), log=lines.append)
    assert nxt.manifest.timings["rows_exported"] == nxt.manifest.row_count == len(source_ids(uri))
    assert "not ascending values of the key" in nxt.manifest.chunking["not_reused"]
    assert any("not reusing any file of 2026-11-01" in line for line in lines)
    assert evil not in nxt.manifest.chunking["boundaries"]
    assert not [s for s in sql_log if "DROP TABLE" in s]
    with psycopg.connect(uri) as c:
        assert c.execute("SELECT to_regclass('audio') IS NOT NULL").fetchone()[0]
    full_store = LocalStore(tmp_path / "full")
    [full] = export_snapshot(uri, ["audio"], "2026-11-02", full_store, ExportOptions(workers=2, incremental=False))
    assert stored_rows(store, nxt.prefix) == stored_rows(full_store, full.prefix)
