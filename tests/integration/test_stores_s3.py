"""The store contract (tests/store_contract.py) on ``S3Store`` against moto's S3 server, and
S3-only behaviour: multipart uploads, retries, verification and error messages."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid

import pytest

from store_contract import MiB, StoreContract, stage, write

from dataset_assets.errors import StoreError
from dataset_assets.storage.stores import SUCCESS, open_store


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3_store):
        return s3_store


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
