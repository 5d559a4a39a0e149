"""Issue 15 against real servers: S3 readers never see two versions mixed (item 8), every CLI
writer refuses a published date (item 9), ``seed`` leaves databases it did not make alone
(item 10), passwords from PGPASSWORD / .pgpass / PGSERVICE and never in output (item 12),
nothing internal in the manifests pushed to the Hub (item 13), and the real Openverse sample
rows in the catalogue's own column order through export, documentation check and card (item 15)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from platform_helpers import assert_one_sentence_error, run_cli
from store_contract import stage

from dataset_assets.storage.stores import SUCCESS, LocalStore

DATE = "2026-11-21"
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = Path(os.environ.get("DATASET_ASSETS_OPENVERSE_SAMPLE") or ROOT.parent / "shared" / "data" / "openverse-sample")


# --- item 8: S3 readers never mix two versions ----------------------------------------------------

PREFIX = "snapshots/2026-11-21/image"
NAMES = [f"train-{i:05d}-000.parquet" for i in range(4)]


def version_files(tag: str) -> dict[str, bytes]:
    """Shards named as every version names them, holding ``tag``, and a manifest listing their sha256."""
    files = {name: f"{tag}:{name}:".encode() * (200 + i) for i, name in enumerate(NAMES)}
    manifest = {"tag": tag, "files": [{"path": n, "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()]}
    return {**files, "_manifest.json": json.dumps(manifest).encode()}


def read_whole(store) -> str:
    """A reader: ``_SUCCESS`` and the manifest, then every file it lists, each checked against it.
    Returns the version's tag; raises FileNotFoundError if the version went away meanwhile."""
    assert store.is_complete(PREFIX)
    manifest = json.loads(store.read_bytes(f"{PREFIX}/_manifest.json"))
    for f in manifest["files"]:
        data = store.read_bytes(f"{PREFIX}/{f['path']}")
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f"{f['path']} is not of version {manifest['tag']}"
    return manifest["tag"]


def reader_for(s3_store, tmp_path):
    from dataset_assets.storage.stores.s3 import S3Store

    return S3Store.from_url(s3_store.url, staging_root=tmp_path / "reader-staging")


def test_s3_reader_that_read_the_manifest_never_gets_files_of_the_replacing_version(s3_store, tmp_path):
    s3_store.commit_dir(stage(s3_store, PREFIX, version_files("v1")), PREFIX)
    reader = reader_for(s3_store, tmp_path)
    assert reader.is_complete(PREFIX)
    manifest = json.loads(reader.read_bytes(f"{PREFIX}/_manifest.json"))
    assert manifest["tag"] == "v1"

    s3_store.commit_dir(stage(s3_store, PREFIX, version_files("v2")), PREFIX, replace=True)  # same names, new content

    for f in manifest["files"]:  # the files of the manifest it read: v1's, or gone; never v2's
        try:
            data = reader.read_bytes(f"{PREFIX}/{f['path']}")
        except FileNotFoundError:
            continue
        assert hashlib.sha256(data).hexdigest() == f["sha256"], "a v2 file read under the v1 manifest"
    assert read_whole(reader) == "v2"  # reading again from _SUCCESS and the manifest: v2, whole
    assert read_whole(reader_for(s3_store, tmp_path)) == "v2"
    assert reader.location(f"{PREFIX}/_manifest.json").startswith(f"s3://{s3_store.bucket}/store-root/{PREFIX}/.versions/")


