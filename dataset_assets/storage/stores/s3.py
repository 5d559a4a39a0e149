"""A store in an S3 bucket (AWS S3 or anything that speaks its API: MinIO, Ceph, moto).

Same key layout and semantics as :class:`~dataset_assets.storage.stores.local.LocalStore`:
store key ``snapshots/2026-11-21/image/x.parquet`` is object
``<prefix>/snapshots/2026-11-21/image/x.parquet`` in the bucket.

Committing cannot be one atomic rename on S3, so :meth:`S3Store.commit_dir`
orders the steps instead: ``_SUCCESS`` of a replaced snapshot is deleted first,
then everything else at the prefix, then every file is uploaded (or copied
server-side) and checked against the local file, and ``_SUCCESS`` is written
last. A prefix without ``_SUCCESS`` is an interrupted run's leftover and the
next commit clears it, so rerunning after any failure is safe.

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
import hashlib
import logging
import os
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
from dataset_assets.storage.stores.base import SUCCESS, Store, StoredObject

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
MAX_COPY_OBJECT = 5 * GiB  # the largest object CopyObject copies in one request
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
META_SHA256 = "sha256"  # stored as x-amz-meta-sha256: hex SHA-256 of the whole object
SKIP_DIRS = (".staging", ".trash")  # like LocalStore: never listed

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
    def _key(self, key: str) -> str:
        parts = [p for p in key.strip("/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise StoreError(f"Key {key!r} points outside the store {self.url}.")
        rel = "/".join(parts)
        if not self.prefix:
            return rel
        return f"{self.prefix}/{rel}" if rel else self.prefix

    def _rel(self, s3_key: str) -> str:
        return s3_key[len(self.prefix) + 1:] if self.prefix else s3_key

    def _endpoint(self) -> str:
        ep = str(getattr(self.client.meta, "endpoint_url", "") or "")
        p = urlsplit(ep)
        if p.username or p.password:  # never show credentials embedded in a URL
            ep = urlunsplit((p.scheme, p.hostname or "", p.path, "", ""))
        return ep or "the S3 endpoint"

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
        what = f"{key} in {self.url}" if key is not None else self.url
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

    def _head(self, key: str) -> dict | None:
        """HEAD with checksums; None if the object is missing."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except (BotoCoreError, ClientError) as exc:
            if self._is_not_found(exc):
                return None
            raise self._error(exc, "read", key) from None

    # --- objects -------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        digest = _digest_bytes(data)
        self._call(
            "upload",
            key,
            self.client.put_object,
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ChecksumAlgorithm="SHA256",
            Metadata={META_SHA256: digest.sha256_hex},
        )
        self._verify_upload(key, digest)

    def put_file(self, key: str, path: Path) -> None:
        with self._transfer_manager() as tm:
            self._put_file(tm, key, Path(path))

    def open(self, key: str) -> BinaryIO:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            if self._is_not_found(exc):
                raise FileNotFoundError(f"{key} does not exist in {self.url}.") from None
            raise self._error(exc, "read", key) from None
        return resp["Body"]  # botocore StreamingBody: .read(), iteration, context manager

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def list(self, prefix: str) -> list[StoredObject]:
        rel = prefix.strip("/")
        base = self._key(rel)
        out = [o for o in self._list_raw(f"{base}/" if base else "") if not _hidden(o.key)]
        if not out and rel:
            head = self._head(rel)  # prefix names a single object
            if head is not None:
                out = [StoredObject(self._rel(self._key(rel)), head["ContentLength"])]
        return sorted(out, key=lambda o: o.key)

    def iter_prefixes(self, prefix: str) -> Iterator[str]:
        """One delimited listing of the level below ``prefix`` (not every object under it)."""
        from botocore.exceptions import BotoCoreError, ClientError

        rel = prefix.strip("/")
        base = self._key(rel)
        s3_prefix = f"{base}/" if base else ""
        children = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=s3_prefix, Delimiter="/")
            for page in pages:
                for cp in page.get("CommonPrefixes", ()):
                    child = self._rel(cp["Prefix"].rstrip("/"))
                    if not _hidden(child + "/"):
                        children.append(child)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "list", rel or None) from None
        yield from sorted(children)

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
        rel = prefix.strip("/")
        base = self._key(rel)
        keys = [o.key for o in self._list_raw(f"{base}/" if base else "")]
        if rel and self._head(rel) is not None:
            keys.append(rel)
        self._delete_keys(keys)

    def _delete_keys(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i:i + DELETE_BATCH]
            resp = self._call(
                "delete",
                batch[0] if len(batch) == 1 else f"{len(batch)} objects under {_common_dir(batch)}",
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True},
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
        src = self._head(src_key)
        if src is None:
            raise FileNotFoundError(f"{src_key} does not exist in {self.url}.")
        with self._transfer_manager(copy=True) as tm:
            self._copy(tm, src_key, dst_key, src)

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
                self._key(key),
                extra_args={"ChecksumAlgorithm": "SHA256", "Metadata": {META_SHA256: digest.sha256_hex}},
            ).result()
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "upload", key) from None
        self._verify_upload(key, digest)

    def _verify_upload(self, key: str, digest: _Digest) -> None:
        head = self._head(key)
        if head is None:
            raise StoreError(f"Uploading {key} to {self.url} failed (the object is missing right after the upload); the snapshot was not marked complete, so a rerun is safe.")
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
            raise StoreError(f"Uploading {key} to {self.url} failed verification ({problem}); the snapshot was not marked complete, so a rerun is safe.")

    def _copy(self, tm: Any, src_key: str, dst_key: str, src_head: dict) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            tm.copy(
                {"Bucket": self.bucket, "Key": self._key(src_key)},
                self.bucket,
                self._key(dst_key),
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
            raise StoreError(f"Copying {src_key} to {dst_key} in {self.url} failed verification ({problem}); the snapshot was not marked complete, so a rerun is safe.")

    # --- staging and committing --------------------------------------------------
    def _staging_path(self, prefix: str) -> Path:
        name = self._key(prefix).replace("/", "__") or "_root"
        return self.staging_root / self.bucket / name

    def staging_dir(self, prefix: str) -> Path:
        root = self._staging_path(prefix)
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)  # leftovers of an interrupted run
        try:
            root.mkdir(parents=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the local staging folder {root} ({exc.strerror or exc}); free space or set DATASET_ASSETS_STAGING to a writable folder.") from None
        return root

    def commit_dir(self, staging: Path, prefix: str, *, reuse: Mapping[str, str] | None = None, replace: bool = False) -> None:
        staging = Path(staging)
        prefix = prefix.strip("/")
        base = f"{prefix}/" if prefix else ""
        reuse = {name.strip("/"): src for name, src in (reuse or {}).items()}
        success_key = f"{base}{SUCCESS}"

        complete = self.exists(success_key)
        if complete and not replace:
            raise SnapshotExists(f"{prefix} is already complete in {self.url}; snapshots are immutable (use --force to replace it).")

        # Every reuse source must exist before anything is deleted.
        sources: dict[str, dict] = {}
        for name, src in reuse.items():
            head = self._head(src)
            if head is None:
                raise FileNotFoundError(f"{src} (to reuse as {base}{name}) does not exist in {self.url}.")
            sources[name] = head

        files = {
            p.relative_to(staging).as_posix(): p
            for p in sorted(staging.rglob("*"))
            if p.is_file() and p.relative_to(staging).as_posix() != SUCCESS and p.relative_to(staging).as_posix() not in reuse
        }
        success_path = staging / SUCCESS
        success_data = success_path.read_bytes() if success_path.is_file() else b""

        temp_area = None
        with self._transfer_manager(copy=True) as copier:
            try:
                # Sources inside the prefix are about to be deleted: park copies outside it first.
                moved: dict[str, str] = {}
                for name, src in reuse.items():
                    if _under(src.strip("/"), prefix):
                        if temp_area is None:
                            temp_area = f".staging/reuse-{uuid.uuid4().hex}"
                        tmp = f"{temp_area}/{name}"
                        self._copy(copier, src, tmp, sources[name])
                        moved[name] = tmp
                        sources[name] = self._head(tmp) or sources[name]
                reuse = {**reuse, **moved}

                if complete:
                    self._delete_keys([success_key])  # first: the old snapshot stops looking complete
                self.delete_prefix(prefix)  # the replaced snapshot, or an interrupted run's leftovers

                with self._transfer_manager() as uploader, ThreadPoolExecutor(self.max_workers, thread_name_prefix="s3-commit") as pool:
                    futures: list[Future] = [pool.submit(self._put_file, uploader, base + name, path) for name, path in files.items()]
                    futures += [pool.submit(self._copy, copier, src, base + name, sources[name]) for name, src in reuse.items()]
                    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                    for f in pending:
                        f.cancel()
                    wait(pending)
                    for f in futures:
                        if f.done() and not f.cancelled() and f.exception() is not None:
                            raise f.exception()  # type: ignore[misc]

                self.put_bytes(success_key, success_data)  # last: the snapshot is now complete
            finally:
                if temp_area is not None:
                    try:
                        self.delete_prefix(temp_area)
                    except StoreError:
                        log.warning("Could not remove the temporary copies under %s in %s", temp_area, self.url)
        shutil.rmtree(staging, ignore_errors=True)


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
