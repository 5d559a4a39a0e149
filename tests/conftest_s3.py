"""S3 fixtures backed by an in-process moto server.

Import into ``tests/conftest.py`` with ``from conftest_s3 import *`` (or
``pytest_plugins = ["conftest_s3"]``). Fixtures:

* ``moto_server`` (session): the endpoint URL, e.g. ``http://127.0.0.1:41234``.
* ``s3_env``: AWS_* variables pointing at it with test credentials.
* ``s3_store``: an ``S3Store`` on a fresh bucket, built by ``S3Store.from_url``
  the way ``open_store("s3://...")`` builds it.
"""

from __future__ import annotations

import uuid

import boto3
import pytest

from s3_server import MotoS3Server

__all__ = ["moto_server", "s3_env", "s3_store"]

TEST_REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server():
    server = MotoS3Server()
    endpoint = server.start()
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch, moto_server, tmp_path):
    """Test credentials and the moto endpoint in the standard AWS variables; nothing from the user's ~/.aws."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_server


@pytest.fixture
def s3_store(s3_env, tmp_path):
    from dataset_assets.storage.stores.s3 import S3Store

    bucket = f"test-{uuid.uuid4().hex[:16]}"
    client = boto3.client("s3")  # our own: tests may inject faults into the store's client
    client.create_bucket(Bucket=bucket)
    yield S3Store.from_url(f"s3://{bucket}/store-root", staging_root=tmp_path / "s3-staging")
    # moto keeps everything in memory for the whole session: empty and drop the bucket.
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)