def test_s3_readers_during_a_replace_see_the_old_version_whole(s3_store, tmp_path):
    """A reader run at every request the replacing commit makes (each upload, each copy, the
    version's marker and the switch) sees v1 complete and whole; right after the commit, v2."""
    s3_store.commit_dir(stage(s3_store, PREFIX, version_files("v1")), PREFIX)
    seen: list[str] = []

    def read_now(params=None, **kwargs):
        seen.append(read_whole(reader_for(s3_store, tmp_path)))

    for op in ("PutObject", "CreateMultipartUpload", "CopyObject", "DeleteObjects"):
        s3_store.client.meta.events.register(f"before-call.s3.{op}", read_now)
    files = version_files("v2")
    reuse = {NAMES[0]: f"{PREFIX}/{NAMES[0]}"}  # a server-side copy from the version being replaced
    files[NAMES[0]] = version_files("v1")[NAMES[0]]
    manifest = json.loads(files["_manifest.json"])
    manifest["files"][0]["sha256"] = hashlib.sha256(files.pop(NAMES[0])).hexdigest()
    files["_manifest.json"] = json.dumps(manifest).encode()
    s3_store.commit_dir(stage(s3_store, PREFIX, files), PREFIX, reuse=reuse, replace=True)
    for op in ("PutObject", "CreateMultipartUpload", "CopyObject", "DeleteObjects"):
        s3_store.client.meta.events.unregister(f"before-call.s3.{op}", read_now)

    # three uploads, one copy, the manifest, the version's marker and the pointer itself: v1 whole;
    # then the removal of v1, after the switch: v2 whole
    assert seen == ["v1"] * 7 + ["v2"], seen
    assert json.loads(s3_store.read_bytes(f"{PREFIX}/_manifest.json"))["files"][0]["sha256"] == manifest["files"][0]["sha256"]


def test_s3_concurrent_reader_and_replaces_never_mix(s3_store, tmp_path):
    s3_store.commit_dir(stage(s3_store, PREFIX, version_files("v0")), PREFIX)
    stop = threading.Event()
    results: dict[str, int] = {"whole": 0, "gone": 0}
    errors: list[BaseException] = []

    def reader_loop():
        reader = reader_for(s3_store, tmp_path)
        while not stop.is_set():
            try:
                read_whole(reader)
                results["whole"] += 1
            except FileNotFoundError:
                results["gone"] += 1  # the version it pinned was replaced and removed: an error, not a mix
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    thread = threading.Thread(target=reader_loop)
    thread.start()
    try:
        for i in range(1, 5):
            s3_store.commit_dir(stage(s3_store, PREFIX, version_files(f"v{i}")), PREFIX, replace=True)
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors[0]
    assert results["whole"] >= 1
    assert read_whole(reader_for(s3_store, tmp_path)) == "v4"


def test_s3_failed_replace_keeps_the_old_version_complete(s3_store, monkeypatch, tmp_path):
    from botocore.exceptions import ClientError

    from dataset_assets.errors import StoreError
    from dataset_assets.storage.stores.s3 import S3Store

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3_store.commit_dir(stage(s3_store, PREFIX, version_files("v1")), PREFIX)
    writer = S3Store.from_url(s3_store.url, staging_root=tmp_path / "w")
    calls = {"n": 0}

    def fail_third_upload(params=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "PutObject")

    writer.client.meta.events.register("before-call.s3.PutObject", fail_third_upload)
    with pytest.raises(StoreError):
        writer.commit_dir(stage(writer, PREFIX, version_files("v2")), PREFIX, replace=True)
    assert read_whole(reader_for(s3_store, tmp_path)) == "v1"
    assert [o.key.rsplit("/", 1)[1] for o in s3_store.list(PREFIX)] == [SUCCESS, "_manifest.json", *NAMES]
    raw = [o["Key"] for o in s3_store.client.list_objects_v2(Bucket=s3_store.bucket)["Contents"]]
    assert len(raw) == len(NAMES) + 3  # v1's files, its marker and the pointer: the partial v2 is gone


def test_s3_snapshot_of_the_older_layout_is_read_and_replaced(s3_store, tmp_path):
    """A table snapshot committed before versions (plain keys, an empty _SUCCESS) reads as before,
    and its replacement removes the plain keys once the new version is switched to."""
    for name, data in version_files("old").items():
        s3_store.put_bytes(f"{PREFIX}/{name}", data)
    s3_store.put_bytes(f"{PREFIX}/{SUCCESS}", b"")
    assert read_whole(reader_for(s3_store, tmp_path)) == "old"
    s3_store.commit_dir(stage(s3_store, PREFIX, version_files("new")), PREFIX, replace=True)
    assert read_whole(reader_for(s3_store, tmp_path)) == "new"
    raw = [o["Key"] for o in s3_store.client.list_objects_v2(Bucket=s3_store.bucket)["Contents"]]
    assert sum(1 for k in raw if "/.versions/" not in k) == 1  # only the pointer outside the version


