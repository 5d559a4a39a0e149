"""A store in an S3 bucket (AWS S3 or anything that speaks its API: MinIO, Ceph, moto).

Same key layout and semantics as :class:`~dataset_assets.storage.stores.local.LocalStore`:
store key ``snapshots/2026-11-21/image/x.parquet`` is object
``<prefix>/snapshots/2026-11-21/image/x.parquet`` in the bucket.

Committing cannot be one atomic rename on S3, and a reader must never see two
versions of a table snapshot mixed, so every commit of a prefix ``P`` is a new,
immutable *version* with its own object names, switched to by one small
*pointer* written last::

    P/_SUCCESS                          the pointer: {"format": ..., "version": "<v>"}
    P/.versions/<v>/_manifest.json      the version's files (store key P/_manifest.json)
    P/.versions/<v>/train-....parquet   (store key P/train-....parquet)
    P/.versions/<v>/_SUCCESS            the version's own marker (its staged content)

:meth:`S3Store.commit_dir` uploads (or copies server-side) every file of the new
version under ``P/.versions/<v>/`` and checks it, while the old version stays
complete and readable; then it writes the pointer ``P/_SUCCESS`` (one PUT, atomic
for readers: S3 reads after a write are strongly consistent), and only then
deletes the version it replaced, plain keys left at ``P`` (an older layout, or
leftovers) and versions of interrupted commits older than ``STALE_VERSION_AGE``
(never a version another writer may still be uploading: of two concurrent
commits, the last pointer wins and is whole). A failed commit removes its partial
version and leaves the old one complete, the pointer untouched.

Store keys stay the same (``P/_manifest.json``, ``P/train-00000-000.parquet``):
the store resolves them through the pointer, and pins the version per prefix for
the life of the store object. Reading ``P/_SUCCESS`` or ``P/_manifest.json``
(``is_complete``, ``load_manifest``) reads the pointer afresh and pins what it
names; every other key of ``P`` (the shards, ``list``) is read from the pinned
version. So a reader that reads ``_SUCCESS`` and the manifest, then the files,
gets every file from the version its manifest describes, or, if that version was
replaced and deleted meanwhile, ``FileNotFoundError``: never a file of another
version. A prefix whose ``_SUCCESS`` is not a pointer (written by an older
release, or by ``put_bytes``) is read as plain keys, as before.

Every upload is checked after the fact with a HEAD: the size, the full-file
SHA-256 kept in the object's metadata (``x-amz-meta-sha256``), and S3's own
SHA-256 checksum (``ChecksumAlgorithm="SHA256"``), which S3 also checks on
receipt. For a multipart upload S3's checksum is *composite* (the SHA-256 of the
parts' SHA-256 digests, shown as ``<base64>-<parts>``); it is recomputed
locally from the same part size the transfer used.

This module takes a ready boto3 S3 client (the Dagster layer builds one with
``dagster_aws``'s ``S3Resource``); :meth:`S3Store.from_url` builds one from the
standard AWS environment variables.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from dataset_assets.errors import SnapshotExists, StoreError
from dataset_assets.storage.stores.base import MANIFEST, SUCCESS, Store, StoredObject

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
MAX_COPY_OBJECT = 5 * GiB  # the largest object CopyObject copies in one request
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
META_SHA256 = "sha256"  # stored as x-amz-meta-sha256: hex SHA-256 of the whole object
SKIP_DIRS = (".staging", ".trash")  # like LocalStore: never listed
VERSIONS = ".versions"  # P/.versions/<version>/: the objects of one committed version of P
POINTER_FORMAT = "dataset-assets/s3-version/1"
POINTER_MAX = 4096  # a _SUCCESS larger than this is a plain marker, not a pointer
STALE_VERSION_AGE = dt.timedelta(days=2)  # an unnamed version this old is an interrupted commit's: removed

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
    "AuthorizationHeaderMalformed",
}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}


def client_config(max_attempts: int | None = None, retry_mode: str | None = None, max_pool_connections: int = 32) -> Any:
    """The botocore ``Config`` this module recommends: retries with backoff on throttling, 5xx and dropped connections.

    ``max_attempts`` counts the first try too (like botocore's ``AWS_MAX_ATTEMPTS``);
    ``AWS_MAX_ATTEMPTS`` / ``AWS_RETRY_MODE`` are the defaults, else 10 and "standard"
    (exponential backoff with jitter: 50 ms doubling for 5xx, 1 s doubling for throttling, at most 20 s).
    """
    from botocore.config import Config

    if max_attempts is None:
        max_attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 10)
    if retry_mode is None:
        retry_mode = os.environ.get("AWS_RETRY_MODE") or "standard"
    return Config(
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        connect_timeout=10,
        read_timeout=120,
    )


@dataclass(frozen=True)
class _Digest:
    size: int
    sha256_hex: str
    full_b64: str
    composite_b64: str | None  # for a multipart upload: S3's composite checksum


class S3Store(Store):
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 64 * MiB,
        max_concurrency: int = 6,
        max_workers: int = 4,
        copy_multipart_threshold: int = MAX_COPY_OBJECT,
        staging_root: str | Path | None = None,
    ):
        """``client`` is a boto3 S3 client; its retry configuration is used as is (see :func:`client_config`).

        ``max_concurrency`` bounds the S3 requests in flight for transfers and
        ``max_workers`` the files hashed and checked at once; keep their sum
        within the client's ``max_pool_connections`` (botocore's default is 10).
        Objects larger than ``copy_multipart_threshold`` are copied with
        UploadPartCopy. Staging directories live under ``staging_root``
        (default: ``$DATASET_ASSETS_STAGING`` or the system temp directory).
        """
        if not bucket:
            raise StoreError("The S3 store URL has no bucket; use s3://bucket/prefix.")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self.max_concurrency = max_concurrency
        self.max_workers = max_workers
        self.copy_multipart_threshold = min(copy_multipart_threshold, MAX_COPY_OBJECT)
        if staging_root is None:
            staging_root = os.environ.get("DATASET_ASSETS_STAGING") or Path(tempfile.gettempdir()) / "dataset-assets-staging"
        self.staging_root = Path(staging_root).expanduser()
        self._pins: dict[str, str | None] = {}  # prefix -> the version this store reads there (None: plain keys)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3Store:
        """``s3://bucket/prefix`` with a client built from the standard AWS environment.

        boto3 itself reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
        AWS_SESSION_TOKEN / AWS_PROFILE, AWS_DEFAULT_REGION, and the endpoint
        from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (for MinIO, moto, ...).
        """
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise StoreError(f"{url!r} is not an S3 store URL; use s3://bucket/prefix.")
        import boto3

        region = None if os.environ.get("AWS_DEFAULT_REGION") else os.environ.get("AWS_REGION")
        try:
            client = boto3.session.Session().client("s3", region_name=region, config=client_config())
        except Exception as exc:  # a broken profile or config file
            raise StoreError(f"Cannot set up an S3 client for {url} ({type(exc).__name__}); check AWS_PROFILE, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL_S3.") from None
        return cls(client, parts.netloc, parts.path, **kwargs)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    # --- keys --------------------------------------------------------------
    def _norm(self, key: str) -> str:
        """``key`` relative to the store root, normalised ('' is the root)."""
        parts = [p for p in key.strip("/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise StoreError(f"Key {key!r} points outside the store {self.url}.")
        return "/".join(parts)

    def _raw(self, rel: str) -> str:
        """The S3 key of the object at ``rel`` (relative to the store root, not resolved)."""
        if not self.prefix:
            return rel
        return f"{self.prefix}/{rel}" if rel else self.prefix

    def _key(self, key: str) -> str:
        """The S3 key that holds store key ``key`` now (resolved through its prefix's pointer)."""
        return self._raw(self._resolve(self._norm(key)))

    def location(self, key: str) -> str:
        """``s3://bucket/<the object's key>``: under the version its prefix's pointer names."""
        return f"s3://{self.bucket}/{self._key(key)}"

    def _rel(self, s3_key: str) -> str:
        return s3_key[len(self.prefix) + 1:] if self.prefix else s3_key

    def _endpoint(self) -> str:
        ep = str(getattr(self.client.meta, "endpoint_url", "") or "")
        p = urlsplit(ep)
        if p.username or p.password:  # never show credentials embedded in a URL
            ep = urlunsplit((p.scheme, p.hostname or "", p.path, "", ""))
        return ep or "the S3 endpoint"

    # --- versions (see the module docstring) -----------------------------------
    def _read_pointer(self, prefix: str) -> tuple[bool, str | None]:
        """Whether ``prefix/_SUCCESS`` exists, and the version it names (None: not a pointer)."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{prefix}/{SUCCESS}" if prefix else SUCCESS
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._raw(key))["Body"].read(POINTER_MAX + 1)
        except (BotoCoreError, ClientError) as exc:
            if self._is_not_found(exc):
                return False, None
            raise self._error(exc, "read", key) from None
        return True, _pointer_version(body)

    def _version(self, prefix: str, refresh: bool = False) -> str | None:
        """The version of ``prefix`` this store reads: pinned at the first look, re-read with ``refresh``."""
        if refresh or prefix not in self._pins:
            self._pins[prefix] = self._read_pointer(prefix)[1]
        return self._pins[prefix]

    def _resolve(self, rel: str, *, refresh: bool | None = None) -> str:
        """Where store key ``rel`` lives: under the pinned version of its nearest committed ancestor,
        else at ``rel`` itself. ``_SUCCESS`` and ``_manifest.json`` re-read their folder's pointer."""
        parts = rel.split("/") if rel else []
        if VERSIONS in parts:  # already a physical key
            return rel
        if refresh is None:
            refresh = bool(parts) and parts[-1] in (SUCCESS, MANIFEST)
        for i in range(len(parts) - 1, 0, -1):
            ancestor = "/".join(parts[:i])
            version = self._version(ancestor, refresh=refresh and i == len(parts) - 1)
            if version is not None:
                return "/".join([ancestor, VERSIONS, version, *parts[i:]])
        return rel

    def _logical(self, objects: Iterable[StoredObject]) -> list[StoredObject]:
        """Raw objects (keys relative to the root) as store keys: of each committed prefix only its
        pinned version, without the pointer; everything else as it is."""
        objects = [o for o in objects if not _hidden(o.key)]
        owners = {o.key.split(f"/{VERSIONS}/", 1)[0] for o in objects if f"/{VERSIONS}/" in o.key}
        # a pin of "no version" where versions exist was taken before a commit: look again
        versions = {owner: self._version(owner, refresh=self._pins.get(owner, "") is None) for owner in sorted(owners)}
        committed = {owner: v for owner, v in versions.items() if v is not None}
        out = []
        for o in objects:
            owner = next((c for c in committed if o.key.startswith(c + "/")), None)
            if owner is None:
                if f"/{VERSIONS}/" not in o.key:
                    out.append(o)  # a plain key (or a leftover version of a prefix not committed that way)
                continue
            mine = f"{owner}/{VERSIONS}/{committed[owner]}/"
            if o.key.startswith(mine):
                out.append(StoredObject(f"{owner}/{o.key[len(mine):]}", o.size))
        return sorted(out, key=lambda o: o.key)

    def _forget(self, prefix: str) -> None:
        for p in [p for p in self._pins if _under(p, prefix)]:
            del self._pins[p]

    # --- errors --------------------------------------------------------------
    def _error(self, exc: BaseException, action: str, key: str | None = None) -> StoreError:
        """One sentence for a failed S3 call: what is wrong and what to check. Never secrets."""
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        log.debug("S3 %s of %s failed", action, key, exc_info=exc)
        what = f"{_shown(key)} in {self.url}" if key is not None else self.url
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StoreError(f"No usable S3 credentials were found for {self.url}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE).")
        if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
            return StoreError(f"Cannot reach the S3 endpoint {self._endpoint()} for {self.url}; check the endpoint URL (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL) and that the server is up.")
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {}) or {}
            code = str(err.get("Code") or "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return StoreError(f"The bucket {self.bucket!r} does not exist at {self._endpoint()}; check the bucket name in the store URL {self.url} and the endpoint URL (AWS_ENDPOINT_URL_S3).")
            if code in _CREDENTIAL_CODES:
                return StoreError(f"{self._endpoint()} rejected the S3 credentials ({code}) for {self.url}; check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_DEFAULT_REGION.")
            if code in _DENIED_CODES or status == 403:
                return StoreError(f"Access was denied to {what} ({action}); check that the credentials in AWS_ACCESS_KEY_ID / AWS_PROFILE are allowed to {action} in bucket {self.bucket!r}.")
            detail = code or f"HTTP {status}"
        else:
            detail = type(exc).__name__
        if action == "upload":
            return StoreError(f"Uploading {what} failed ({detail}) even after retries; the snapshot was not marked complete, so a rerun is safe.")
        return StoreError(f"S3 {action} of {what} failed ({detail}) even after retries; check the S3 service, then rerun (a rerun is safe).")

    @staticmethod
    def _is_not_found(exc: BaseException) -> bool:
        from botocore.exceptions import ClientError

        if not isinstance(exc, ClientError):
            return False
        code = str(exc.response.get("Error", {}).get("Code") or "")
        return code in _NOT_FOUND_CODES

    def _call(self, action: str, key: str | None, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, action, key) from None

    def _head(self, rel: str) -> dict | None:
        """HEAD (with checksums) of the object at physical key ``rel``; None if it is missing."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._raw(rel), ChecksumMode="ENABLED")
        except (BotoCoreError, ClientError) as exc:
            if self._is_not_found(exc):
                return None
            raise self._error(exc, "read", rel) from None

    def _entry_retry(self, rel: str, phys: str) -> str | None:
        """For ``_SUCCESS`` and ``_manifest.json`` only: when the version just resolved vanished (a
        commit switched in between), the physical key under the pointer's new version."""
        parts = rel.split("/")
        if len(parts) < 2 or parts[-1] not in (SUCCESS, MANIFEST) or VERSIONS not in phys.split("/"):
            return None
        again = self._resolve(rel, refresh=True)
        return again if again != phys else None

    # --- objects -------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        self._put_bytes(self._resolve(self._norm(key)), data)

    def _put_bytes(self, rel: str, data: bytes) -> None:
        digest = _digest_bytes(data)
        self._call(
            "upload",
            rel,
            self.client.put_object,
            Bucket=self.bucket,
            Key=self._raw(rel),
            Body=data,
            ChecksumAlgorithm="SHA256",
            Metadata={META_SHA256: digest.sha256_hex},
        )
        self._verify_upload(rel, digest)

    def put_file(self, key: str, path: Path) -> None:
        with self._transfer_manager() as tm:
            self._put_file(tm, self._resolve(self._norm(key)), Path(path))

    def open(self, key: str) -> BinaryIO:
        from botocore.exceptions import BotoCoreError, ClientError

        rel = self._norm(key)
        phys: str | None = self._resolve(rel)
        while phys is not None:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._raw(phys))["Body"]  # StreamingBody
            except (BotoCoreError, ClientError) as exc:
                if not self._is_not_found(exc):
                    raise self._error(exc, "read", rel) from None
            phys = self._entry_retry(rel, phys)
        raise FileNotFoundError(f"{rel} does not exist in {self.url}.")

    def exists(self, key: str) -> bool:
        rel = self._norm(key)
        phys: str | None = self._resolve(rel)
        while phys is not None:
            if self._head(phys) is not None:
                return True
            phys = self._entry_retry(rel, phys)
        return False

    def list(self, prefix: str) -> list[StoredObject]:
        rel = self._norm(prefix)
        phys = self._resolve(rel)
        if phys != rel:  # inside a committed version
            out = [StoredObject(rel + o.key[len(phys):], o.size) for o in self._list_raw(f"{self._raw(phys)}/")]
        else:
            base = self._raw(rel)
            out = self._logical(self._list_raw(f"{base}/" if base else ""))
        if not out and rel:
            head = self._head(phys)  # prefix names a single object
            if head is not None:
                out = [StoredObject(rel, head["ContentLength"])]
        return sorted(out, key=lambda o: o.key)

    def iter_prefixes(self, prefix: str) -> Iterator[str]:
        """One delimited listing of the level below ``prefix`` (not every object under it)."""
        rel = self._norm(prefix)
        phys = self._resolve(rel)
        children = self._delimited(phys)
        if VERSIONS in children and phys == rel and (version := self._version(rel, refresh=self._pins.get(rel, "") is None)) is not None:
            inner = f"{rel}/{VERSIONS}/{version}"
            children = self._delimited(inner)
            phys = inner
        found = [f"{rel}/{c}" if rel else c for c in children if c not in SKIP_DIRS and c != VERSIONS]
        yield from sorted(found)

    def _delimited(self, rel: str) -> list[str]:
        """Names of the 'folders' directly below physical key ``rel``."""
        from botocore.exceptions import BotoCoreError, ClientError

        base = self._raw(rel)
        s3_prefix = f"{base}/" if base else ""
        children = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=s3_prefix, Delimiter="/")
            for page in pages:
                for cp in page.get("CommonPrefixes", ()):
                    children.append(cp["Prefix"][len(s3_prefix):].rstrip("/"))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "list", rel or None) from None
        return children

    def _list_raw(self, s3_prefix: str) -> list[StoredObject]:
        """Every object whose S3 key starts with ``s3_prefix`` (keys relative to the store root)."""
        from botocore.exceptions import BotoCoreError, ClientError

        out = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=s3_prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    out.append(StoredObject(self._rel(obj["Key"]), obj["Size"]))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "list", self._rel(s3_prefix.rstrip("/")) if s3_prefix else None) from None
        return out

    def delete_prefix(self, prefix: str) -> None:
        rel = self._norm(prefix)
        phys = self._resolve(rel, refresh=False)
        base = self._raw(phys)
        keys = [o.key for o in self._list_raw(f"{base}/" if base else "")]
        if phys and self._head(phys) is not None:
            keys.append(phys)
        # pointers first: a committed prefix stops looking complete before its files go
        pointers = [k for k in keys if k.rsplit("/", 1)[-1] == SUCCESS and f"/{VERSIONS}/" not in k]
        self._delete_keys(pointers)
        self._delete_keys([k for k in keys if k not in set(pointers)])
        if phys == rel:
            self._forget(rel)

    def _delete_keys(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i:i + DELETE_BATCH]
            resp = self._call(
                "delete",
                batch[0] if len(batch) == 1 else f"{len(batch)} objects under {_common_dir(batch)}",
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self._raw(k)} for k in batch], "Quiet": True},
            )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                code = first.get("Code", "error")
                key = self._rel(first.get("Key", ""))
                if code in _DENIED_CODES:
                    raise StoreError(f"Access was denied deleting {key} in {self.url}; check that the credentials in AWS_ACCESS_KEY_ID / AWS_PROFILE are allowed to delete in bucket {self.bucket!r}.")
                raise StoreError(f"Deleting {key} in {self.url} failed ({code}, {len(errors)} object(s) not deleted); check the S3 service, then rerun (a rerun is safe).")

    def copy(self, src_key: str, dst_key: str) -> None:
        src_phys = self._resolve(self._norm(src_key))
        src = self._head(src_phys)
        if src is None:
            raise FileNotFoundError(f"{src_key} does not exist in {self.url}.")
        with self._transfer_manager(copy=True) as tm:
            self._copy(tm, src_phys, self._resolve(self._norm(dst_key)), src)

    # --- transfers and checks ------------------------------------------------------
    def _transfer_manager(self, copy: bool = False) -> Any:
        from boto3.s3.transfer import TransferConfig
        from s3transfer.manager import TransferManager

        if copy:
            cfg = TransferConfig(
                multipart_threshold=self.copy_multipart_threshold,
                multipart_chunksize=max(self.multipart_chunksize, 512 * MiB),
                max_concurrency=self.max_concurrency,
            )
        else:
            cfg = TransferConfig(
                multipart_threshold=self.multipart_threshold,
                multipart_chunksize=self.multipart_chunksize,
                max_concurrency=self.max_concurrency,
            )
        return TransferManager(self.client, cfg)

    def _part_size(self, size: int) -> int | None:
        """The part size s3transfer will use for a file of ``size`` bytes; None for a single PutObject."""
        if size < self.multipart_threshold:
            return None
        from s3transfer.utils import ChunksizeAdjuster

        return ChunksizeAdjuster().adjust_chunksize(self.multipart_chunksize, size)

    def _put_file(self, tm: Any, key: str, path: Path) -> None:
        try:
            size = path.stat().st_size
            digest = _digest_file(path, self._part_size(size))
        except OSError as exc:
            raise StoreError(f"Cannot read the staged file {path} ({exc.strerror or exc}); check the local disk, then rerun (a rerun is safe).") from None
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            tm.upload(
                str(path),
                self.bucket,
                self._raw(key),
                extra_args={"ChecksumAlgorithm": "SHA256", "Metadata": {META_SHA256: digest.sha256_hex}},
            ).result()
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "upload", key) from None
        self._verify_upload(key, digest)

    def _verify_upload(self, key: str, digest: _Digest) -> None:
        head = self._head(key)
        if head is None:
            raise StoreError(f"Uploading {_shown(key)} to {self.url} failed (the object is missing right after the upload); the snapshot was not marked complete, so a rerun is safe.")
        problem = None
        if head["ContentLength"] != digest.size:
            problem = f"{head['ContentLength']} bytes stored, {digest.size} expected"
        elif (head.get("Metadata") or {}).get(META_SHA256) != digest.sha256_hex:
            problem = "its sha256 metadata does not match the local file"
        else:
            checksum = head.get("ChecksumSHA256")
            if checksum is not None:
                # '<base64>-<parts>' for a multipart upload on AWS; some servers omit the suffix.
                value = checksum.split("-", 1)[0]
                if value not in {digest.full_b64, digest.composite_b64}:
                    problem = "S3's SHA-256 checksum does not match the local file"
            else:
                log.debug("%s: the server returned no SHA-256 checksum; checked size and metadata only", key)
        if problem:
            raise StoreError(f"Uploading {_shown(key)} to {self.url} failed verification ({problem}); the snapshot was not marked complete, so a rerun is safe.")

    def _copy(self, tm: Any, src_key: str, dst_key: str, src_head: dict) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            tm.copy(
                {"Bucket": self.bucket, "Key": self._raw(src_key)},
                self.bucket,
                self._raw(dst_key),
                extra_args={"ChecksumAlgorithm": "SHA256"},
            ).result()
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "copy", dst_key) from None
        self._verify_copy(src_key, dst_key, src_head)

    def _verify_copy(self, src_key: str, dst_key: str, src: dict) -> None:
        dst = self._head(dst_key)
        problem = None
        if dst is None:
            problem = "the copy is missing"
        elif dst["ContentLength"] != src["ContentLength"]:
            problem = f"{dst['ContentLength']} bytes, the source has {src['ContentLength']}"
        else:
            expected = _known_sha256_b64(src)
            dst_meta = (dst.get("Metadata") or {}).get(META_SHA256)
            src_meta = (src.get("Metadata") or {}).get(META_SHA256)
            dst_sum = dst.get("ChecksumSHA256")
            if src_meta and dst_meta != src_meta:
                problem = "its sha256 metadata differs from the source's"
            elif (
                expected
                and dst_sum
                and "-" not in dst_sum
                and dst.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
                and dst["ContentLength"] < self.copy_multipart_threshold
                and dst_sum != expected
            ):
                # CopyObject recomputes a full-object checksum; compare it with the source's sha256.
                problem = "S3's SHA-256 checksum differs from the source's"
        if problem:
            raise StoreError(f"Copying {_shown(src_key)} to {_shown(dst_key)} in {self.url} failed verification ({problem}); the snapshot was not marked complete, so a rerun is safe.")

    # --- staging and committing --------------------------------------------------
    def _staging_path(self, prefix: str) -> Path:
        name = self._key(prefix).replace("/", "__") or "_root"
        return self.staging_root / self.bucket / name

    def staging_dir(self, prefix: str) -> Path:
        root = self._staging_path(prefix)
        try:
            return self._fresh_dir(root)
        except OSError as exc:
            raise StoreError(f"Cannot create the local staging folder {root} ({exc.strerror or exc}); free space or set DATASET_ASSETS_STAGING to a writable folder.") from None

    def commit_dir(self, staging: Path, prefix: str, *, reuse: Mapping[str, str] | None = None, replace: bool = False) -> None:
        """A new version of ``prefix`` from ``staging`` (and ``reuse``), switched to by its pointer
        ``prefix/_SUCCESS``, written last; then the old version goes (see the module docstring)."""
        staging = Path(staging)
        prefix = self._norm(prefix)
        if not prefix:
            raise StoreError(f"Cannot commit a folder as the root of {self.url}; name a prefix.")
        reuse = {name.strip("/"): src for name, src in (reuse or {}).items()}

        had_pointer, old_version = self._read_pointer(prefix)
        self._pins[prefix] = old_version  # reuse sources inside the prefix resolve to the version in place now
        if had_pointer and self.is_complete(prefix) and not replace:
            raise SnapshotExists(f"{prefix} is already complete in {self.url}; snapshots are immutable (use --force to replace it).")

        # Every reuse source must exist before anything is written.
        sources: dict[str, tuple[str, dict]] = {}
        for name, src in reuse.items():
            phys = self._resolve(self._norm(src))
            head = self._head(phys)
            if head is None:
                raise FileNotFoundError(f"{src} (to reuse as {prefix}/{name}) does not exist in {self.url}.")
            sources[name] = (phys, head)

        files = {
            p.relative_to(staging).as_posix(): p
            for p in sorted(staging.rglob("*"))
            if p.is_file() and p.relative_to(staging).as_posix() != SUCCESS and p.relative_to(staging).as_posix() not in reuse
        }
        success_path = staging / SUCCESS
        success_data = success_path.read_bytes() if success_path.is_file() else b""

        version = new_version()
        vbase = f"{prefix}/{VERSIONS}/{version}"
        switching = False
        try:
            with self._transfer_manager(copy=True) as copier, self._transfer_manager() as uploader, \
                    ThreadPoolExecutor(self.max_workers, thread_name_prefix="s3-commit") as pool:
                futures: list[Future] = [pool.submit(self._put_file, uploader, f"{vbase}/{name}", path) for name, path in files.items()]
                futures += [pool.submit(self._copy, copier, src, f"{vbase}/{name}", head) for name, (src, head) in sources.items()]
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                for f in pending:
                    f.cancel()
                wait(pending)
                for f in futures:
                    if f.done() and not f.cancelled() and f.exception() is not None:
                        raise f.exception()  # type: ignore[misc]
            self._put_bytes(f"{vbase}/{SUCCESS}", success_data)
            current = self._read_pointer(prefix)[1]  # what the switch replaces (another writer's, at worst)
            switching = True
            self._put_bytes(f"{prefix}/{SUCCESS}", pointer_body(version))  # the switch: readers now see this version
        except BaseException:
            if not switching:  # never named by a pointer: invisible; removed now (or by a later commit)
                try:
                    self.delete_prefix(vbase)
                except Exception:  # noqa: BLE001
                    log.warning("Could not remove the partial version %s in %s", vbase, self.url)
            raise
        self._pins[prefix] = version
        # After the switch: the versions replaced (named by the pointer when this commit began and
        # just before its switch), plain keys (an older layout, or leftovers), and versions of
        # interrupted commits once they are STALE_VERSION_AGE old; never a version another writer
        # may still be uploading, so concurrent commits of one prefix leave the last pointer's whole.
        replaced = {v for v in (old_version, current) if v is not None and v != version}
        cutoff = dt.datetime.now(dt.timezone.utc) - STALE_VERSION_AGE
        stale = []
        for o in self._list_raw(f"{self._raw(prefix)}/"):
            inner = o.key[len(prefix) + 1:]
            if inner == SUCCESS or o.key.startswith(vbase + "/"):
                continue
            if not inner.startswith(VERSIONS + "/"):
                stale.append(o.key)
                continue
            v = inner.split("/")[1]
            started = _version_time(v)
            if v in replaced or started is None or started < cutoff:
                stale.append(o.key)
        try:
            self._delete_keys(stale)
        except StoreError as exc:
            log.warning("Committed %s, but could not remove the replaced files: %s", prefix, exc)
        shutil.rmtree(staging, ignore_errors=True)


