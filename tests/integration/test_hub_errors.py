"""Every Hub failure of a push is one sentence saying what to do, with the token in none of it (issue 16, item 3);
a push that would break the Hub's limits is refused before anything is sent (item 4); an existing repo whose
visibility or gating differs from the configuration is changed (``apply_settings``) or refused (item 5).

Against the local Hub (``hub_server.py``) and its failure switches, with the real ``huggingface_hub`` client."""

from __future__ import annotations

import socket
import time

import pytest
from huggingface_hub import CommitOperationAdd, HfApi

from hub_snapshots import card as shared_card, write_snapshot as shared_write_snapshot
from platform_helpers import assert_one_sentence_error, run_cli

from dataset_assets.errors import UserError
from dataset_assets.release import publish_snapshot
from dataset_assets.release.snapshot import HubLimits
from dataset_assets.resources import HubResource
from dataset_assets.storage.release_state import is_published
from dataset_assets.storage.stores import LocalStore

REPO = "test-user/snapshots"
FIRST, SECOND = "2026-01-01", "2026-02-01"


def card(*tables: str, license: str = "other", configs: str | None = None) -> bytes:
    return shared_card(*tables, license=license, configs=configs)


def write_snapshot(store: LocalStore, date: str, tables: dict[str, list[list[int]]], readme: bytes | None = None):
    shared_write_snapshot(store, date, tables, readme=readme if readme is not None else card(*tables))


@pytest.fixture
def store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, FIRST, {"image": [[1, 2], [3], [4, 5]], "label": [[7]]})
    write_snapshot(store, SECOND, {"image": [[1, 2], [3, 30]]})
    return store


def publish(hub, store, date, repo=REPO, **kwargs):
    kwargs.setdefault("log", lambda msg: None)
    kwargs.setdefault("retry_wait", 0.01)
    kwargs.setdefault("token", hub.token)
    kwargs.setdefault("endpoint", hub.endpoint)
    return publish_snapshot(store, date, repo, **kwargs)


def one_sentence(excinfo, hub, *needles) -> str:
    """The error is one sentence (no line break, no second sentence, no traceback text) holding ``needles``,
    and neither the Hub's token nor any token-like string of the test is in it."""
    assert isinstance(excinfo.value, UserError)
    message = str(excinfo.value)
    assert "\n" not in message and ". " not in message and message.endswith("."), message
    assert "Traceback" not in message and hub.token not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def written_nothing(hub, repo=REPO) -> bool:
    return hub.counters["commits_created"] == 0 and hub.counters["lfs_files_uploaded"] == 0 and (
        hub.counters["xet_files_committed"] == 0)