def test_s3_exports_on_versions(seeded_uri, s3_store):
    """The export on S3 with versions: a snapshot, the next date reusing its shards (server-side
    copies from the other date's version), that date replaced (reusing from the version it
    replaces), and every date verifies."""
    from dataset_assets.export.run import ExportOptions, export_snapshot
    from dataset_assets.storage.verify import verify_snapshot

    export_snapshot(seeded_uri, ["audio"], "2026-11-20", s3_store, ExportOptions(workers=2))
    [nxt] = export_snapshot(seeded_uri, ["audio"], DATE, s3_store, ExportOptions(workers=2))
    [again] = export_snapshot(seeded_uri, ["audio"], DATE, s3_store, ExportOptions(workers=2, force=True))
    assert nxt.manifest.files and all(f.reused_from for f in nxt.manifest.files + again.manifest.files)
    for date in ("2026-11-20", DATE):
        [report] = verify_snapshot(s3_store, date, ["audio"])
        assert report.ok and report.files_checked == len(nxt.manifest.files), report.problems


# --- item 9: every CLI writer refuses a published date ------------------------------------------


def test_cli_export_refuses_a_published_or_releasing_date(seeded_uri, tmp_path):
    from dataset_assets.storage.release_state import begin_release, end_release, mark_published

    store_dir = tmp_path / "store"
    args = ["export", "--table", "audio", "--snapshot", DATE, "--source", seeded_uri, "--store", str(store_dir)]
    assert run_cli(*args).returncode == 0
    store = LocalStore(store_dir)
    key = f"snapshots/{DATE}/audio/_manifest.json"
    before = store.read_bytes(key)

    begin_release(store, DATE, {"repo_id": "org/media"})
    p = run_cli(*args, "--force")
    assert_one_sentence_error(p, f"The push of snapshot {DATE} to the Hub is running or was interrupted")
    end_release(store, DATE)

    mark_published(store, DATE, {"repo_id": "org/media"})
    for extra in (["--force"], [], ["--skip-existing"], ["--force", "--full"]):
        p = run_cli(*args, *extra)
        assert_one_sentence_error(p, f"Snapshot {DATE} was published to org/media and is immutable")
    assert store.read_bytes(key) == before
    assert not (store_dir / ".staging").exists() or not any((store_dir / ".staging").iterdir())


# --- item 10: seed leaves databases it did not make alone ------------------------------------------


def test_cli_seed_refuses_a_database_it_did_not_make(fresh_db):
    uri = fresh_db("foreign")
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("CREATE TABLE image (identifier uuid PRIMARY KEY, note text NOT NULL)")
        c.execute("INSERT INTO image VALUES (gen_random_uuid(), 'real data')")
    p = run_cli("seed", "--rows", "20", "--tables", "image", "--source", uri)
    assert_one_sentence_error(p, "--replace-tables-destroying-data", "dataset_assets_seeded", "image")
    with psycopg.connect(uri) as c:  # untouched
        assert c.execute("SELECT note FROM image").fetchall() == [("real data",)]
        assert c.execute("SELECT to_regclass('deleted_image')").fetchone() == (None,)
    # the same through the environment variable
    p = run_cli("seed", "--rows", "20", "--tables", "image", env={"DATASET_ASSETS_SOURCE_URI": uri})
    assert_one_sentence_error(p, "--replace-tables-destroying-data")

    p = run_cli("seed", "--rows", "20", "--tables", "image", "--source", uri, "--replace-tables-destroying-data")
    assert p.returncode == 0, p.stderr
    with psycopg.connect(uri) as c:
        assert c.execute("SELECT count(*) FROM image").fetchone() == (20,)
        assert c.execute("SELECT table_name, rows FROM dataset_assets_seeded").fetchall() == [("image", 20)]
    # made by seed now: seeding it again needs no flag
    p = run_cli("seed", "--rows", "30", "--tables", "image", "--source", uri)
    assert p.returncode == 0, p.stderr
    with psycopg.connect(uri) as c:
        assert c.execute("SELECT count(*) FROM image").fetchone() == (30,)


