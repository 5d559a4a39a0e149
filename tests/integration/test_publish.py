"""``publish_snapshot`` against the local Hub, with the real ``huggingface_hub`` and ``datasets`` clients, through
Xet (the default, as in production) and, where it matters, through LFS (``HF_HUB_DISABLE_XET=1``)."""

from __future__ import annotations

import json
import logging

import pytest

from hub_snapshots import parquet, write_snapshot

from huggingface_hub import CommitOperationAdd, HfApi

from dataset_assets.errors import UserError, VerificationError
from dataset_assets.release import publish_snapshot
from dataset_assets.storage.stores import LocalStore

REPO = "test-user/snapshots"
FIRST, SECOND = "2026-01-01", "2026-02-01"


@pytest.fixture
def store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, FIRST, {"image": [[1, 2], [3], [4, 5]], "label": [[7]]})
    write_snapshot(store, SECOND, {"image": [[1, 2], [3, 30]]})  # shard 0 unchanged, shard 1 changed
    return store


def publish(hub, store, date, **kwargs):
    kwargs.setdefault("log", lambda msg: None)
    kwargs.setdefault("retry_wait", 0.01)
    return publish_snapshot(store, date, REPO, token=hub.token, endpoint=hub.endpoint, **kwargs)


def assert_repo_holds(hub, date: str, revision: str = "main", others: frozenset = frozenset()) -> None:
    """The repo at ``revision`` holds exactly the snapshot ``date`` (plus .gitattributes and ``others``)."""
    files = hub.files(REPO, revision)
    expected = {"README.md"}
    for manifest_path in [p for p in files if p.endswith("/_manifest.json")]:
        table = manifest_path.split("/")[0]
        manifest = json.loads(hub.read(REPO, manifest_path, revision))
        assert manifest["snapshot"] == date
        expected.add(manifest_path)
        for f in manifest["files"]:
            entry = files[f"{table}/{f['path']}"]
            assert (entry.sha256, entry.size, entry.lfs) == (f["sha256"], f["bytes"], True)
            expected.add(f"{table}/{f['path']}")
    assert set(files) - {".gitattributes"} == expected | others


XET_AND_LFS = pytest.mark.parametrize("hub_server", ["xet", "lfs"], indirect=True)


def uploaded_files(hub) -> int:
    """Shards that reached the Hub: LFS objects received, or files committed from the Xet CAS."""
    return hub.counters["lfs_files_uploaded"] + hub.counters["xet_files_committed"]