# --- item 3: failures as one sentence ---------------------------------------------------------------------------
def test_token_missing(hub_server, store, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(UserError) as err:
        publish(hub_server, store, FIRST, token=None)
    one_sentence(err, hub_server, "No Hugging Face token", "HF_TOKEN", "hf auth login")
    assert sum(hub_server.counters.values()) == 0  # refused before asking the Hub anything


def test_token_invalid(hub_server, store):
    wrong = "hf_wrong_" + "0" * 24
    with pytest.raises(UserError) as err:
        publish(hub_server, store, FIRST, token=wrong)
    message = one_sentence(err, hub_server, "invalid or expired (HTTP 401)", "HF_TOKEN")
    assert wrong not in message and written_nothing(hub_server)


@pytest.mark.parametrize("exists", [False, True], ids=["new-repo", "existing-repo"])
def test_token_read_only(hub_server, store, exists):
    if exists:
        publish(hub_server, store, FIRST)
        hub_server.reset_counters()
    hub_server.token_role = "read"
    lines: list[str] = []
    with pytest.raises(UserError) as err:
        publish(hub_server, store, SECOND, log=lines.append)
    one_sentence(err, hub_server, "read-only", "HF_TOKEN", "write access")
    assert written_nothing(hub_server) and not any("retrying" in line for line in lines)


@pytest.mark.parametrize("status, needle", [(401, "invalid or expired (HTTP 401)"),
                                            (403, "HTTP 403 on the Xet write-token route")])
def test_xet_token_route_refused(hub_server, store, status, needle):
    """A 401/403 on the Xet write-token route (hf_xet asks it while uploading) is about the token."""
    hub_server.fail_next("GET", r"/xet-write-token/", times=20, status=status)
    lines: list[str] = []
    with pytest.raises(UserError) as err:
        publish(hub_server, store, FIRST, log=lines.append, retry_wait=5)
    one_sentence(err, hub_server, needle, "xet-write-token")
    assert written_nothing(hub_server) and not any("retrying" in line for line in lines)


@pytest.mark.parametrize("exists", [False, True], ids=["create", "commit"])
def test_repo_of_another_namespace(hub_server, store, exists):
    other = "someone-else/snapshots"
    hub_server.orgs = ["my-org"]
    if exists:  # someone else's public repo: readable, not writable
        HfApi(endpoint=hub_server.endpoint, token=hub_server.token).create_repo(other, repo_type="dataset")
        hub_server.reset_counters()
    hub_server.restrict_namespaces = True
    with pytest.raises(UserError) as err:
        publish(hub_server, store, FIRST, repo=other)
    one_sentence(err, hub_server, "namespace someone-else", "test-user", "HTTP 403")
    assert written_nothing(hub_server)
    assert publish(hub_server, store, FIRST, repo="my-org/snapshots").committed  # an org of the user: fine


def test_rate_limit_honours_retry_after(hub_server, store):
    hub_server.fail_next("POST", r"/commit/main$", status=429, headers={"Retry-After": "1"},
                         message="You have exceeded the rate limit")
    lines: list[str] = []
    start = time.monotonic()
    result = publish(hub_server, store, FIRST, log=lines.append)  # retry_wait 0.01: only Retry-After waits 1 s
    assert time.monotonic() - start >= 1.0
    assert result.committed and hub_server.counters["injected_failures"] == 1
    assert any("HTTP 429" in line and "retrying in 1s" in line for line in lines), lines


def test_rate_limit_gives_up_saying_when(hub_server, store):
    repo_info = r"^/api/datasets/test-user/snapshots(/revision/[^/]+)?$"
    hub_server.fail_next("GET", repo_info, times=2, status=429, headers={"Retry-After": "1"})
    with pytest.raises(UserError) as err:
        publish(hub_server, store, FIRST, max_attempts=2)
    one_sentence(err, hub_server, "rate-limited", "HTTP 429, 2 attempts", "rerun publish after", "UTC (in 1 s)")

    # a Retry-After longer than a push waits: stop at once and say when
    hub_server.fail_next("GET", repo_info, times=5, status=429, headers={"Retry-After": "3600"})
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        publish(hub_server, store, FIRST)
    assert time.monotonic() - start < 5
    one_sentence(err, hub_server, "HTTP 429, 1 attempt)", "UTC (in 3600 s)")
    assert written_nothing(hub_server)


@pytest.mark.parametrize("readme, needles", [
    (card("image", "label", license="not-a-license"),
     ["field license:", '"license" must be one of [apache-2.0', "dataset_docs/dataset.yaml"]),
    (card(configs="- config_name: image\n  data_files:\n  - split: train\n    path: image/train-*.parquet\n"
                  "- config_name: label\n  data_files:\n  - split: train\n"),
     ["field configs[1].data_files[0].path (config label):", "is required", "tables.yaml or dataset_docs/"]),
], ids=["license", "configs"])
def test_metadata_rejected_names_the_field(hub_server, tmp_path, readme, needles):
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, FIRST, {"image": [[1]], "label": [[2]]}, readme=readme)
    with pytest.raises(UserError) as err:
        publish(hub_server, store, FIRST)
    one_sentence(err, hub_server, "rejected the metadata of the dataset card (README.md)", "rebuild the card",
                 *needles)
    assert hub_server.counters["validate_yaml"] >= 1 and written_nothing(hub_server)


