"""Publishing from the platform: the ``hub_release`` asset, the ``publish`` CLI and the webhook, against a real
Postgres, a real Dagster instance and the local Hub (``hub_server``), with the real ``datasets`` client; uploads
go through Xet (the default, as in production), and the second-snapshot test also runs through LFS."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pyarrow.parquet as pq
import pytest

from platform_helpers import assert_one_sentence_error, materialization_metadata, materialize, run_cli

from dataset_assets.storage.release_state import is_published, publication
from dataset_assets.resources import HubResource
from dataset_assets.storage.stores import LocalStore

REPO = "test-org/media-snapshots"
FIRST, SECOND = "2026-12-01", "2026-12-02"


# --- helpers ---------------------------------------------------------------------------------------------
class Webhook:
    """A tiny chat webhook on 127.0.0.1: records every POST body, answers ``status``."""

    def __init__(self, status: int = 200):
        self.status = status
        self.posts: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.posts.append({"body": body, "content_type": self.headers.get("Content-Type")})
                self.send_response(hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def hub_for(server, **kwargs) -> HubResource:
    return HubResource(repo_id=REPO, token=server.token, endpoint=server.endpoint, **kwargs)


def snapshot_ids(store: LocalStore, date: str, table: str) -> list[str]:
    folder = store.local_path(f"snapshots/{date}/{table}")
    return sorted(i for f in sorted(folder.glob("*.parquet")) for i in pq.read_table(f, columns=["identifier"])["identifier"].to_pylist())


def manifest(store, date: str, table: str) -> dict:
    return json.loads(store.read_bytes(f"snapshots/{date}/{table}/_manifest.json"))


def hub_ids(table: str, revision: str | None = None) -> list[str]:
    import datasets

    ds = datasets.load_dataset(REPO, table, revision=revision, split="train")
    return sorted(ds["identifier"])


def run_text(instance, result) -> str:
    """Everything the instance recorded about a run: events, metadata, errors and the run config."""
    records = instance.all_logs(result.run_id)
    run = instance.get_run_by_id(result.run_id)
    return "\n".join([*(dg.serialize_value(r) for r in records), json.dumps(run.run_config, default=str)])


def step_failures(result) -> list[str]:
    return [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]


def export(uri: str, store, date: str, tables=("image", "audio")) -> None:
    from dataset_assets.release.card import write_card
    from dataset_assets.export.run import ExportOptions, export_snapshot

    export_snapshot(uri, list(tables), date, store, ExportOptions(workers=2))
    write_card(store, date, list(tables))


# --- the asset -------------------------------------------------------------------------------------------
def test_release_publishes_tags_and_freezes_the_snapshot(defs_module, instance, seeded_uri, hub_server, webhook, tmp_path):
    store_dir = tmp_path / "store"
    store = LocalStore(store_dir)
    hub = hub_for(hub_server, webhook_url=webhook.url)
    result = materialize(defs_module, instance, FIRST, seeded_uri, store_dir, hub=hub)
    assert result.success, step_failures(result)

    # on the Hub: one commit holding the snapshot, tagged
    head = hub_server.head(REPO)
    tag = f"snapshot-{FIRST}"
    assert hub_server.files(REPO, tag) == hub_server.files(REPO)
    for table in ("image", "audio"):
        for f in manifest(store, FIRST, table)["files"]:
            assert hub_server.files(REPO)[f"{table}/{f['path']}"].sha256 == f["sha256"]

    # marked published, with where
    info = publication(store, FIRST)
    assert info["repo_id"] == REPO and info["commit"] == head and info["tag"] == tag
    assert info["url"] == f"{hub_server.endpoint}/datasets/{REPO}"

    # what the UI shows
    md = materialization_metadata(result, "hub_release")
    assert md["repo"].value == info["url"] and md["commit"].value == head and md["tag"].value == tag
    shards = sum(len(manifest(store, FIRST, t)["files"]) for t in ("image", "audio"))
    assert md["files_added"].value == shards + 3  # + README.md and two manifests
    assert md["files_deleted"].value == 0 and md["files_kept"].value == 0
    assert md["bytes_uploaded"].value > 0
    # upload cost, through Xet: what was sent, and the new bytes after chunk dedup
    assert md["upload_protocol"].value == "xet" and md["bytes_sent"].value > 0
    assert 0 < md["xet_new_bytes"].value <= md["bytes_uploaded"].value
    assert md["upload"].value.startswith(f"added {shards + 3} files")
    assert f'load_dataset("{REPO}", "image", revision="{tag}")' in md["load"].value

    # the webhook: one Slack-style JSON message naming the snapshot and the tables
    [post] = webhook.posts
    assert post["content_type"] == "application/json"
    text = json.loads(post["body"])["text"]
    assert FIRST in text and "image" in text and "audio" in text and info["url"] in text
    assert f"{manifest(store, FIRST, 'image')['row_count']:,} rows" in text
    assert f'revision="{tag}"' in text and "\n" not in text
    assert f"Upload: added {shards + 3} files" in text and "through Xet" in text

    # a consumer loads the snapshot by its tag
    assert hub_ids("image", tag) == snapshot_ids(store, FIRST, "image")

    # the token is nowhere in what Dagster recorded
    assert hub_server.token not in run_text(instance, result)

    # published snapshots are immutable: the table refuses to be re-materialised
    again = materialize(defs_module, instance, FIRST, seeded_uri, store_dir,
                        selection=dg.AssetSelection.assets("image", "audio").without_checks())
    assert not again.success
    [message] = step_failures(again)
    assert f"Snapshot {FIRST} was published to {REPO} and is immutable" in message
    assert hub_server.head(REPO) == head


@pytest.mark.parametrize("hub_server", ["xet", "lfs"], indirect=True)
def test_second_snapshot_uploads_only_changed_shards(defs_module, instance, mutable_uri, hub_server, tmp_path):
    from dataset_assets.local.seed import change_rows

    store_dir = tmp_path / "store"
    store = LocalStore(store_dir)
    hub = hub_for(hub_server)
    assert materialize(defs_module, instance, FIRST, mutable_uri, store_dir, hub=hub).success
    first_audio = snapshot_ids(store, FIRST, "audio")

    changed = change_rows(mutable_uri, "audio", fraction=0.05)
    assert sum(changed.values()) > 0
    hub_server.reset_counters()
    result = materialize(defs_module, instance, SECOND, mutable_uri, store_dir, hub=hub)
    assert result.success, step_failures(result)

    def shas(date):
        return {f["sha256"] for t in ("image", "audio") for f in manifest(store, date, t)["files"]}

    new = shas(SECOND) - shas(FIRST)
    assert new, "the change produced no new shard"
    assert len(new) < len(shas(SECOND)), "every shard changed: nothing to skip"
    assert hub_server.counters["lfs_files_uploaded" if hub_server.mode == "lfs" else "xet_files_committed"] == len(new)
    assert hub_server.counters["commits_created"] == 1
    md = materialization_metadata(result, "hub_release")
    assert md["files_kept"].value > 0 and md["upload_protocol"].value == hub_server.mode

    second_audio = snapshot_ids(store, SECOND, "audio")
    assert second_audio != first_audio
    assert hub_ids("audio", f"snapshot-{FIRST}") == first_audio
    assert hub_ids("audio") == second_audio
    assert hub_ids("audio", f"snapshot-{SECOND}") == second_audio
    assert is_published(store, FIRST) and is_published(store, SECOND)


def test_release_from_s3_store(defs_module, instance, seeded_uri, s3_store, hub_server):
    export(seeded_uri, s3_store, FIRST, tables=["audio"])
    result = materialize(defs_module, instance, FIRST, seeded_uri, s3_store.url, selection=["hub_release"],
                         hub=hub_for(hub_server))
    assert result.success, step_failures(result)
    assert is_published(s3_store, FIRST)
    assert publication(s3_store, FIRST)["commit"] == hub_server.head(REPO)
    rows = manifest(s3_store, FIRST, "audio")["row_count"]
    import datasets

    ds = datasets.load_dataset(REPO, "audio", revision=f"snapshot-{FIRST}", split="train")
    assert ds.num_rows == rows > 0


# --- the CLI ---------------------------------------------------------------------------------------------
def test_cli_publish(seeded_uri, hub_server, tmp_path):
    from huggingface_hub import HfApi

    store = LocalStore(tmp_path / "store")
    export(seeded_uri, store, FIRST)
    base = ["publish", "--snapshot", FIRST, "--store", str(tmp_path / "store")]
    env = {"DATASET_ASSETS_HF_REPO": "", "DATASET_ASSETS_WEBHOOK_URL": ""}
    outputs: list[str] = []

    no_repo = run_cli(*base, env=env)
    outputs += [no_repo.stdout, no_repo.stderr]
    assert no_repo.returncode != 0 and "Traceback" not in no_repo.stderr
    [line] = no_repo.stderr.strip().splitlines()
    assert line.startswith("error:") and "--repo" in line and "DATASET_ASSETS_HF_REPO" in line

    dry = run_cli(*base, "--repo", REPO, "--dry-run", env=env)
    outputs += [dry.stdout, dry.stderr]
    assert dry.returncode == 0, dry.stderr
    assert "Dry run, nothing changed" in dry.stdout
    shard = manifest(store, FIRST, "image")["files"][0]
    assert any(ln.split()[:2] == ["add", f"image/{shard['path']}"] for ln in dry.stdout.splitlines()), dry.stdout
    assert not HfApi(endpoint=hub_server.endpoint).repo_exists(REPO, repo_type="dataset")
    for endpoint in ("create_repo", "commit", "preupload", "lfs_upload", "xet_write_token", "tag_create"):
        assert hub_server.counters[endpoint] == 0, endpoint
    assert not is_published(store, FIRST)

    # a Hub without Xet, the client with Xet on (the default): one sentence, at once (no retries)
    hub_server.xet = False
    refused = run_cli(*base, "--repo", REPO, "--no-gate", env=env)
    outputs += [refused.stdout, refused.stderr]
    assert_one_sentence_error(refused, "refused its Xet write-token route (HTTP 404", "HF_HUB_DISABLE_XET=1")
    assert "retrying" not in refused.stderr and not is_published(store, FIRST)
    hub_server.xet = True

    # a webhook answering 500 does not fail the publish
    hook = Webhook(status=500)
    try:
        done = run_cli(*base, "--repo", REPO, "--no-gate",
                       env={"DATASET_ASSETS_WEBHOOK_URL": hook.url, "DATASET_ASSETS_HF_REPO": ""})
    finally:
        hook.close()
    outputs += [done.stdout, done.stderr]
    assert done.returncode == 0, done.stderr
    head = hub_server.head(REPO)
    assert f"commit {head}" in done.stdout and f"tag    snapshot-{FIRST}" in done.stdout
    assert "upload added " in done.stdout and "through Xet" in done.stdout
    assert f"{hub_server.endpoint}/datasets/{REPO}" in done.stdout
    assert len(hook.posts) >= 1 and "Could not notify the webhook at 127.0.0.1 (HTTP 500)" in done.stderr
    assert "secret" not in done.stderr  # the webhook URL's path is never printed
    assert publication(store, FIRST)["commit"] == head
    info = HfApi(endpoint=hub_server.endpoint, token=hub_server.token).dataset_info(REPO)
    assert info.private is True and not info.gated

    # with the repo from the environment, publishing again is a no-op
    again = run_cli(*base, env={"DATASET_ASSETS_HF_REPO": REPO, "DATASET_ASSETS_WEBHOOK_URL": ""})
    outputs += [again.stdout, again.stderr]
    assert again.returncode == 0 and hub_server.head(REPO) == head

    assert os.environ["HF_TOKEN"] == hub_server.token
    assert all(hub_server.token not in text for text in outputs)


def test_webhook_message_and_failures(hub_server, tmp_path):
    """``notify_webhook`` directly: one POST; errors are retried, then only warned about."""
    from dataset_assets.storage.manifest import Manifest
    from dataset_assets.release import PublishResult
    from dataset_assets.release.notify import notify_webhook

    result = PublishResult(repo_id=REPO, repo_url=f"https://hub.example/datasets/{REPO}", snapshot=FIRST,
                           tag=f"snapshot-{FIRST}", commit_sha="a" * 40, dry_run=False, committed=True,
                           added_files=3, added_bytes=10, deleted_files=0, deleted_bytes=0, kept_files=0, kept_bytes=0)
    m = Manifest(table="image", snapshot=FIRST, row_count=1234, files=[], schema=[], arrow_schema="", source={},
                 source_snapshot={}, created_at="")
    hook = Webhook()
    warnings: list[str] = []
    try:
        notify_webhook(hook.url, result, [m], log=warnings.append)
        assert len(hook.posts) == 1 and not warnings
        text = json.loads(hook.posts[0]["body"])["text"]
        assert "image (1,234 rows" in text and f'load_dataset("{REPO}", "image", revision="snapshot-{FIRST}")' in text
        hook.status = 503
        notify_webhook(hook.url, result, [m], log=warnings.append, attempts=3, retry_wait=0.01)
        assert len(hook.posts) == 4 and len(warnings) == 1 and "HTTP 503" in warnings[0]
        hook.status = 404  # not retried
        notify_webhook(hook.url, result, [m], log=warnings.append, retry_wait=0.01)
        assert len(hook.posts) == 5 and "HTTP 404" in warnings[1]
    finally:
        hook.close()
    notify_webhook(hook.url, result, [m], log=warnings.append, attempts=2, retry_wait=0.01, timeout=2)  # closed port
    assert len(warnings) == 3 and "secret" not in "".join(warnings)


def test_release_follows_the_card(defs_module, instance, seeded_uri, tmp_path, monkeypatch):
    """The automation condition: once a date's card is (re)built, the release of that date is requested."""
    monkeypatch.setenv("DATASET_ASSETS_HF_REPO", "org/configured")
    from dataset_assets.definitions import build_definitions

    defs = build_definitions()
    instance.add_dynamic_partitions("snapshots", [FIRST])
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert not first.get_requested_partitions(dg.AssetKey("hub_release"))
    assert materialize(defs_module, instance, FIRST, seeded_uri, tmp_path / "store").success  # not the release
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert after.get_requested_partitions(dg.AssetKey("hub_release")) == {FIRST}
    assert not after.get_requested_partitions(dg.AssetKey("image"))