@XET_AND_LFS
def test_publish_two_snapshots(hub_server, store):
    import datasets

    xet = hub_server.mode == "xet"
    cas = hub_server.cas_usage()
    first = publish(hub_server, store, FIRST, private=True, gated=True)
    assert first.commit_sha == hub_server.head(REPO) and first.tag == f"snapshot-{FIRST}" and first.committed
    assert (first.added_files, first.deleted_files, first.kept_files) == (7, 0, 0)
    assert uploaded_files(hub_server) == 4
    assert hub_server.counters["lfs_files_uploaded" if xet else "xet_files_committed"] == 0
    # upload cost: the bytes the push reports sending are the bytes that reached the Hub's CAS
    shard_bytes = sum(len(parquet(ids)) for ids in ([1, 2], [3], [4, 5], [7]))
    inline = first.added_bytes - shard_bytes  # README.md and the manifests, sent inside the commit
    assert first.protocol == ("xet" if xet else "lfs")
    if xet:
        arrived = hub_server.cas_usage()
        assert first.xet_sent_bytes == (arrived["xorb_bytes"] - cas["xorb_bytes"]) + (
            arrived["shard_bytes"] - cas["shard_bytes"]) > 0
        assert first.sent_bytes == first.xet_sent_bytes + inline
        assert 0 < first.xet_new_bytes <= shard_bytes
    else:
        assert first.sent_bytes == first.added_bytes and first.xet_new_bytes is None
    info = HfApi(endpoint=hub_server.endpoint).dataset_info(REPO)
    assert info.private is True and info.gated == "auto"
    assert first.repo_url == f"{hub_server.endpoint}/datasets/{REPO}"
    # the result carries each table's manifest as pushed (the release's notice reads them, not the store again)
    tables = sorted({p.split("/")[0] for p in hub_server.files(REPO, first.tag) if p.endswith("/_manifest.json")})
    published = [hub_server.read(REPO, f"{t}/_manifest.json", first.tag) for t in tables]
    assert len(tables) == 2 and sorted(first.manifests) == sorted(published)

    hub_server.reset_counters()
    second = publish(hub_server, store, SECOND)
    assert uploaded_files(hub_server) == 1  # only the changed shard
    assert hub_server.counters["commits_created"] == 1
    assert second.kept_files == 1 and second.kept_bytes == len(parquet([1, 2]))
    assert "skipped 1 file" in second.upload_summary() and "already on the Hub" in second.upload_summary()
    assert sorted(second.deleted) == ["image/train-00002-000.parquet", "label/_manifest.json",
                                      "label/train-00000-000.parquet"]
    assert set(second.added) == {"README.md", "image/_manifest.json", "image/train-00001-000.parquet"}
    assert_repo_holds(hub_server, SECOND)
    assert_repo_holds(hub_server, FIRST, revision=f"snapshot-{FIRST}")

    old = datasets.load_dataset(REPO, "image", revision=f"snapshot-{FIRST}", split="train")
    assert sorted(old["id"]) == [1, 2, 3, 4, 5]
    assert sorted(datasets.load_dataset(REPO, "image", split="train")["id"]) == [1, 2, 3, 30]
    assert sorted(datasets.load_dataset(REPO, "image", revision=f"snapshot-{SECOND}", split="train")["id"]) == [1, 2, 3, 30]

    # Publishing the same snapshot again changes nothing and keeps its tag.
    hub_server.reset_counters()
    again = publish(hub_server, store, SECOND)
    assert again.commit_sha == second.commit_sha and not again.committed
    assert (again.added_files, again.deleted_files, again.kept_files) == (0, 0, 4)  # 2 shards, card, manifest
    assert hub_server.counters["commits_created"] == 0 and uploaded_files(hub_server) == 0
    assert again.sent_bytes == 0 and again.protocol == ""


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("hub_server", ["lfs"], indirect=True)  # the LFS upload PUT fails once
def test_transient_500s_are_retried(hub_server, store, when):
    """A 500 on the commit (``after``: the commit landed but the answer was lost) and on an upload."""
    publish(hub_server, store, FIRST)
    hub_server.reset_counters()
    hub_server.fail_next("POST", r"/commit/main$", when=when)
    hub_server.fail_next("PUT", r"^/_lfs-upload/")
    lines: list[str] = []
    result = publish(hub_server, store, SECOND, log=lines.append)
    assert hub_server.counters["injected_failures"] == 2
    # "after": the re-plan finds everything in place and the client skips the (empty) second commit.
    assert hub_server.counters["commit"] == (2 if when == "before" else 1)
    assert hub_server.counters["commits_created"] == 1  # one commit landed, whatever the client saw
    assert result.commit_sha == hub_server.head(REPO)
    assert any("retrying" in line for line in lines)
    assert_repo_holds(hub_server, SECOND)
    assert hub_server.files(REPO, f"snapshot-{SECOND}") == hub_server.files(REPO)


def test_concurrent_commit_is_a_clear_error(hub_server, store):
    publish(hub_server, store, FIRST)

    def sneak_in(plan):
        HfApi(endpoint=hub_server.endpoint).create_commit(
            REPO, [CommitOperationAdd("NOTES.md", b"someone else")], commit_message="meanwhile", repo_type="dataset")

    with pytest.raises(UserError, match="Another commit landed on .* rerunning publish is safe"):
        publish(hub_server, store, SECOND, before_commit=sneak_in)
    assert "NOTES.md" in hub_server.files(REPO)
    assert_repo_holds(hub_server, FIRST, revision=f"snapshot-{FIRST}")
    assert f"snapshot-{SECOND}" not in [t.name for t in HfApi(endpoint=hub_server.endpoint).list_repo_refs(
        REPO, repo_type="dataset").tags]

    result = publish(hub_server, store, SECOND)  # rerunning is safe; files other than data are left alone
    assert_repo_holds(hub_server, SECOND, others=frozenset({"NOTES.md"}))
    assert result.commit_sha == hub_server.head(REPO)


def test_dry_run_changes_nothing(hub_server, store):
    api = HfApi(endpoint=hub_server.endpoint)
    lines: list[str] = []
    plan = publish(hub_server, store, FIRST, dry_run=True, log=lines.append)
    assert plan.dry_run and plan.commit_sha is None and plan.added_files == 7
    assert not api.repo_exists(REPO, repo_type="dataset")
    assert any("image/train-00000-000.parquet" in line for line in lines)

    publish(hub_server, store, FIRST)
    head = hub_server.head(REPO)
    hub_server.reset_counters()
    lines.clear()
    plan = publish(hub_server, store, SECOND, dry_run=True, log=lines.append)
    assert (plan.added_files, plan.deleted_files, plan.kept_files) == (3, 3, 1)
    assert any(line.strip().startswith("delete") and "label/train-00000-000.parquet" in line for line in lines)
    assert hub_server.head(REPO) == head
    for endpoint in ("commit", "preupload", "lfs_batch", "lfs_upload", "tag_create", "settings", "create_repo"):
        assert hub_server.counters[endpoint] == 0, endpoint