def test_commit_too_large(hub_server, store):
    hub_server.max_commit_files = 3  # the snapshot adds 7 files (4 shards, the card, 2 manifests)
    with pytest.raises(UserError) as err:
        publish(hub_server, store, FIRST)
    one_sentence(err, hub_server, "as too large (HTTP 413", "--shard-mib")
    assert hub_server.counters["commits_created"] == 0


def test_network_down_is_quick_and_says_where(hub_server, store):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lines: list[str] = []
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        publish(hub_server, store, FIRST, endpoint=f"http://127.0.0.1:{port}", retry_wait=5, log=lines.append)
    assert time.monotonic() - start < 5  # one retry after 1 s, not 2 + 4 + 8 s of backoff
    one_sentence(err, hub_server, f"Could not reach the Hub at http://127.0.0.1:{port}", "connection refused",
                 "check the network or HF_ENDPOINT")
    assert len([line for line in lines if "retrying" in line]) == 1


def test_concurrent_writer(hub_server, store):
    publish(hub_server, store, FIRST)

    def sneak_in(plan):
        HfApi(endpoint=hub_server.endpoint, token=hub_server.token).create_commit(
            REPO, [CommitOperationAdd("NOTES.md", b"someone else")], commit_message="meanwhile", repo_type="dataset")

    with pytest.raises(UserError) as err:
        publish(hub_server, store, SECOND, before_commit=sneak_in)
    one_sentence(err, hub_server, "Another commit landed", "rerunning publish is safe")


def test_cli_prints_one_sentence_without_the_token(hub_server, tmp_path):
    """The command line: each failure is one ``error:`` line, no traceback, the token nowhere."""
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, FIRST, {"image": [[1]]}, readme=card("image", license="not-a-license"))
    base = ["publish", "--snapshot", FIRST, "--store", str(tmp_path / "store"), "--repo", REPO]
    env = {"DATASET_ASSETS_HF_REPO": "", "DATASET_ASSETS_WEBHOOK_URL": ""}

    rejected = run_cli(*base, env=env)
    assert_one_sentence_error(rejected, "field license:", "rebuild the card")

    wrong = "hf_wrong_" + "1" * 24
    invalid = run_cli(*base, env={**env, "HF_TOKEN": wrong})
    assert_one_sentence_error(invalid, "invalid or expired (HTTP 401)")

    store.put_bytes(f"snapshots/{FIRST}/README.md", card("image"))  # the card now passes: the commit is next
    hub_server.token_role = "read"
    read_only = run_cli(*base, env=env)
    assert_one_sentence_error(read_only, "read-only")
    for proc in (rejected, invalid, read_only):
        text = proc.stdout + proc.stderr
        assert hub_server.token not in text and wrong not in text


# --- item 4: the Hub's limits, checked before anything is sent ----------------------------------------------------
@pytest.mark.parametrize("limits, needles", [
    (HubLimits(files_per_commit=5), ["would send 7 files", "5 files per commit"]),
    (HubLimits(entries_per_folder=3), ["files and folders", "3 per folder"]),  # image/: 3 shards + manifest
    (HubLimits(files_per_repo=6), ["files, more than the Hub's 6 files per repository"]),
    (HubLimits(file_bytes=100), ["image/train-00000-000.parquet", "file size limit of 100 bytes"]),
    (HubLimits(row_group_bytes=10), ["Row group 0 of", "more than the 10 per row group the Hub's dataset viewer reads"]),
], ids=["per-commit", "per-folder", "per-repo", "file-size", "row-group"])
def test_limits_refuse_before_anything_is_sent(hub_server, store, limits, needles):
    for dry_run in (True, False):
        with pytest.raises(UserError) as err:
            publish(hub_server, store, FIRST, limits=limits, dry_run=dry_run)
        one_sentence(err, hub_server, "nothing was published", *needles)
    for endpoint in ("preupload", "lfs_batch", "xet_write_token", "commit", "tag_create"):
        assert hub_server.counters[endpoint] == 0, endpoint
    assert publish(hub_server, store, FIRST).committed  # within the Hub's own limits it goes through