def _version_time(version: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(version.split("Z-", 1)[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def _shown(key: str) -> str:
    """A physical key as the store key it holds (``P/.versions/<v>/x`` -> ``P/x``), for messages."""
    return re.sub(rf"/{re.escape(VERSIONS)}/[^/]+(?=/|$)", "", key)


def new_version() -> str:
    """A version name: sorts by commit time, never repeats."""
    now = dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}"


def pointer_body(version: str) -> bytes:
    return json.dumps({"format": POINTER_FORMAT, "version": version}).encode() + b"\n"


def _pointer_version(body: bytes) -> str | None:
    """The version a ``_SUCCESS`` object names; None for a plain marker."""
    if len(body) > POINTER_MAX or not body.lstrip().startswith(b"{"):
        return None
    try:
        d = json.loads(body)
    except ValueError:
        return None
    version = d.get("version") if isinstance(d, dict) and d.get("format") == POINTER_FORMAT else None
    return version if isinstance(version, str) and version and "/" not in version and version not in (".", "..") else None


def _hidden(rel_key: str) -> bool:
    return any(part in SKIP_DIRS for part in rel_key.split("/")[:-1])


def _under(key: str, prefix: str) -> bool:
    return not prefix or key == prefix or key.startswith(prefix + "/")


def _common_dir(keys: list[str]) -> str:
    return os.path.commonpath(keys) if keys else ""


def _known_sha256_b64(head: dict) -> str | None:
    """The base64 SHA-256 of a whole object, if its HEAD tells it (our metadata, or a full-object checksum)."""
    meta = (head.get("Metadata") or {}).get(META_SHA256)
    if meta:
        try:
            return base64.b64encode(bytes.fromhex(meta)).decode()
        except ValueError:
            return None
    checksum = head.get("ChecksumSHA256")
    if checksum and "-" not in checksum and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
        return checksum
    return None


def _digest_bytes(data: bytes) -> _Digest:
    d = hashlib.sha256(data).digest()
    return _Digest(len(data), d.hex(), base64.b64encode(d).decode(), None)


def _digest_file(path: Path, part_size: int | None) -> _Digest:
    """Full-file SHA-256 and, for a multipart upload, S3's composite checksum, in one read."""
    full = hashlib.sha256()
    part = hashlib.sha256()
    parts: list[bytes] = []
    in_part = 0
    size = 0
    block_size = 1 << 20
    with open(path, "rb") as fh:
        while True:
            want = block_size if part_size is None else min(block_size, part_size - in_part)
            block = fh.read(want)
            if not block:
                break
            size += len(block)
            full.update(block)
            if part_size is not None:
                part.update(block)
                in_part += len(block)
                if in_part == part_size:
                    parts.append(part.digest())
                    part, in_part = hashlib.sha256(), 0
    if part_size is not None and (in_part or not parts):
        parts.append(part.digest())
    d = full.digest()
    composite = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode() if part_size is not None else None
    return _Digest(size, d.hex(), base64.b64encode(d).decode(), composite)
