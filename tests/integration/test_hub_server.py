"""The local Hub (``hub_server.py``) driven by the real ``huggingface_hub`` and ``datasets`` clients."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationCopy,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    hf_hub_download,
)
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError


REPO = "test-user/images"
TAG = "snapshot-2026-01-01"
README = """---
configs:
- config_name: image
  data_files:
  - split: train
    path: image/train-*.parquet
---
# Images
"""


def parquet_bytes(ids: list[int]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ids, "name": [f"row-{i}" for i in ids]}), buf)
    return buf.getvalue()


@pytest.fixture
def two_commits(hub_server):
    """A dataset repo with a tagged first commit (2 shards) and a second commit (1 shard swapped)."""
    api = HfApi()
    url = api.create_repo(REPO, repo_type="dataset", private=True, exist_ok=True)
    assert url.repo_id == REPO and url.endpoint == hub_server.endpoint
    first = api.create_commit(
        REPO,
        [
            CommitOperationAdd("README.md", README.encode()),
            CommitOperationAdd("image/train-00000.parquet", parquet_bytes([1, 2])),
            CommitOperationAdd("image/train-00001.parquet", parquet_bytes([3])),
        ],
        commit_message="first",
        repo_type="dataset",
    )
    api.create_tag(REPO, tag=TAG, repo_type="dataset", revision=first.oid)
    second = api.create_commit(
        REPO,
        [
            CommitOperationDelete("image/train-00001.parquet"),
            CommitOperationAdd("image/train-00002.parquet", parquet_bytes([10, 11, 12])),
        ],
        commit_message="second",
        repo_type="dataset",
        parent_commit=first.oid,
    )
    return api, first.oid, second.oid


def test_repo_lifecycle_and_reads(hub_server, two_commits):
    api, first, second = two_commits
    hub_server.page_size = 2  # every listing below is paginated (Link: rel="next")
    assert hub_server.counters["commits_created"] == 2
    assert hub_server.counters["lfs_files_uploaded"] == 3  # README.md is a regular file

    info = api.dataset_info(REPO)
    assert info.sha == second and info.private is True and info.gated is False
    assert info.card_data.configs[0]["config_name"] == "image"
    assert {s.rfilename for s in info.siblings} == {
        ".gitattributes", "README.md", "image/train-00000.parquet", "image/train-00002.parquet"}
    assert api.repo_info(REPO, repo_type="dataset", revision=TAG).sha == first
    assert api.repo_exists(REPO, repo_type="dataset") and not api.repo_exists("test-user/nope", repo_type="dataset")

    api.update_repo_settings(REPO, repo_type="dataset", gated="auto", private=False)
    info = api.dataset_info(REPO)
    assert info.gated == "auto" and info.private is False

    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", second)]
    assert [(t.name, t.target_commit) for t in refs.tags] == [(TAG, first)]
    assert [c.commit_id for c in api.list_repo_commits(REPO, repo_type="dataset")][:2] == [second, first]

    # The tree API shows the sha256 of LFS files and the git oid of regular ones.
    data = parquet_bytes([10, 11, 12])
    tree = {f.path: f for f in api.list_repo_tree(REPO, repo_type="dataset", recursive=True, expand=True)}
    shard = tree["image/train-00002.parquet"]
    assert shard.lfs.sha256 == hashlib.sha256(data).hexdigest() and shard.size == len(data)
    assert shard.last_commit.oid == second and tree["README.md"].lfs is None
    assert tree["image"].tree_id and "image/train-00001.parquet" not in tree
    assert api.list_repo_files(REPO, repo_type="dataset", revision=TAG) == [
        ".gitattributes", "README.md", "image/train-00000.parquet", "image/train-00001.parquet"]
    [info_shard] = api.get_paths_info(REPO, ["image/train-00002.parquet", "missing"], repo_type="dataset")
    assert info_shard.lfs.sha256 == shard.lfs.sha256

    # Downloads: by branch, by tag, by commit sha; HfFileSystem with ranges.
    path = hf_hub_download(REPO, "image/train-00002.parquet", repo_type="dataset")
    assert open(path, "rb").read() == data
    path = hf_hub_download(REPO, "image/train-00001.parquet", repo_type="dataset", revision=TAG)
    assert open(path, "rb").read() == parquet_bytes([3])
    fs = HfFileSystem()
    assert fs.cat(f"datasets/{REPO}@{first}/README.md") == README.encode()
    with fs.open(f"datasets/{REPO}/image/train-00002.parquet", "rb", block_size=16) as fh:
        fh.seek(4)
        assert fh.read(8) == data[4:12]
    assert sorted(fs.glob(f"datasets/{REPO}/image/*.parquet")) == [
        f"datasets/{REPO}/image/train-00000.parquet", f"datasets/{REPO}/image/train-00002.parquet"]

    api.delete_tag(REPO, tag=TAG, repo_type="dataset")
    assert api.list_repo_refs(REPO, repo_type="dataset").tags == []


def test_load_dataset_per_revision(hub_server, two_commits):
    import datasets

    old = datasets.load_dataset(REPO, "image", revision=TAG, split="train")
    assert sorted(old["id"]) == [1, 2, 3]
    new = datasets.load_dataset(REPO, "image", split="train")
    assert sorted(new["id"]) == [1, 2, 10, 11, 12]


def test_unchanged_lfs_files_are_not_uploaded_again(hub_server, two_commits):
    api, _, second = two_commits
    hub_server.reset_counters()
    info = api.create_commit(
        REPO,
        [
            CommitOperationAdd("copy/again.parquet", parquet_bytes([10, 11, 12])),  # same bytes, new path
            CommitOperationCopy("image/train-00000.parquet", "copy/copied.parquet"),
            CommitOperationCopy("README.md", "copy/README.md"),
        ],
        commit_message="copy",
        repo_type="dataset",
    )
    assert hub_server.counters["lfs_batch"] == 1 and hub_server.counters["lfs_files_uploaded"] == 0
    files = hub_server.files(REPO)
    assert files["copy/again.parquet"].lfs and files["copy/again.parquet"] == files["image/train-00002.parquet"]
    assert files["copy/copied.parquet"] == files["image/train-00000.parquet"]
    assert files["copy/README.md"] == files["README.md"]
    assert info.oid == hub_server.head(REPO) != second


def test_stale_parent_commit_is_rejected(hub_server, two_commits):
    api, first, second = two_commits
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(REPO, [CommitOperationAdd("x.txt", b"x")], commit_message="late",
                          repo_type="dataset", parent_commit=first)
    assert err.value.response.status_code == 412
    assert hub_server.head(REPO) == second


def test_commit_endpoint_500_is_not_retried_by_the_client(hub_server, two_commits):
    api, _, second = two_commits
    hub_server.reset_counters()
    hub_server.fail_next("POST", r"/commit/main$")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(REPO, [CommitOperationAdd("x.txt", b"x")], commit_message="x", repo_type="dataset")
    assert err.value.response.status_code == 500
    assert hub_server.counters["commit"] == 1 and hub_server.head(REPO) == second


def test_preupload_and_upload_500s_are_retried(hub_server, two_commits):
    api, _, _ = two_commits
    hub_server.reset_counters()
    hub_server.fail_next("POST", r"/preupload/")
    hub_server.fail_next("PUT", r"^/_lfs-upload/")
    api.create_commit(REPO, [CommitOperationAdd("image/new.parquet", parquet_bytes([99]))],
                      commit_message="retried", repo_type="dataset")
    assert hub_server.counters["preupload"] == 2 and hub_server.counters["lfs_upload"] == 2
    assert hub_server.counters["lfs_files_uploaded"] == 1 and hub_server.counters["commits_created"] == 1


def test_auth(hub_server):
    api = HfApi()
    api.create_repo("test-user/secret", repo_type="dataset", private=True)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).dataset_info("test-user/secret")
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong").dataset_info("test-user/secret")
    assert err.value.response.status_code == 401
    assert api.whoami()["name"] == "test-user"
