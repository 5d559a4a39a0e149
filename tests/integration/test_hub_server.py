"""The local Hub (``hub_server.py``) driven by the real ``huggingface_hub`` and ``datasets`` clients, through
Xet (the default, as in production) and through the LFS protocol (``HF_HUB_DISABLE_XET=1``)."""

from __future__ import annotations

import hashlib
import io

import hf_xet
import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import constants
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


def write(hub, name: str, data: bytes):
    path = hub.storage_dir.parent / "scratch" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


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


XET_AND_LFS = pytest.mark.parametrize("hub_server", ["xet", "lfs"], indirect=True)


def uploaded_files(hub) -> int:
    """Large files that reached the Hub: LFS objects received, or files committed from the Xet CAS."""
    return hub.counters["lfs_files_uploaded"] + hub.counters["xet_files_committed"]


@XET_AND_LFS
def test_repo_lifecycle_and_reads(hub_server, two_commits):
    api, first, second = two_commits
    xet = hub_server.mode == "xet"
    hub_server.page_size = 2  # every listing below is paginated (Link: rel="next")
    assert hub_server.counters["commits_created"] == 2
    assert uploaded_files(hub_server) == 3  # README.md is a regular file
    assert hub_server.counters["lfs_files_uploaded" if xet else "xet_files_committed"] == 0
    assert (hub_server.counters["xet_write_token"] > 0) == xet

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
    assert tree["README.md"].xet_hash is None
    assert tree["image"].tree_id and "image/train-00001.parquet" not in tree
    assert api.list_repo_files(REPO, repo_type="dataset", revision=TAG) == [
        ".gitattributes", "README.md", "image/train-00000.parquet", "image/train-00001.parquet"]
    [info_shard] = api.get_paths_info(REPO, ["image/train-00002.parquet", "missing"], repo_type="dataset")
    assert info_shard.lfs.sha256 == shard.lfs.sha256 and info_shard.xet_hash == shard.xet_hash
    if xet:  # the Xet file hash the server read from the client's shard is the one hf_xet computes
        [expected] = hf_xet.hash_files([str(write(hub_server, "shard.parquet", data))])
        assert shard.xet_hash == expected.hash
    else:
        assert shard.xet_hash is None

    # Downloads: by branch, by tag, by commit sha; HfFileSystem with ranges.
    hub_server.reset_counters()
    path = hf_hub_download(REPO, "image/train-00002.parquet", repo_type="dataset")
    assert open(path, "rb").read() == data
    path = hf_hub_download(REPO, "image/train-00001.parquet", repo_type="dataset", revision=TAG)
    assert open(path, "rb").read() == parquet_bytes([3])
    # With Xet the files are reconstructed from the CAS (after a read token), never served by resolve.
    assert (hub_server.counters["xet_read_token"] > 0) == xet
    assert hub_server.counters["resolve_get"] == (0 if xet else 2)
    fs = HfFileSystem()
    assert fs.cat(f"datasets/{REPO}@{first}/README.md") == README.encode()
    with fs.open(f"datasets/{REPO}/image/train-00002.parquet", "rb", block_size=16) as fh:
        fh.seek(4)
        assert fh.read(8) == data[4:12]  # a range read: through the CAS bridge for a Xet file
    assert (hub_server.counters["xet_bridge_get"] > 0) == xet
    assert sorted(fs.glob(f"datasets/{REPO}/image/*.parquet")) == [
        f"datasets/{REPO}/image/train-00000.parquet", f"datasets/{REPO}/image/train-00002.parquet"]

    api.delete_tag(REPO, tag=TAG, repo_type="dataset")
    assert api.list_repo_refs(REPO, repo_type="dataset").tags == []


@XET_AND_LFS
def test_load_dataset_per_revision(hub_server, two_commits):
    import datasets

    old = datasets.load_dataset(REPO, "image", revision=TAG, split="train")
    assert sorted(old["id"]) == [1, 2, 3]
    new = datasets.load_dataset(REPO, "image", split="train")
    assert sorted(new["id"]) == [1, 2, 10, 11, 12]