def test_seed_python_api_and_the_cli_default(fresh_db, monkeypatch, capsys):
    from dataset_assets import cli
    from dataset_assets.local import env as local_env
    from dataset_assets.local.seed import ForeignDatabase, seed

    uri = fresh_db("api")
    with pytest.raises(ForeignDatabase, match="--replace-tables-destroying-data"):
        seed(uri, tables=["audio"], rows=10, only_seeded_database=True)
    assert seed(uri, tables=["audio"], rows=10)["audio"] == 10  # the Python API's default: as before

    # the command line without --source or DATASET_ASSETS_SOURCE_URI seeds the embedded demo
    # database (here a stand-in for it): no flag needed, even though seed did not make it
    demo = fresh_db("demo")
    monkeypatch.delenv("DATASET_ASSETS_SOURCE_URI", raising=False)
    monkeypatch.setattr(local_env, "default_source_uri", lambda: demo)
    assert cli.main(["seed", "--rows", "5", "--tables", "image"]) == 0
    with psycopg.connect(demo) as c:
        assert c.execute("SELECT count(*) FROM image").fetchone() == (5,)


# --- item 12: passwords from PGPASSWORD, .pgpass and PGSERVICE; none in output --------------------

ROLE, PASSWORD = "da_pgpass", "p@ss:w/rd-7"


@pytest.fixture
def password_role(pg_server_uri, fresh_db):
    """A role that must give its password (scram-sha-256 for it in pg_hba.conf), and a database
    with a seeded table it may read. Returns (host, port, database)."""
    if os.environ.get("DATASET_ASSETS_TEST_PG_URI"):
        pytest.skip("needs the embedded server, whose authentication the test configures")
    from dataset_assets.local.seed import seed

    with psycopg.connect(pg_server_uri, autocommit=True) as c:
        hba = c.execute("SHOW hba_file").fetchone()[0]
        c.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN "
                  f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'; END IF; END $$")
        c.execute(f"ALTER ROLE {ROLE} PASSWORD '{PASSWORD}'")
    text = Path(hba).read_text()
    line = f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n"
    if line not in text:
        Path(hba).write_text(line + text)
        with psycopg.connect(pg_server_uri, autocommit=True) as c:
            c.execute("SELECT pg_reload_conf()")
    uri = fresh_db("pw")
    seed(uri, tables=["audio"], rows=300, seed=3)
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ROLE}")
    u = urlsplit(uri)
    return u.hostname, u.port, u.path.lstrip("/")


def test_cli_export_with_the_password_from_pgpassword_pgpass_and_pgservice(password_role, tmp_path):
    host, port, db = password_role
    bare = f"postgresql://{ROLE}@{host}:{port}/{db}"
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{host}:{port}:*:{ROLE}:{PASSWORD.replace(':', chr(92) + ':')}\n")
    pgpass.chmod(0o600)
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[media]\nhost={host}\nport={port}\nuser={ROLE}\ndbname={db}\n")
    empty_home = {"HOME": str(tmp_path), "PGPASSFILE": str(tmp_path / "none")}

    # no password anywhere: one sentence that says where to put it
    p = run_cli("export", "--table", "audio", "--snapshot", DATE, "--source", bare, "--store", str(tmp_path / "s0"), env=empty_home)
    assert_one_sentence_error(p, ROLE, "PGPASSWORD", ".pgpass", "PGSERVICE")

    ways = {
        "PGPASSWORD": (bare, {**empty_home, "PGPASSWORD": PASSWORD}),
        "PGPASSFILE": (bare, {**empty_home, "PGPASSFILE": str(pgpass)}),
        "PGSERVICE": ("postgresql://", {**empty_home, "PGPASSFILE": str(pgpass), "PGSERVICE": "media",
                                        "PGSERVICEFILE": str(services)}),
        "?service=": ("postgresql://?service=media", {**empty_home, "PGPASSFILE": str(pgpass), "PGSERVICEFILE": str(services)}),
    }
    for i, (way, (source, env)) in enumerate(ways.items()):
        store_dir = tmp_path / f"s{i + 1}"
        p = run_cli("export", "--table", "audio", "--snapshot", DATE, "--source", source, "--store", str(store_dir), env=env)
        assert p.returncode == 0, f"{way}: {p.stderr}"
        manifest = (store_dir / "snapshots" / DATE / "audio" / "_manifest.json").read_text()
        assert json.loads(manifest)["row_count"] > 0
        assert PASSWORD not in p.stdout + p.stderr + manifest, way