# --- item 5: repo settings reconciled ------------------------------------------------------------------------------
def test_settings_differ_refused_then_applied(hub_server, store):
    publish(hub_server, store, FIRST, private=True, gated="auto")
    assert hub_server.repo_settings(REPO) == {"private": True, "gated": "auto"}
    HfApi(endpoint=hub_server.endpoint, token=hub_server.token).update_repo_settings(
        REPO, repo_type="dataset", private=False, gated=False)  # someone changed them on the Hub
    head = hub_server.head(REPO)
    hub_server.reset_counters()

    for dry_run in (True, False):
        with pytest.raises(UserError) as err:
            publish(hub_server, store, SECOND, private=True, gated="auto", dry_run=dry_run)
        one_sentence(err, hub_server, f"{REPO} is public and not gated", "asks for private and gated (auto)",
                     "--apply-settings", "apply_settings: true")
    assert hub_server.head(REPO) == head and written_nothing(hub_server)
    assert hub_server.counters["settings_changed"] == 0
    assert hub_server.repo_settings(REPO) == {"private": False, "gated": False}

    lines: list[str] = []
    publish(hub_server, store, SECOND, private=True, gated="auto", apply_settings=True, dry_run=True,
            log=lines.append)
    assert any("would make it private and gated (auto)" in line for line in lines), lines
    assert hub_server.counters["settings_changed"] == 0

    result = publish(hub_server, store, SECOND, private=True, gated="auto", apply_settings=True, log=lines.append)
    assert result.committed and hub_server.counters["settings_changed"] == 1
    assert hub_server.repo_settings(REPO) == {"private": True, "gated": "auto"}
    assert any("Changed the settings" in line for line in lines)


def test_settings_of_a_release_already_on_the_hub_only_get_a_note(hub_server, store):
    publish(hub_server, store, FIRST, private=True, gated=False)
    hub_server.reset_counters()
    lines: list[str] = []
    again = publish(hub_server, store, FIRST, private=True, gated="auto", log=lines.append)  # nothing to publish
    assert not again.committed and hub_server.counters["settings_changed"] == 0
    assert any("already holds snapshot" in line and "--apply-settings" in line for line in lines), lines
    with pytest.raises(UserError, match="not published under other terms"):
        publish(hub_server, store, SECOND, private=True, gated="auto")  # a new release is refused


def test_hub_resource_apply_settings(hub_server, store):
    """The Dagster resource's ``apply_settings`` reaches the push (the release asset calls ``hub.release``)."""
    hub = HubResource(repo_id=REPO, token=hub_server.token, endpoint=hub_server.endpoint, private=True, gated="")
    hub.release(store, FIRST, log=lambda m: None, warn=lambda m: None)
    gated = HubResource(repo_id=REPO, token=hub_server.token, endpoint=hub_server.endpoint, private=True,
                        gated="manual")
    with pytest.raises(UserError, match="apply_settings: true"):
        gated.release(store, SECOND, log=lambda m: None, warn=lambda m: None)
    assert not is_published(store, SECOND)
    applied = HubResource(repo_id=REPO, token=hub_server.token, endpoint=hub_server.endpoint, private=True,
                          gated="manual", apply_settings=True)
    result, _ = applied.release(store, SECOND, log=lambda m: None, warn=lambda m: None)
    assert result.committed and is_published(store, SECOND)
    assert hub_server.repo_settings(REPO) == {"private": True, "gated": "manual"}