@XET_AND_LFS
def test_unchanged_lfs_files_are_not_uploaded_again(hub_server, two_commits):
    api, _, second = two_commits
    hub_server.reset_counters()
    cas_before = hub_server.cas_usage()
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
    if hub_server.mode == "xet":  # hf_xet chunks the file again, every chunk dedups: no new xorb
        assert hub_server.counters["lfs_batch"] == 0
        assert hub_server.cas_usage()["xorb_bytes"] == cas_before["xorb_bytes"]
    else:
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


@pytest.mark.parametrize("hub_server", ["lfs"], indirect=True)  # the LFS upload PUT
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


@pytest.mark.parametrize("hub_server", ["xet"], indirect=True)
def test_xet_token_routes(hub_server, two_commits):
    """Both token routes answer what hf_xet reads (the JSON body) and what huggingface_hub reads (headers)."""
    auth = {"Authorization": f"Bearer {hub_server.token}"}
    base = f"{hub_server.endpoint}/api/datasets/{REPO}"
    for route in ("xet-write-token/main", f"xet-read-token/{TAG}"):
        r = httpx2.get(f"{base}/{route}", headers=auth)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"accessToken", "exp", "casUrl"}
        assert body["casUrl"] == r.headers["X-Xet-Cas-Url"] == f"local://{hub_server.storage_dir / 'cas'}"
        assert body["accessToken"] == r.headers["X-Xet-Access-Token"]
        assert body["exp"] == int(r.headers["X-Xet-Token-Expiration"]) > 0
    assert httpx2.get(f"{base}/xet-read-token/main").status_code == 401  # a private repo, anonymous
    assert httpx2.get(f"{base}/xet-read-token/nope", headers=auth).status_code == 404

    # resolve: a redirect to the CAS bridge on another host, with the Xet hash and the token route
    head = httpx2.head(f"{hub_server.endpoint}/datasets/{REPO}/resolve/main/image/train-00002.parquet", headers=auth)
    entry = hub_server.files(REPO)["image/train-00002.parquet"]
    assert head.status_code == 302 and head.headers["X-Xet-Hash"] == entry.xet_hash
    assert head.links["xet-auth"]["url"] == f"{base}/xet-read-token/{hub_server.head(REPO)}"
    assert head.headers["X-Linked-Size"] == str(entry.size) and head.headers["Location"].startswith("http://localhost:")
    assert httpx2.get(head.headers["Location"]).content == parquet_bytes([10, 11, 12])  # no auth: a signed URL
    assert httpx2.get(head.headers["Location"] + "0").status_code == 403

    hub_server.xet = False  # a Hub without Xet
    assert httpx2.get(f"{base}/xet-write-token/main", headers=auth).status_code == 404
    plain = httpx2.get(f"{hub_server.endpoint}/datasets/{REPO}/resolve/main/image/train-00002.parquet", headers=auth)
    assert plain.status_code == 200 and "X-Xet-Hash" not in plain.headers
    assert plain.content == parquet_bytes([10, 11, 12])


@pytest.mark.parametrize("hub_server", ["xet"], indirect=True)
def test_xet_and_lfs_clients_read_each_others_files(hub_server, monkeypatch, two_commits):
    """A file uploaded through Xet is served to an LFS-only client (reconstructed from the CAS), and one uploaded
    through LFS to a Xet client; both protocols see the same tree."""
    api, _, _ = two_commits
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    api.create_commit(REPO, [CommitOperationAdd("image/lfs.parquet", parquet_bytes([7, 8]))],
                      commit_message="lfs", repo_type="dataset")
    assert hub_server.counters["lfs_files_uploaded"] == 1
    path = hf_hub_download(REPO, "image/train-00002.parquet", repo_type="dataset")  # uploaded through Xet
    assert open(path, "rb").read() == parquet_bytes([10, 11, 12])
    assert hub_server.counters["xet_bridge_get"] == 1
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    path = hf_hub_download(REPO, "image/lfs.parquet", repo_type="dataset", force_download=True)
    assert open(path, "rb").read() == parquet_bytes([7, 8])
    assert hub_server.files(REPO)["image/lfs.parquet"].xet_hash is None