def test_wrong_or_misencoded_passwords_never_appear(password_role, tmp_path):
    host, port, db = password_role
    quoted = PASSWORD.replace("@", "%40").replace(":", "%3A").replace("/", "%2F")
    ok = run_cli("export", "--table", "audio", "--snapshot", DATE, "--source", f"postgresql://{ROLE}:{quoted}@{host}:{port}/{db}",
                 "--store", str(tmp_path / "ok"))
    assert ok.returncode == 0, ok.stderr  # a percent-encoded password works
    for source, needles in [
        (f"postgresql://{ROLE}:{PASSWORD}@{host}:{port}/{db}", ("percent-encoded", "%40")),  # '@' and '/' as they are
        (f"postgresql://{ROLE}:Wr0ng%40secret@{host}:{port}/{db}", (ROLE, "password")),
        (f"postgresql://{host}:{port}/{db}?user={ROLE}&password=Wr0ng-secret", (ROLE, "password")),
    ]:
        p = run_cli("export", "--table", "audio", "--snapshot", DATE, "--source", source, "--store", str(tmp_path / "s"))
        assert_one_sentence_error(p, *needles)
        out = p.stdout + p.stderr
        assert not any(s in out for s in (PASSWORD, quoted, "p@ss", "w/rd", "Wr0ng", "secret")), out


# --- item 13: nothing internal in what is pushed to the Hub -------------------------------------------


def test_manifests_pushed_to_the_hub_hold_nothing_internal(seeded_uri, hub_server, tmp_path):
    from dataset_assets.export.run import ExportOptions, export_snapshot
    from dataset_assets.release.card import write_card
    from dataset_assets.release.hub import publish_snapshot
    from dataset_assets.storage.manifest import Manifest, load_manifest, root_hash

    store = LocalStore(tmp_path / "store")
    export_snapshot(seeded_uri, ["audio"], DATE, store, ExportOptions(workers=2))
    write_card(store, DATE)
    stored = load_manifest(store, f"snapshots/{DATE}/audio", "audio", DATE)
    u = urlsplit(seeded_uri)
    internal = [u.hostname, f'"port": {u.port}', u.path.lstrip("/"), stored.source_snapshot["snapshot_id"],
                stored.source_snapshot["txid_snapshot"], '"user"', '"host"', "change_signal\": {", "fingerprints"]
    assert all(s in store.read_bytes(f"snapshots/{DATE}/audio/_manifest.json").decode() for s in internal[:5])

    result = publish_snapshot(store, DATE, "org/media", token=hub_server.token, endpoint=hub_server.endpoint,
                              retry_wait=0.01, log=lambda m: None)
    pushed = hub_server.read("org/media", "audio/_manifest.json", result.tag)
    text = pushed.decode()
    assert not [s for s in internal if s in text], text
    assert result.manifests == (pushed,)  # what the release reads back is what was pushed
    card = hub_server.read("org/media", "README.md", result.tag).decode()
    assert not [s for s in internal[:5] if s in card]
    public = Manifest.from_json(pushed)
    assert public.root_hash == stored.root_hash == root_hash(public.files)
    assert [f.sha256 for f in public.files] == [f.sha256 for f in stored.files] and public.row_count == stored.row_count
    again = publish_snapshot(store, DATE, "org/media", token=hub_server.token, endpoint=hub_server.endpoint,
                             retry_wait=0.01, log=lambda m: None)
    assert not again.committed  # the pushed manifest verifies against the snapshot: nothing to redo


# --- item 15: real Openverse rows in the catalogue's own column order --------------------------------

