"""Issue 15 without servers: a local commit is durable before it is visible (item 8), seed's
destroying flag (item 10), redaction of every URI form and of driver texts (item 12), the
public manifest and the Dagster metadata (item 13), and a documentation check that matches
columns by name, not position (item 15)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from store_contract import stage

from dataset_assets.storage.manifest import FileEntry, Manifest, encode_schema, root_hash
from dataset_assets.storage.stores import LocalStore

# --- item 8: fsync before the rename that makes a table snapshot visible -----------------


def test_local_commit_fsyncs_files_and_folders_before_the_rename(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    store.commit_dir(stage(store, "snap/d1/t", {"old.parquet": b"old"}), "snap/d1/t")
    staging = stage(store, "snap/d2/t", {"a.parquet": b"a" * 100, "sub/b.parquet": b"b", "_manifest.json": b"{}"})
    staging = staging.resolve()
    events: list[tuple] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst, *args, **kwargs):
        events.append(("rename", str(src), str(dst)))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    store.commit_dir(staging, "snap/d2/t", reuse={"reused.parquet": "snap/d1/t/old.parquet"})

    switch = next(i for i, e in enumerate(events) if e[0] == "rename" and e[1] == str(staging))
    before = {e[1] for e in events[:switch] if e[0] == "fsync"}
    after = {e[1] for e in events[switch:] if e[0] == "fsync"}
    new_files = {str(staging / n) for n in ("a.parquet", "sub/b.parquet", "_manifest.json", "_SUCCESS")}
    assert new_files <= before, sorted(before)
    assert {str(staging), str(staging / "sub")} <= before  # the folders' entries, reused links included
    assert str(store.local_path("snap/d2")) in after  # the rename itself
    assert store.read_bytes("snap/d2/t/reused.parquet") == b"old" and store.is_complete("snap/d2/t")


# --- item 10: the seeder's refusal names the flag that exists ----------------------------------


def test_seed_refusal_names_the_cli_flag():
    from dataset_assets import cli
    from dataset_assets.local import seed

    assert seed.DESTROY_FLAG == cli.DESTROY_FLAG == "--replace-tables-destroying-data"
    seed_parser = cli.build_parser()._subparsers._group_actions[0].choices["seed"]
    assert any(cli.DESTROY_FLAG in a.option_strings for a in seed_parser._actions)


# --- item 12: redaction -------------------------------------------------------------------------

SECRET_URIS = [
    ("postgresql://ann:s3cret-pw@db.example:5432/media", "s3cret-pw"),
    ("postgres://ann:s3cret-pw@db.example/media", "s3cret-pw"),
    ("postgresql://ann:p%40ss%3Aw%2Frd@db.example/media", "p%40ss%3Aw%2Frd"),  # encoded @ : /
    ("postgresql://ann:p@ss:wo@rd@db.example/media", "p@ss:wo@rd"),  # @ and : not encoded
    ("postgresql://ann:pa:ss:wd@db.example/media", "pa:ss:wd"),
    ("postgresql://ann:se/cret@db.example/media", "se/cret"),
    ("postgresql://ann:pa?sswd@db.example/media", "pa?sswd"),
    ("postgresql://db.example/media?user=ann&password=qs3cret&sslmode=require", "qs3cret"),
    ("postgresql://db.example/media?password=qs3cret", "qs3cret"),
    ("postgresql://ann:s3cret-pw@db.example/media?application_name=me@laptop", "s3cret-pw"),
]


@pytest.mark.parametrize("uri,secret", SECRET_URIS)
def test_redact_every_uri_form(uri, secret):
    from urllib.parse import unquote

    from dataset_assets.source.connect import identity, redact

    shown = redact(uri)
    assert secret not in shown and unquote(secret) not in shown, shown
    assert "***" in shown and "db.example" in shown
    inside = redact(f"could not use {uri} (timeout)")  # a URI inside a message
    assert secret not in inside and inside.startswith("could not use ") and inside.endswith(" (timeout)")
    ident = identity(uri)
    assert ident.host == "db.example" and ident.database == "media", ident
    assert not any(piece in str(ident) + json.dumps(ident.as_dict()) for piece in (secret, unquote(secret)))


def test_redact_keeps_uris_without_password_and_conninfo_passwords_go():
    from dataset_assets.source.connect import redact

    for plain in ("postgresql://ann@db.example:5432/media", "postgresql:///media?host=/tmp&port=5432",
                  "postgresql://?service=media", "s3://bucket/prefix"):
        assert redact(plain) == plain
    assert redact("host=db password='a b' user=ann") == "host=db password=*** user=ann"
    assert redact("PGPASSWORD=s3cret dataset-assets export") == "PGPASSWORD=*** dataset-assets export"


@pytest.mark.parametrize("uri,text", [
    # libpq misreading a password that holds '/' or '@' quotes a piece of it in its message
    ("postgresql://ann:se/cret@db.example/media",
     'IO: [libpq] Failed to connect: invalid integer value "se" for connection option "port"'),
    ("postgresql://ann:p@ss:wo@rd@db.example/media",
     'IO: [libpq] Failed to connect: invalid integer value "wo@rd@db.example" for connection option "port"'),
    ("postgresql://ann:s3cret-pw@db.example/media",
     'FATAL: password authentication failed for user "ann" (conninfo: password=s3cret-pw host=db.example)'),
])
def test_driver_texts_are_redacted(uri, text):
    from dataset_assets.source.connect import connection_error, redact_error, secrets

    import re

    pieces = secrets(uri)
    for shown in (redact_error(text, uri), str(connection_error(uri, RuntimeError(text)))):
        assert not any(s in shown for s in pieces if len(s) >= 4), shown  # the password, whole or in long pieces
        assert not any(s in quoted for quoted in re.findall(r'"[^"]*"', shown) for s in pieces), shown  # quoted values


def test_unencoded_at_or_slash_in_the_password_is_refused_without_showing_it():
    from dataset_assets.errors import SourceError
    from dataset_assets.source.connect import connect

    for uri in ("postgresql://ann:p@ss:wo@rd@127.0.0.1:9/media", "postgresql://ann:se/cret@127.0.0.1:9/media"):
        with pytest.raises(SourceError) as err:
            connect(uri)
        message = str(err.value)
        assert "percent-encoded" in message and "%40" in message and "PGPASSWORD" in message
        assert not any(p in message for p in ("p@ss", "wo@rd", "se/cret", "cret"))


def test_identity_follows_libpq_environment_and_services(monkeypatch):
    from dataset_assets.source.connect import identity

    for var in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE"):
        monkeypatch.delenv(var, raising=False)
    assert str(identity("postgresql://?service=media")) == "postgres@service media/postgres"
    monkeypatch.setenv("PGHOST", "db.example")
    monkeypatch.setenv("PGPORT", "6543")
    monkeypatch.setenv("PGUSER", "ann")
    monkeypatch.setenv("PGDATABASE", "media")
    assert str(identity("postgresql://")) == "ann@db.example:6543/media"


# --- item 13: the public manifest, the Dagster metadata, the preview switch -----------------


def _manifest(tmp_path: Path, source: dict) -> tuple[Manifest, LocalStore, str]:
    store = LocalStore(tmp_path / "store")
    prefix = "snapshots/2026-11-21/image"
    table = pa.table({"identifier": ["a", "b"], "secret_note": ["x", "y"]})
    staging = store.staging_dir(prefix)
    pq.write_table(table, staging / "train-00000-000.parquet")
    data = (staging / "train-00000-000.parquet").read_bytes()
    files = [FileEntry("train-00000-000.parquet", 2, len(data), hashlib.sha256(data).hexdigest(), chunk=0)]
    m = Manifest(table="image", snapshot="2026-11-21", row_count=2, files=files,
                 schema=[{"name": "identifier", "pg_type": "uuid", "arrow_type": "string", "nullable": False}],
                 arrow_schema=encode_schema(table.schema), source=source,
                 source_snapshot={"snapshot_id": "00000003-0000001B-1", "txid_snapshot": "745:745:", "server_version": "16.4"},
                 created_at="2026-11-21T00:00:00+00:00",
                 timings={"copy_seconds": 1.5, "rows_exported": 2, "backend_pid": 4242},
                 parquet={"compression": "zstd"}, filters={"exclude_removed_from_source": True},
                 chunking={"key": "identifier", "key_type": "uuid", "boundaries": ["0f"], "fingerprints": {"0": [2, 99]},
                           "basis": "ab" * 32, "base_snapshot": "2026-11-20", "changed_chunks": 1, "reused_files": 0},
                 primary_key="identifier", change_signal={"n_tup_ins": 5, "relfilenode": 16384})
    (staging / "_manifest.json").write_text(m.to_json())
    store.commit_dir(staging, prefix)
    return m, store, prefix


INTERNAL = ("db.internal", "5433", "ann", "media_prod", "00000003-0000001B-1", "745:745:", "16.4", "16384",
            "n_tup_ins", "backend_pid", "fingerprints", "basis", "system_identifier", "7301234567890123456")


def test_public_manifest_holds_nothing_internal():
    from dataset_assets.release.snapshot import public_manifest
    from dataset_assets.storage.manifest import parse_manifest

    m = Manifest(table="image", snapshot="2026-11-21", row_count=0, files=[], schema=[], arrow_schema="",
                 source={"host": "db.internal", "port": 5433, "database": "media_prod", "user": "ann"},
                 source_snapshot={"snapshot_id": "00000003-0000001B-1", "txid_snapshot": "745:745:"},
                 created_at="2026-11-21T00:00:00+00:00", timings={"copy_seconds": 1.0, "backend_pid": 4242},
                 chunking={"key": "identifier", "boundaries": ["x"], "fingerprints": {"0": [1, 2]}, "basis": "cd"},
                 change_signal={"n_tup_ins": 5, "relfilenode": 16384})
    raw = json.loads(m.to_json())
    raw["source_identity"] = {"system_identifier": "7301234567890123456", "timeline": 1}  # a field added later: blanked
    public = public_manifest(json.dumps(raw).encode())
    text = public.decode()
    assert not any(s in text for s in INTERNAL), text
    back = parse_manifest(public, "the public manifest", "image", "2026-11-21")  # still a loadable manifest
    assert back.root_hash == m.root_hash and back.source == {} and back.source_snapshot == {}
    assert back.timings == {"copy_seconds": 1.0} and back.chunking == {"key": "identifier"}


def test_public_manifest_keeps_files_and_root_hash(tmp_path):
    from dataset_assets.release.snapshot import public_manifest

    m, store, prefix = _manifest(tmp_path, {"host": "db.internal", "port": 5433, "database": "media_prod", "user": "ann"})
    public = json.loads(public_manifest(store.read_bytes(f"{prefix}/_manifest.json")))
    assert public["files"] == json.loads(m.to_json())["files"]
    assert public["root_hash"] == m.root_hash == root_hash([FileEntry(**f) for f in public["files"]])
    for kept in ("schema", "arrow_schema", "row_count", "filters", "parquet", "primary_key", "created_at", "format"):
        assert public[kept] == json.loads(m.to_json())[kept]


def test_dagster_metadata_shows_source_without_credentials_and_preview_can_be_off(tmp_path, monkeypatch):
    import yaml

    from dataset_assets.assets.metadata import table_metadata
    from dataset_assets.export.run import TableResult

    m, store, prefix = _manifest(tmp_path, {"host": "db.internal", "port": 5433, "database": "media_prod", "user": "ann",
                                            "password": "s3cret-pw"})
    result = TableResult("image", "2026-11-21", prefix, store.url, m)
    md = table_metadata(store, result)
    assert md["source"].data == {"host": "db.internal", "port": 5433, "database": "media_prod"}
    assert "secret_note" in md["preview"].md_str  # on by default: the first rows

    cfg = tmp_path / "tables.yaml"
    cfg.write_text(yaml.safe_dump({"tables": {"image": {"preview": False}}}))
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(cfg))
    md = table_metadata(store, result)
    assert "secret_note" not in md["preview"].md_str and "preview: false" in md["preview"].md_str
    shown = json.dumps({k: str(v) for k, v in md.items()})
    assert "s3cret-pw" not in shown and "ann" not in json.dumps(md["source"].data)


def test_preview_setting_is_checked(tmp_path, monkeypatch):
    import yaml

    from dataset_assets.errors import UserError
    from dataset_assets.tables import load_tables

    cfg = tmp_path / "tables.yaml"
    cfg.write_text(yaml.safe_dump({"tables": {"image": {"preview": "no"}}}))
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(cfg))
    with pytest.raises(UserError, match="image.preview to 'no'; it must be true or false"):
        load_tables()
    monkeypatch.delenv("DATASET_ASSETS_TABLES")
    assert all(t.preview for t in load_tables().values())  # on unless turned off


# --- item 15: the documentation check does not depend on column order --------------------------

_TYPNAMES = {"uuid": "uuid", "timestamp with time zone": "timestamptz", "integer": "int4", "text": "text",
             "jsonb": "jsonb", "boolean": "bool", "double precision": "float8", "character varying": "varchar"}


def real_schema(table: str):
    """The schema an export of ``table`` writes, from the seed's DDL (as in tests/unit/test_card.py)."""
    import re

    from dataset_assets.local.seed import TABLE_COLUMNS
    from dataset_assets.source.catalog import Column, TableInfo
    from dataset_assets.source.types import table_schema

    columns = []
    for name, ddl in TABLE_COLUMNS[table]:
        pg_type = re.split(r" NOT NULL| DEFAULT", ddl)[0].strip()
        base, length = re.fullmatch(r"(.*?)(?:\((\d+)\))?", pg_type.removesuffix("[]")).groups()
        columns.append(Column(name, pg_type, _TYPNAMES[base], pg_type.endswith("[]"), int(length) + 4 if length else -1,
                              "NOT NULL" not in ddl, "b"))
    return table_schema(TableInfo(table, 0, tuple(columns), ("identifier",), 8192))



