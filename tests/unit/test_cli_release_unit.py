"""The release's checks and skips (``release/checks.py``) on hand-written snapshots, and the
``card``, ``release`` and ``register`` commands where they need no server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from platform_helpers import assert_one_sentence_error, run_cli

from dataset_assets.release import checks
from dataset_assets.storage.layout import card_key, table_prefix
from dataset_assets.storage.manifest import FileEntry, Manifest
from dataset_assets.storage.release_state import mark_published
from dataset_assets.storage.stores import MANIFEST, SUCCESS, LocalStore

DATE, EARLIER = "2026-01-05", "2026-01-04"


def write_table(store: LocalStore, date: str, table: str, rows: int, *, counted: int | None = None,
                txid: str = "100:100:", content: bytes = b"shard") -> Manifest:
    """A complete table snapshot with one (fake) shard and a manifest that describes it."""
    prefix = table_prefix(date, table)
    folder = Path(store.local_path(prefix))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-00000-000.parquet").write_bytes(content)
    entry = FileEntry(path="train-00000-000.parquet", rows=rows, bytes=len(content), sha256=hashlib.sha256(content).hexdigest())
    m = Manifest(table=table, snapshot=date, row_count=rows, files=[entry], schema=[], arrow_schema="", source={},
                 source_snapshot={"txid_snapshot": txid, "taken_at": "2026-01-05T00:00:00+00:00"},
                 created_at="2026-01-05T00:00:00+00:00",
                 timings={"source_rows_counted": rows if counted is None else counted, "count_check": "separate query"})
    (folder / MANIFEST).write_text(m.to_json())
    (folder / SUCCESS).write_text("")
    return m


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_a_failed_check_is_one_sentence_naming_table_and_check():
    r = checks.CheckResult("audio", "checksums_verify", passed=False, description="audio/x.parquet: missing; export again.")
    assert r.sentence(DATE) == ("The blocking check checksums_verify failed for table audio of snapshot 2026-01-05: "
                                "audio/x.parquet: missing; export again.")
    date_level = checks.CheckResult(checks.CARD, "one_postgres_snapshot", passed=False, description="two snapshots")
    assert "for the tables of snapshot 2026-01-05" in date_level.sentence(DATE)


def test_table_checks_on_a_stored_snapshot(store):
    write_table(store, EARLIER, "image", 100)
    write_table(store, DATE, "image", 40, counted=41)
    r = checks.rows_match_source(store, DATE, "image")
    assert not r.passed and r.metadata["source_rows"] == 41 and "source counted 41, snapshot holds 40" in r.description
    r = checks.rows_not_collapsed(store, DATE, "image", limit=0.5)
    assert not r.passed and r.metadata["previous_snapshot"] == EARLIER and "60% fewer" in r.description
    assert checks.rows_not_collapsed(store, DATE, "image", limit=0.7).passed
    assert checks.checksums_verify(store, DATE, "image").passed
    shard = Path(store.local_path(f"{table_prefix(DATE, 'image')}/train-00000-000.parquet"))
    shard.write_bytes(b"SHARD")  # same size, other bytes
    r = checks.checksums_verify(store, DATE, "image")
    assert not r.passed and "sha256" in r.description and r.description.endswith(f"dataset-assets export --snapshot {DATE} --force)")


def test_one_postgres_snapshot_and_tables_ready(store):
    write_table(store, DATE, "image", 10)
    assert checks.tables_ready(store, DATE, ["image", "audio"]) == "audio not complete"
    write_table(store, DATE, "audio", 10, txid="200:200:")
    r = checks.one_postgres_snapshot(store, DATE)
    assert not r.passed and set(r.metadata["postgres_snapshots"]) == {"image", "audio"}
    assert "come from 2 Postgres snapshots" in r.description
    assert checks.tables_ready(store, DATE, ["image", "audio"]) == "the tables come from 2 Postgres snapshots"
    write_table(store, DATE, "audio", 10)
    assert checks.one_postgres_snapshot(store, DATE).passed
    assert checks.tables_ready(store, DATE, ["image", "audio"]) is None


def test_the_card_is_current_while_it_names_every_root_hash(store):
    image = write_table(store, DATE, "image", 10)
    audio = write_table(store, DATE, "audio", 10)
    assert checks.card_is_current(store, DATE) == "no card yet"
    store.put_bytes(card_key(DATE), f"# card\n`{image.root_hash}`\n`{audio.root_hash}`\n".encode())
    assert checks.card_is_current(store, DATE) is None
    write_table(store, DATE, "audio", 11, content=b"other shard")  # audio exported again
    assert checks.card_is_current(store, DATE) == "the card does not describe the stored audio"


def test_dagster_checks_wrap_the_shared_results():
    import dagster as dg

    from dataset_assets.assets.checks import check_result

    r = check_result(checks.CheckResult(checks.CARD, "one_postgres_snapshot", passed=True,
                                        metadata={"postgres_snapshots": {"image": "a"}, "n": 2}))
    assert r.passed and r.description is None
    assert isinstance(r.metadata["postgres_snapshots"], dg.JsonMetadataValue) and r.metadata["n"].value == 2


def test_card_refuses_a_released_date(store, tmp_path):
    write_table(store, DATE, "image", 10)
    mark_published(store, DATE, {"repo_id": "org/name"})
    p = run_cli("card", "--snapshot", DATE, "--store", str(tmp_path / "store"))
    assert_one_sentence_error(p, f"Snapshot {DATE} was published to org/name and is immutable")
    assert not store.exists(card_key(DATE))


def test_release_needs_a_repo(store, tmp_path):
    p = run_cli("release", "--snapshot", DATE, "--store", str(tmp_path / "store"), env={"DATASET_ASSETS_HF_REPO": ""})
    assert_one_sentence_error(p, "--repo", "DATASET_ASSETS_HF_REPO")


def test_register_adds_the_date_to_the_instance(tmp_path):
    home = tmp_path / "dagster_home"
    missing = run_cli("register", "--snapshot", DATE, env={"DAGSTER_HOME": str(home)})
    assert_one_sentence_error(missing, "DAGSTER_HOME is", "not a folder")
    home.mkdir()
    first = run_cli("register", "--snapshot", DATE, env={"DAGSTER_HOME": str(home)})
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"registered snapshot date {DATE}") and f"--partition {DATE}" in first.stdout
    again = run_cli("register", "--snapshot", DATE, env={"DAGSTER_HOME": str(home)})
    assert again.returncode == 0 and again.stdout.startswith("already registered:"), again.stderr
    bad = run_cli("register", "--snapshot", "2026-13-01", env={"DAGSTER_HOME": str(home)})
    assert_one_sentence_error(bad, "2026-13-01")

    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions("snapshots") == [DATE]


def test_the_parser_knows_the_new_commands():
    from dataset_assets.cli import build_parser

    args = build_parser().parse_args(["release", "--snapshot", DATE, "--repo", "o/n", "--no-gate", "--workers", "2"])
    assert (args.command, args.repo, args.no_gate, args.workers) == ("release", "o/n", True, 2)
    assert build_parser().parse_args(["card", "--snapshot", DATE, "--force"]).force
    assert json.dumps(vars(build_parser().parse_args(["register", "--snapshot", DATE])), default=str)
