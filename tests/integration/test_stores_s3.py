"""The store contract, checked against LocalStore and S3Store (moto) with the same assertions,
plus S3-only behaviour: multipart uploads, retries, verification and error messages."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path

import pytest

from dataset_assets.errors import SnapshotExists, StoreError
from dataset_assets.storage.stores import SUCCESS, LocalStore, StoredObject, open_store

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def stage(store, prefix: str, files: dict[str, bytes]) -> Path:
    staging = store.staging_dir(prefix)
    for name, data in files.items():
        write(staging / name, data)
    return staging


def keys(store, prefix: str) -> list[str]:
    return [o.key for o in store.list(prefix)]


# --- objects -----------------------------------------------------------------------------


def test_put_read_exists(store, tmp_path):
    store.put_bytes("a/b/one.txt", b"one")
    store.put_file("a/b/two.bin", write(tmp_path / "src" / "two.bin", b"\x00two" * 1000))
    assert store.read_bytes("a/b/one.txt") == b"one"
    assert store.read_bytes("a/b/two.bin") == b"\x00two" * 1000
    assert store.exists("a/b/one.txt")
    assert not store.exists("a/b/missing.txt")
    assert store.sha256("a/b/one.txt") == hashlib.sha256(b"one").hexdigest()
    with store.open("a/b/one.txt") as fh:
        assert fh.read(2) == b"on"
        assert fh.read() == b"e"
    with pytest.raises(FileNotFoundError):
        store.read_bytes("a/b/missing.txt")


def test_put_overwrites(store):
    store.put_bytes("k", b"old")
    store.put_bytes("k", b"new!")
    assert store.read_bytes("k") == b"new!"
    assert store.list("k") == [StoredObject("k", 4)]


def test_list_is_recursive_sorted_and_path_based(store):
    for key in ["s/2026-01-02/t/b.parquet", "s/2026-01-02/t/a.parquet", "s/2026-01-02/u/x", "s/2026-01-020/y", "top"]:
        store.put_bytes(key, key.encode())
    assert keys(store, "s/2026-01-02") == ["s/2026-01-02/t/a.parquet", "s/2026-01-02/t/b.parquet", "s/2026-01-02/u/x"]
    assert keys(store, "s/2026-01-02/") == keys(store, "s/2026-01-02")
    assert store.list("s/2026-01-02/t/a.parquet") == [StoredObject("s/2026-01-02/t/a.parquet", len("s/2026-01-02/t/a.parquet"))]
    assert store.list("nothing/here") == []
    assert keys(store, "") == sorted(keys(store, "s") + ["top"])
    assert list(store.iter_prefixes("s")) == ["s/2026-01-02", "s/2026-01-020"]


def test_iter_prefixes_lists_one_level(store):
    store.put_bytes("snapshots/2026-01-02/image/a.parquet", b"1")
    store.put_bytes("snapshots/2026-01-02/audio/deep/b.parquet", b"2")
    store.put_bytes("snapshots/2026-01-01/README.md", b"3")
    store.put_bytes("snapshots/top.txt", b"4")
    assert list(store.iter_prefixes("snapshots")) == ["snapshots/2026-01-01", "snapshots/2026-01-02"]
    assert list(store.iter_prefixes("snapshots/2026-01-02/")) == ["snapshots/2026-01-02/audio", "snapshots/2026-01-02/image"]
    assert list(store.iter_prefixes("snapshots/2026-01-01")) == []
    assert list(store.iter_prefixes("nothing/here")) == []
    store.staging_dir("snapshots/2026-01-03/image")  # staging is never a child
    assert "snapshots/.staging" not in list(store.iter_prefixes("snapshots"))
    assert all(not p.startswith(".") for p in store.iter_prefixes(""))


def test_delete_prefix(store):
    for key in ["d/x/1", "d/x/sub/2", "d/xy/3", "d/z"]:
        store.put_bytes(key, b"1")
    store.delete_prefix("d/x")
    assert keys(store, "d") == ["d/xy/3", "d/z"]
    store.delete_prefix("d/z")  # a single object
    assert keys(store, "d") == ["d/xy/3"]
    store.delete_prefix("d/nothing")  # no error


def test_copy(store):
    store.put_bytes("src/a", b"payload")
    store.copy("src/a", "dst/deep/a")
    assert store.read_bytes("dst/deep/a") == b"payload"
    assert store.read_bytes("src/a") == b"payload"
    with pytest.raises(FileNotFoundError):
        store.copy("src/missing", "dst/b")


# --- staging and publishing ---------------------------------------------------------------


def test_staging_dir_is_fresh(store):
    first = store.staging_dir("snap/t")
    write(first / "leftover.parquet", b"x")
    second = store.staging_dir("snap/t")
    assert second.is_dir() and list(second.iterdir()) == []
    assert store.staging_dir("snap/other") != second


def test_publish_makes_files_visible_with_success(store):
    staging = stage(store, "snap/2026-01-01/t", {"part-0.parquet": b"p0", "sub/part-1.parquet": b"p1" * 100, "_manifest.json": b"{}"})
    assert not store.is_complete("snap/2026-01-01/t")
    store.commit_dir(staging, "snap/2026-01-01/t")
    assert store.is_complete("snap/2026-01-01/t")
    assert keys(store, "snap/2026-01-01/t") == [
        "snap/2026-01-01/t/_SUCCESS",
        "snap/2026-01-01/t/_manifest.json",
        "snap/2026-01-01/t/part-0.parquet",
        "snap/2026-01-01/t/sub/part-1.parquet",
    ]
    assert store.read_bytes("snap/2026-01-01/t/sub/part-1.parquet") == b"p1" * 100
    assert not staging.exists()


def test_publish_keeps_staged_success_content(store):
    staging = stage(store, "snap/t", {"a": b"a", SUCCESS: b"done\n"})
    store.commit_dir(staging, "snap/t")
    assert store.read_bytes(f"snap/t/{SUCCESS}") == b"done\n"


def test_publish_over_complete_prefix_requires_replace(store):
    store.commit_dir(stage(store, "snap/t", {"old.parquet": b"old", "both.parquet": b"old"}), "snap/t")
    staging = stage(store, "snap/t", {"new.parquet": b"new", "both.parquet": b"new"})
    with pytest.raises(SnapshotExists, match="snap/t is already complete"):
        store.commit_dir(staging, "snap/t")
    assert store.read_bytes("snap/t/both.parquet") == b"old"  # untouched

    store.commit_dir(staging, "snap/t", replace=True)
    assert keys(store, "snap/t") == ["snap/t/_SUCCESS", "snap/t/both.parquet", "snap/t/new.parquet"]
    assert store.read_bytes("snap/t/both.parquet") == b"new"


def test_publish_clears_leftovers_of_incomplete_prefix(store):
    store.put_bytes("snap/t/stale-part.parquet", b"from an interrupted run")
    store.put_bytes("snap/t/nested/stale", b"x")
    store.commit_dir(stage(store, "snap/t", {"part.parquet": b"fresh"}), "snap/t")  # no replace needed
    assert keys(store, "snap/t") == ["snap/t/_SUCCESS", "snap/t/part.parquet"]


def test_publish_reuse_copies(store):
    store.commit_dir(stage(store, "snap/d1/t", {"p0.parquet": b"unchanged", "p1.parquet": b"v1"}), "snap/d1/t")
    staging = stage(store, "snap/d2/t", {"p1.parquet": b"v2"})
    store.commit_dir(staging, "snap/d2/t", reuse={"p0.parquet": "snap/d1/t/p0.parquet"})
    assert keys(store, "snap/d2/t") == ["snap/d2/t/_SUCCESS", "snap/d2/t/p0.parquet", "snap/d2/t/p1.parquet"]
    assert store.read_bytes("snap/d2/t/p0.parquet") == b"unchanged"
    assert store.read_bytes("snap/d1/t/p0.parquet") == b"unchanged"  # the source stays


def test_publish_replace_reusing_from_the_same_prefix(store):
    store.commit_dir(stage(store, "snap/t", {"keep.parquet": b"keep", "drop.parquet": b"drop"}), "snap/t")
    staging = stage(store, "snap/t", {"new.parquet": b"new"})
    store.commit_dir(staging, "snap/t", reuse={"renamed.parquet": "snap/t/keep.parquet", "keep.parquet": "snap/t/keep.parquet"}, replace=True)
    assert keys(store, "snap/t") == ["snap/t/_SUCCESS", "snap/t/keep.parquet", "snap/t/new.parquet", "snap/t/renamed.parquet"]
    assert store.read_bytes("snap/t/renamed.parquet") == b"keep"
    assert keys(store, "") == keys(store, "snap/t")  # no temporary copies left visible


def test_local_stage_reused_links_from_several_folders_and_replaces_stale_files(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.commit_dir(stage(store, "snap/d1/t", {"a.parquet": b"a1", "b.parquet": b"b1"}), "snap/d1/t")
    store.commit_dir(stage(store, "snap/d2/t", {"c.parquet": b"c2"}), "snap/d2/t")
    staging = stage(store, "snap/d3/t", {"a.parquet": b"stale, from an interrupted run"})
    (staging / "sub").mkdir()
    store.stage_reused(staging, {"a.parquet": "snap/d1/t/a.parquet", "b.parquet": "snap/d1/t/b.parquet",
                                 "c.parquet": "snap/d2/t/c.parquet", "sub/c.parquet": "snap/d2/t/c.parquet"})
    got = {p.relative_to(staging).as_posix(): p.read_bytes() for p in staging.rglob("*.parquet")}
    assert got == {"a.parquet": b"a1", "b.parquet": b"b1", "c.parquet": b"c2", "sub/c.parquet": b"c2"}
    assert os.stat(staging / "a.parquet").st_ino == os.stat(store.local_path("snap/d1/t/a.parquet")).st_ino  # a link, not a copy
    with pytest.raises(StoreError, match="outside the store"):
        store.stage_reused(staging, {"x.parquet": "../elsewhere/x.parquet"})


# --- S3 only -----------------------------------------------------------------------------


def _fault_injector(client, operations: set[str], failures: int | None, status: int = 500, code: str = "InternalError"):
    """Answer the first ``failures`` calls (all if None) of ``operations`` with an S3 error, before they reach the server."""
    from botocore.awsrequest import AWSResponse

    class _Raw:
        def __init__(self, body: bytes):
            self._body = body

        def stream(self, **kwargs):
            yield self._body

    lock = threading.Lock()
    seen: dict[str, int] = {"calls": 0, "failed": 0}

    def before_send(request, event_name, **kwargs):
        op = event_name.rsplit(".", 1)[-1]  # before-send.s3.<Operation>
        if op not in operations:
            return None
        with lock:
            seen["calls"] += 1
            if failures is not None and seen["failed"] >= failures:
                return None
            seen["failed"] += 1
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected</Message><RequestId>x</RequestId></Error>'.encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/xml", "Content-Length": str(len(body))}, _Raw(body))

    client.meta.events.register("before-send.s3", before_send)
    return seen


def test_s3_multipart_upload_verifies(s3_store, tmp_path):
    from dataset_assets.storage.stores.s3 import S3Store, _digest_file

    store = S3Store(s3_store.client, s3_store.bucket, s3_store.prefix, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, staging_root=tmp_path / "stg")
    data = os.urandom(12 * MiB)
    staging = stage(store, "snap/big", {"big.parquet": data, "small.parquet": b"s"})
    calls = []
    store.client.meta.events.register("before-send.s3", lambda event_name, **kw: calls.append(event_name.rsplit(".", 1)[-1]))
    store.commit_dir(staging, "snap/big")
    assert calls.count("UploadPart") == 3 and "CreateMultipartUpload" in calls
    assert store.is_complete("snap/big")
    assert store.sha256("snap/big/big.parquet") == hashlib.sha256(data).hexdigest()
    head = store.client.head_object(Bucket=store.bucket, Key=store._key("snap/big/big.parquet"), ChecksumMode="ENABLED")
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    # S3's checksum of a multipart object is composite, and the store recomputes it from the local file
    digest = _digest_file(write(tmp_path / "copy-of-big", data), 5 * MiB)
    assert head["ChecksumSHA256"].split("-")[0] == digest.composite_b64 != digest.full_b64
    # the multipart object can be reused, and the copy is verified against it
    store.commit_dir(stage(store, "snap/big2", {}), "snap/big2", reuse={"big.parquet": "snap/big/big.parquet"})
    assert store.sha256("snap/big2/big.parquet") == hashlib.sha256(data).hexdigest()


def test_s3_multipart_copy_keeps_metadata(s3_store, tmp_path):
    from dataset_assets.storage.stores.s3 import META_SHA256, S3Store

    store = S3Store(s3_store.client, s3_store.bucket, s3_store.prefix, copy_multipart_threshold=5 * MiB, staging_root=tmp_path / "stg")
    data = os.urandom(6 * MiB)
    store.put_file("a/big", write(tmp_path / "big", data))
    store.copy("a/big", "b/big")  # UploadPartCopy path (5 GiB and up in real use)
    assert store.sha256("b/big") == hashlib.sha256(data).hexdigest()
    heads = [store.client.head_object(Bucket=store.bucket, Key=store._key(k)) for k in ("a/big", "b/big")]
    metas = [(h.get("Metadata") or {}).get(META_SHA256) for h in heads]
    assert metas[0] and metas[1] == metas[0]  # the copy carries the source's sha256 metadata


def test_s3_verification_catches_a_corrupted_upload(s3_store, tmp_path):
    """A server that stores something else than was sent: the HEAD check refuses it."""
    original = s3_store.client.head_object

    def lying_head(**kwargs):
        resp = original(**kwargs)
        resp["ContentLength"] += 1
        return resp

    s3_store.client.head_object = lying_head
    with pytest.raises(StoreError, match=r"a\.bin .*failed verification.*rerun is safe"):
        s3_store.put_file("a.bin", write(tmp_path / "a.bin", b"abc"))


def test_s3_transient_errors_are_retried(s3_store, tmp_path):
    from dataset_assets.storage.stores.s3 import S3Store

    store = S3Store(s3_store.client, s3_store.bucket, s3_store.prefix, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, staging_root=tmp_path / "stg")
    assert store.client.meta.config.retries["mode"] == "standard"
    puts = _fault_injector(store.client, {"PutObject"}, failures=2, status=503, code="SlowDown")
    parts = _fault_injector(store.client, {"UploadPart"}, failures=2)
    staging = stage(store, "snap/t", {"a.parquet": b"a" * 1000, "big.parquet": os.urandom(11 * MiB)})
    store.commit_dir(staging, "snap/t")
    assert store.is_complete("snap/t")
    assert puts["failed"] == 2 and puts["calls"] > 2
    assert parts["failed"] == 2 and parts["calls"] == 3 + 2


def test_s3_persistent_failure_raises_store_error_without_success(s3_env, s3_store, monkeypatch, tmp_path):
    from dataset_assets.storage.stores.s3 import S3Store

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    store = S3Store.from_url(s3_store.url, staging_root=tmp_path / "stg")
    assert store.client.meta.config.retries["total_max_attempts"] == 3
    injected = _fault_injector(store.client, {"PutObject"}, failures=None)
    staging = stage(store, "snap/t", {"a.parquet": b"a", "b.parquet": b"b"})
    with pytest.raises(StoreError) as err:
        store.commit_dir(staging, "snap/t")
    message = str(err.value)
    assert "snap/t/" in message and "rerun is safe" in message and "InternalError" in message
    assert injected["calls"] >= 3  # retried
    assert not s3_store.is_complete("snap/t")
    assert not s3_store.exists(f"snap/t/{SUCCESS}")
    # the rerun (the fault is gone) succeeds
    s3_store.commit_dir(stage(s3_store, "snap/t", {"a.parquet": b"a"}), "snap/t")
    assert s3_store.is_complete("snap/t")


def test_s3_failed_replace_leaves_old_snapshot_incomplete(s3_store, monkeypatch, tmp_path):
    from dataset_assets.storage.stores.s3 import S3Store

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    s3_store.commit_dir(stage(s3_store, "snap/t", {"a.parquet": b"old"}), "snap/t")
    store = S3Store.from_url(s3_store.url, staging_root=tmp_path / "stg")
    _fault_injector(store.client, {"PutObject"}, failures=None, status=500)
    with pytest.raises(StoreError):
        store.commit_dir(stage(store, "snap/t", {"a.parquet": b"new"}), "snap/t", replace=True)
    assert not s3_store.is_complete("snap/t")


def test_s3_missing_bucket(s3_store):
    from dataset_assets.storage.stores.s3 import S3Store

    store = S3Store(s3_store.client, "no-such-bucket-here", "p")
    for action in (lambda: store.put_bytes("k", b"x"), lambda: store.list("x"), lambda: store.read_bytes("k")):
        with pytest.raises(StoreError, match="'no-such-bucket-here' does not exist.*check the bucket name"):
            action()
    with pytest.raises(StoreError, match="no-such-bucket-here"):
        store.commit_dir(store.staging_dir("snap/t"), "snap/t")


def test_s3_access_denied_and_bad_credentials(s3_store):
    _fault_injector(s3_store.client, {"GetObject"}, failures=None, status=403, code="AccessDenied")
    _fault_injector(s3_store.client, {"ListObjectsV2"}, failures=None, status=403, code="InvalidAccessKeyId")
    with pytest.raises(StoreError, match="Access was denied.*AWS_ACCESS_KEY_ID"):
        s3_store.read_bytes("k")
    with pytest.raises(StoreError, match="rejected the S3 credentials.*AWS_SECRET_ACCESS_KEY") as err:
        s3_store.list("x")
    assert "testing" not in str(err.value)  # no secrets in messages


def test_s3_unreachable_endpoint(s3_env, monkeypatch, tmp_path):
    import socket

    from dataset_assets.storage.stores.s3 import S3Store

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = S3Store.from_url("s3://some-bucket/p", staging_root=tmp_path)
    with pytest.raises(StoreError, match=rf"Cannot reach the S3 endpoint http://127.0.0.1:{port}.*AWS_ENDPOINT_URL_S3"):
        store.list("x")


def test_open_store_s3_url_uses_environment(s3_store):
    store = open_store(s3_store.url)
    assert store.url == s3_store.url and store.client.meta.endpoint_url == os.environ["AWS_ENDPOINT_URL_S3"]
    s3_store.put_bytes("x/y", b"hello")
    assert store.read_bytes("x/y") == b"hello"
    # the layout under the prefix is the same as LocalStore's under its root
    assert [o["Key"] for o in store.client.list_objects_v2(Bucket=store.bucket)["Contents"]] == ["store-root/x/y"]


def test_primary_key_report_reads_shards_from_the_store(store, tmp_path):
    """The blocking primary-key check reads every shard through the store (spooled from S3),
    and finds nulls and duplicates across shards."""
    from types import SimpleNamespace

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataset_assets.storage.checks import primary_key_report
    from dataset_assets.storage.manifest import FileEntry

    shards = {"a.parquet": ["k1", "k2", None], "b.parquet": ["k3", "k1", "k4"]}
    files = {}
    for name, ids in shards.items():
        pq.write_table(pa.table({"identifier": pa.array(ids, pa.string())}), tmp_path / name)
        files[name] = (tmp_path / name).read_bytes()
    store.commit_dir(stage(store, "snap/t", files), "snap/t")
    manifest = SimpleNamespace(files=[FileEntry(path=n, rows=3, bytes=len(b), sha256="") for n, b in files.items()])
    r = primary_key_report(store, "snap/t", manifest, "identifier")
    assert (r.rows, r.nulls, r.duplicates, r.examples, r.ok) == (6, 1, 1, ["k1"], False)


def test_dagster_snapshot_store_on_s3_resource(s3_env, tmp_path):
    """The Dagster resource's S3 path (a client from dagster_aws's S3Resource, as
    default_resources builds it) publishes and reads like the CLI's store."""
    import boto3
    from dagster_aws.s3 import S3Resource

    from dataset_assets.resources import SnapshotStore

    bucket = f"res-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    store = SnapshotStore(url=f"s3://{bucket}/root", s3=S3Resource(endpoint_url=s3_env)).open()
    assert store.url == f"s3://{bucket}/root"
    store.commit_dir(stage(store, "snap/t", {"a.parquet": b"x" * 1000}), "snap/t")
    assert store.is_complete("snap/t") and store.read_bytes("snap/t/a.parquet") == b"x" * 1000
    assert store.sha256("snap/t/a.parquet") == hashlib.sha256(b"x" * 1000).hexdigest()