def test_documentation_check_ignores_column_order():
    from dataset_assets.local.seed import TABLE_COLUMNS
    from dataset_assets.release.card.docs import check_documentation

    # the Openverse catalogue's real order (../shared/data/openverse-sample/README.md)
    real_order = {
        "image": ["identifier", "created_on", "updated_on", "ingestion_type", "provider", "source", "foreign_identifier",
                  "foreign_landing_url", "url", "thumbnail", "width", "height", "filesize", "license", "license_version",
                  "creator", "creator_url", "title", "meta_data", "tags", "watermarked", "last_synced_with_source",
                  "removed_from_source", "filetype", "category", "standardized_popularity"],
        "audio": ["identifier", "created_on", "updated_on", "ingestion_type", "provider", "source", "foreign_identifier",
                  "foreign_landing_url", "url", "thumbnail", "filetype", "duration", "bit_rate", "sample_rate", "category",
                  "genres", "audio_set", "set_position", "alt_files", "filesize", "license", "license_version", "creator",
                  "creator_url", "title", "meta_data", "tags", "watermarked", "last_synced_with_source",
                  "removed_from_source", "standardized_popularity", "audio_set_foreign_identifier"],
    }
    for table, order in real_order.items():
        live = {c["name"]: c for c in real_schema(table).describe()}
        assert sorted(order) == sorted(c for c, _ in TABLE_COLUMNS[table])
        assert check_documentation(table, [live[c] for c in order]) == []
        assert check_documentation(table, list(reversed(list(live.values())))) == []