def test_refuses_incomplete_snapshots(hub_server, tmp_path):
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, FIRST, {"image": [[1]], "label": [[2]]})
    store.delete_prefix(f"snapshots/{FIRST}/label/_SUCCESS")
    with pytest.raises(UserError, match="label .*lack _SUCCESS"):
        publish(hub_server, store, FIRST)
    write_snapshot(store, SECOND, {"image": [[1]]})
    store.delete_prefix(f"snapshots/{SECOND}/README.md")
    with pytest.raises(UserError, match="no README.md"):
        publish(hub_server, store, SECOND)
    with pytest.raises(UserError, match="no snapshot 2030-01-01"):
        publish(hub_server, store, "2030-01-01")
    assert hub_server.counters["create_repo"] == 0


def test_shard_not_matching_its_manifest_is_not_published(hub_server, tmp_path):
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, FIRST, {"image": [[1, 2]]})
    path = store.local_path(f"snapshots/{FIRST}/image/train-00000-000.parquet")
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="does not match the sha256 in its manifest"):
        publish(hub_server, store, FIRST)
    assert hub_server.counters["commits_created"] == 0


def test_existing_tag_with_other_content_is_refused(hub_server, store):
    first = publish(hub_server, store, FIRST)
    HfApi(endpoint=hub_server.endpoint).create_tag(REPO, tag=f"snapshot-{SECOND}", revision=first.commit_sha,
                                                   repo_type="dataset")
    with pytest.raises(UserError, match=f"Tag snapshot-{SECOND} already exists"):
        publish(hub_server, store, SECOND)
    assert hub_server.head(REPO) == first.commit_sha


@pytest.mark.parametrize("hub_server", ["lfs"], indirect=True)  # the LFS upload PUT
def test_failed_upload_names_the_file(hub_server, store):
    hub_server.fail_next("PUT", r"^/_lfs-upload/", times=10, status=403)  # not retried by the client
    with pytest.raises(UserError, match=r"Uploading \S+\.parquet to .* failed .*rerunning publish is safe"):
        publish(hub_server, store, FIRST)
    assert hub_server.counters["commits_created"] == 0


def test_token_never_leaks(hub_server, store, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    hub_server.fail_next("POST", r"/commit/main$", times=1)
    result = publish(hub_server, store, FIRST, log=lines.append)  # with a retry
    hub_server.fail_next("POST", r"/commit/main$", times=10)
    with pytest.raises(UserError) as err:
        publish(hub_server, store, SECOND, log=lines.append, max_attempts=2)  # gives up
    captured = capsys.readouterr()
    text = "\n".join([*lines, str(err.value), repr(result), caplog.text, captured.out, captured.err])
    assert lines and hub_server.token not in text


def test_token_echoed_by_the_server_is_scrubbed(hub_server, store):
    hub_server.fail_next("POST", r"/preupload/", status=400, message=f"bad token {hub_server.token}")
    lines: list[str] = []
    with pytest.raises(UserError) as err:
        publish(hub_server, store, FIRST, log=lines.append)
    assert "bad token ***" in str(err.value) and hub_server.token not in str(err.value)
    assert hub_server.token not in "\n".join(lines)


@pytest.mark.parametrize("hub_server", ["xet-off-hub"], indirect=True)
def test_hub_without_xet_is_one_sentence(hub_server, store):
    """Xet on (the default) against a Hub whose Xet token route answers 404: one sentence saying so and what to
    do, at once (no retries), instead of "could not reach the Hub" after backing off."""
    lines: list[str] = []
    with pytest.raises(UserError) as err:
        publish(hub_server, store, FIRST, log=lines.append, retry_wait=5)  # a retry would take >= 5 s
    message = str(err.value)
    assert "refused its Xet write-token route (HTTP 404" in message and "HF_HUB_DISABLE_XET=1" in message
    assert "check the network" not in message and message.count(". ") == 0 and "\n" not in message
    assert not any("retrying" in line for line in lines)
    assert hub_server.counters["xet_write_token"] == 2  # hf_xet's request, then the one that names the refusal
    assert hub_server.counters["commits_created"] == 0
    assert hub_server.token not in message

    hub_server.xet = True  # the same push once the Hub speaks Xet (or with HF_HUB_DISABLE_XET=1) goes through
    assert publish(hub_server, store, FIRST).protocol == "xet"