# The catalogue's column order (SAMPLE/README.md): image as its CSV header; in audio, filetype,
# duration, bit_rate, sample_rate, category, genres, audio_set, set_position, alt_files come before filesize.
AUDIO_ORDER = ["identifier", "created_on", "updated_on", "ingestion_type", "provider", "source", "foreign_identifier",
               "foreign_landing_url", "url", "thumbnail", "filetype", "duration", "bit_rate", "sample_rate", "category",
               "genres", "audio_set", "set_position", "alt_files", "filesize", "license", "license_version", "creator",
               "creator_url", "title", "meta_data", "tags", "watermarked", "last_synced_with_source",
               "removed_from_source", "standardized_popularity", "audio_set_foreign_identifier"]
CSV = {"image": "sample_images_to_clean.csv", "audio": "sample_audio_data.csv"}


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return fh.readline().strip().split(",")


def load_openverse_sample(uri: str) -> dict[str, int]:
    """The sample's tables as the real catalogue has them (its column order; a primary key on
    identifier, no index on updated_on; tombstone tables without a primary key), filled with
    COPY ... (FORMAT csv, HEADER true). Returns the rows loaded per table."""
    from dataset_assets.local.seed import TABLE_COLUMNS

    if not SAMPLE.is_dir():
        pytest.fail(f"the Openverse sample is not at {SAMPLE}; set DATASET_ASSETS_OPENVERSE_SAMPLE to its folder")
    loaded = {}
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("SET timezone = 'UTC'")
        for table, csv_name in CSV.items():
            types = dict(TABLE_COLUMNS[table])
            order = _header(SAMPLE / CSV["image"]) if table == "image" else AUDIO_ORDER
            assert sorted(order) == sorted(types), table
            cols = ",\n  ".join(f"{name} {types[name].replace(' DEFAULT gen_random_uuid()', '')}" for name in order)
            c.execute(f"CREATE TABLE {table} (\n  {cols},\n  CONSTRAINT {table}_pkey PRIMARY KEY (identifier))")
            c.execute(f"CREATE UNIQUE INDEX {table}_provider_fid_idx ON {table} (provider, md5(foreign_identifier))")
            c.execute(f"CREATE TABLE deleted_{table} (LIKE {table}, deleted_on timestamptz NOT NULL, deleted_reason varchar(80))")
            c.execute(f"CREATE UNIQUE INDEX deleted_{table}_identifier_key ON deleted_{table} (identifier)")
            named = _header(SAMPLE / csv_name)
            with c.cursor() as cur:
                with cur.copy(f"COPY {table} ({', '.join(named)}) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                    copy.write((SAMPLE / csv_name).read_bytes())
            loaded[table] = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            c.execute(f"ANALYZE {table}")
    return loaded


def test_real_openverse_rows_in_the_real_column_order(fresh_db, tmp_path):
    from dataset_assets.export.run import ExportOptions, export_snapshot
    from dataset_assets.release.card import build_card, write_card
    from dataset_assets.release.card.docs import check_documentation
    from dataset_assets.storage.manifest import load_manifest
    from dataset_assets.storage.verify import verify_snapshot

    uri = fresh_db("openverse")
    loaded = load_openverse_sample(uri)
    assert loaded == {"image": 1899, "audio": 100}
    with psycopg.connect(uri) as c:
        expected = {t: c.execute(f"SELECT count(*) FROM {t} WHERE NOT removed_from_source").fetchone()[0] for t in CSV}
    assert expected["image"] == 1899 - 525

    store = LocalStore(tmp_path / "store")
    results = export_snapshot(uri, ["image", "audio"], DATE, store, ExportOptions(workers=2))
    assert {r.table: r.rows for r in results} == expected
    for table in CSV:
        manifest = load_manifest(store, f"snapshots/{DATE}/{table}", table, DATE)
        names = [c["name"] for c in manifest.schema]
        assert names == (_header(SAMPLE / CSV["image"]) if table == "image" else AUDIO_ORDER)  # the table's order
        assert check_documentation(table, manifest.schema) == []
    assert all(r.ok for r in verify_snapshot(store, DATE))

    card = build_card(store, DATE)
    assert card.problems == []
    write_card(store, DATE)
    text = store.read_bytes(f"snapshots/{DATE}/README.md").decode()
    fields = text[text.index("thumbnail"):]
    assert fields.index("`width`") < fields.index("`filesize`")  # the card lists columns in the table's order
