"""The command line: bad input gets one clear sentence and a non-zero exit;
a killed export leaves nothing that looks complete, and a rerun completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from platform_helpers import assert_one_sentence_error, run_cli

DATE = "2026-11-21"


def test_unknown_table(seeded_uri, tmp_path):
    p = run_cli("export", "--table", "imagez", "--snapshot", DATE, "--source", seeded_uri, "--store", str(tmp_path))
    assert_one_sentence_error(p, "imagez", "audio, image")


def test_malformed_date(seeded_uri, tmp_path):
    for bad in ("2026-13-01", "21-11-2026", "yesterday", "2026-11-21T00:00"):
        p = run_cli("export", "--table", "image", "--snapshot", bad, "--source", seeded_uri, "--store", str(tmp_path))
        assert_one_sentence_error(p, bad, "YYYY-MM-DD")


def test_wrong_credentials(seeded_uri, pg_server_uri, tmp_path):
    if os.environ.get("DATASET_ASSETS_TEST_PG_URI"):
        pytest.skip("needs the embedded server, whose authentication the test configures")
    with psycopg.connect(pg_server_uri, autocommit=True) as c:
        hba = c.execute("SHOW hba_file").fetchone()[0]
        c.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'da_secured') THEN CREATE ROLE da_secured LOGIN PASSWORD 'right'; END IF; END $$")
    text = Path(hba).read_text()
    line = "host all da_secured 127.0.0.1/32 scram-sha-256\n"
    if line not in text:
        Path(hba).write_text(line + text)
        with psycopg.connect(pg_server_uri, autocommit=True) as c:
            c.execute("SELECT pg_reload_conf()")
    from urllib.parse import urlsplit

    u = urlsplit(seeded_uri)
    bad = f"postgresql://da_secured:wrong-secret@{u.hostname}:{u.port}{u.path}"
    p = run_cli("export", "--table", "image", "--snapshot", DATE, "--source", bad, "--store", str(tmp_path))
    assert_one_sentence_error(p, "da_secured", "password")
    assert "wrong-secret" not in p.stderr + p.stdout


def test_sql_metacharacters_in_table_name(seeded_uri, fresh_db, tmp_path):
    uri = fresh_db("meta")
    evil = 'x"; DROP TABLE victim; --'
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute("CREATE TABLE victim (identifier uuid PRIMARY KEY)")
        c.execute('CREATE TABLE "x""; DROP TABLE victim; --" (identifier uuid PRIMARY KEY, v text)')
        c.execute('INSERT INTO "x""; DROP TABLE victim; --" VALUES (gen_random_uuid(), \'ok\')')
    cfg = tmp_path / "tables.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({"tables": {evil: {"primary_key": "identifier"}, "victim": {}}}))
    env = {"DATASET_ASSETS_TABLES": str(cfg)}
    p = run_cli("export", "--table", evil, "--snapshot", DATE, "--source", uri, "--store", str(tmp_path / "s"), env=env)
    assert p.returncode == 0, p.stderr
    with psycopg.connect(uri) as c:
        assert c.execute("SELECT count(*) FROM victim").fetchone() == (0,)
    # an unknown name full of metacharacters is just an unknown name
    p = run_cli("export", "--table", "image'; DROP TABLE victim; --", "--snapshot", DATE, "--source", uri, "--store", str(tmp_path / "s"))
    assert_one_sentence_error(p, "Unknown table")


def test_store_not_writable(seeded_uri, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    p = run_cli("export", "--table", "audio", "--snapshot", DATE, "--source", seeded_uri, "--store", str(blocker / "store"))
    assert_one_sentence_error(p, "Cannot create the store folder", "choose a writable --store")


def test_disk_full_leaves_nothing_visible(seeded_uri, store, monkeypatch):
    """Shards are written to /dev/full, so the kernel answers ENOSPC for real."""
    from dataset_assets.export import shards as writer_mod
    from dataset_assets.export.run import export_snapshot
    from dataset_assets.errors import StoreError

    real = writer_mod.StagedWriter

    def to_full_disk(where, *a, **kw):
        return real(open("/dev/full", "wb", buffering=0), *a, **kw)

    monkeypatch.setattr(writer_mod, "StagedWriter", to_full_disk)
    with pytest.raises(StoreError, match=r"is full; free space"):
        export_snapshot(seeded_uri, ["image"], DATE, store)
    monkeypatch.setattr(writer_mod, "StagedWriter", real)
    assert not store.exists(f"snapshots/{DATE}/image")
    assert list((store.root / ".staging").glob("*")) == []


def test_sigkill_leaves_no_success_and_rerun_completes(fresh_db, tmp_path):
    from dataset_assets.local.seed import seed
    from dataset_assets.storage.stores import LocalStore

    uri = fresh_db("kill")
    seed(uri, tables=["image"], rows=40000, seed=3)
    store_dir = tmp_path / "store"
    args = ["export", "--table", "image", "--snapshot", DATE, "--source", uri, "--store", str(store_dir), "--workers", "1", "--shard-mib", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "dataset_assets.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    staging = store_dir / ".staging"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if staging.exists() and len(list(staging.rglob("*.parquet"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "export finished before it could be killed; make the table bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = LocalStore(store_dir)
    final = f"snapshots/{DATE}/image"
    assert not store.exists(f"{final}/_SUCCESS")
    assert not store.exists(final)
    p = run_cli(*args)
    assert p.returncode == 0, p.stderr
    assert store.exists(f"{final}/_SUCCESS")
    assert list(staging.glob("*")) == []
    v = run_cli("verify", "--snapshot", DATE, "--store", str(store_dir))
    assert v.returncode == 0, v.stdout + v.stderr


def test_verify_cli_names_the_bad_file(seeded_uri, tmp_path):
    store_dir = tmp_path / "store"
    # --full with 1 MiB shards, so there are several files: one to flip a byte in, one to lose
    assert run_cli("export", "--table", "audio", "--snapshot", DATE, "--source", seeded_uri, "--store", str(store_dir),
                   "--full", "--shard-mib", "1").returncode == 0
    shard = sorted((store_dir / "snapshots" / DATE / "audio").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    p = run_cli("verify", "--snapshot", DATE, "--store", str(store_dir))
    assert p.returncode == 1
    assert shard.name in p.stdout
    missing = sorted((store_dir / "snapshots" / DATE / "audio").glob("*.parquet"))[-1]
    assert missing != shard
    missing.unlink()
    p = run_cli("verify", "--snapshot", DATE, "--store", str(store_dir))
    assert p.returncode == 1
    assert missing.name in p.stdout and "missing" in p.stdout
    assert shard.name in p.stdout


def test_bad_numbers(seeded_uri, tmp_path):
    base = ["export", "--table", "audio", "--snapshot", DATE, "--source", seeded_uri, "--store", str(tmp_path)]
    for workers in ("0", "-1"):
        assert_one_sentence_error(run_cli(*base, "--workers", workers), "--workers must be at least 1")
    assert_one_sentence_error(run_cli(*base, "--shard-mib", "4096"), "Shard size", "between 1 MiB and 2 GiB")


def test_verify_bad_input(seeded_uri, tmp_path):
    store_dir = tmp_path / "store"
    assert run_cli("export", "--table", "audio", "--snapshot", DATE, "--source", seeded_uri, "--store", str(store_dir)).returncode == 0
    assert_one_sentence_error(run_cli("verify", "--snapshot", "yesterday", "--store", str(store_dir)), "yesterday", "YYYY-MM-DD")
    assert_one_sentence_error(run_cli("verify", "--snapshot", "2026-01-01", "--store", str(store_dir)), "no snapshot 2026-01-01")
    assert_one_sentence_error(run_cli("verify", "--snapshot", DATE, "--table", "image", "--store", str(store_dir)),
                              "has no table 'image'", "audio")


def test_bad_table_configuration(seeded_uri, tmp_path):
    base = ["export", "--table", "audio", "--snapshot", DATE, "--source", seeded_uri, "--store", str(tmp_path / "s")]
    cases = {
        "typo.yaml": ("tables:\n  audio:\n    primary_keys: identifier\n", ["typo.yaml", "primary_keys", "chunk_rows"]),
        "broken.yaml": ("tables:\n  audio: [unclosed\n", ["broken.yaml", "not valid YAML", "line"]),
        "empty.yaml": ("# nothing here\n", ["empty.yaml", "no 'tables:' mapping"]),
        "flag.yaml": ("tables:\n  audio: yes\n", ["flag.yaml", "must map each table name to its settings", "'audio'"]),
        "words.yaml": ("tables:\n  audio:\n    chunk_rows: many\n", ["words.yaml", "audio.chunk_rows", "whole number"]),
        "zero.yaml": ("tables:\n  audio:\n    chunk_rows: 0\n", ["zero.yaml", "audio.chunk_rows", "at least 1"]),
        "scalar.yaml": ("tables:\n  audio:\n    columns: title\n", ["scalar.yaml", "audio.columns", "list of column names"]),
        "switch.yaml": ("tables:\n  audio:\n    incremental: maybe\n", ["switch.yaml", "audio.incremental", "true or false"]),
    }
    for name, (text, needles) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        assert_one_sentence_error(run_cli(*base, env={"DATASET_ASSETS_TABLES": str(path)}), *needles)


def test_verify_reports_a_damaged_manifest(seeded_uri, tmp_path):
    store_dir = tmp_path / "store"
    assert run_cli("export", "--table", "audio", "--snapshot", DATE, "--source", seeded_uri, "--store", str(store_dir)).returncode == 0
    manifest = store_dir / "snapshots" / DATE / "audio" / "_manifest.json"
    for damage in (manifest.read_bytes()[:200], b'{"table": "audio"}'):  # truncated; not a manifest's fields
        manifest.write_bytes(damage)
        p = run_cli("verify", "--snapshot", DATE, "--store", str(store_dir))
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        assert "BAD" in p.stdout and "_manifest.json" in p.stdout and "is damaged" in p.stdout, p.stdout
