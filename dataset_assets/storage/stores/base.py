"""The store interface: where snapshots live.

Keys are '/'-separated paths relative to the store's root, e.g.
``snapshots/2026-11-21/image/train-00000-000.parquet``.

A snapshot of one table is built in a *staging* directory on local disk and
made visible with :meth:`Store.commit_dir`, which guarantees that the
``_SUCCESS`` marker becomes visible last and only after every other file is in
place and checked. Anything at a prefix without ``_SUCCESS`` is a leftover of
an interrupted run and may be cleared by the next one.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow.parquet as pq

from dataset_assets.storage.layout import MANIFEST, SUCCESS  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


class Store(ABC):
    """Narrow object-store interface: put, read, list, copy, atomic commit of a staged folder."""

    url: str

    # --- objects -----------------------------------------------------------
    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable binary stream; raises FileNotFoundError if missing."""

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix`` (recursively), sorted by key."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    def copy(self, src_key: str, dst_key: str) -> None:
        """Server-side copy (a hard link locally): no download, no re-upload."""

    def sha256(self, key: str) -> str:
        h = hashlib.sha256()
        with self.open(key) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    @contextmanager
    def open_parquet(self, key: str) -> Iterator[pq.ParquetFile]:
        """A :class:`pyarrow.parquet.ParquetFile` for ``key``: a local file in place, any other
        object spooled to a temporary file first (parquet needs to seek; stores have no ranged reads)."""
        with self.open_parquet_raw(key) as (pf, _):
            yield pf

    @contextmanager
    def open_parquet_raw(self, key: str) -> Iterator[tuple[pq.ParquetFile, BinaryIO]]:
        """:meth:`open_parquet`, with the file's bytes open beside it (a refresh copies column chunks
        from them as they are: ``export/splice.py``)."""
        path = self.local_path(key)
        if path is not None:
            with open(path, "rb") as raw, pq.ParquetFile(path) as pf:
                yield pf, raw
            return
        with tempfile.TemporaryFile() as tmp:
            with self.open(key) as src:
                shutil.copyfileobj(src, tmp, 4 << 20)
            tmp.seek(0)
            with pq.ParquetFile(tmp) as pf:
                yield pf, tmp

    def local_path(self, key: str) -> Path | None:
        """The file behind ``key`` if the store is a local directory, else None."""
        return None

    def location(self, key: str) -> str:
        """Where a person finds the object behind ``key`` now (a URL), e.g. to link it in the UI."""
        return f"{self.url.rstrip('/')}/{key.strip('/')}"

    # --- staging and committing ------------------------------------------------
    @abstractmethod
    def staging_dir(self, prefix: str) -> Path:
        """A fresh, empty local directory in which to build the content of ``prefix``.

        Leftovers of earlier interrupted builds of the same prefix are removed.
        """

    @abstractmethod
    def commit_dir(
        self,
        staging: Path,
        prefix: str,
        *,
        reuse: Mapping[str, str] | None = None,
        replace: bool = False,
    ) -> None:
        """Make ``staging``'s files visible under ``prefix``.

        ``reuse`` maps file names (relative to ``prefix``) to keys of objects
        already in the store, which are copied server-side instead of uploaded.
        ``_SUCCESS`` in ``staging`` becomes visible last, and only once every file is
        durable. With ``replace`` an existing complete prefix is replaced; without it,
        it is an error. A replaced prefix stays complete and whole until the switch,
        and a reader that read its ``_SUCCESS`` and manifest never gets a file of the
        version replacing it (locally: one rename; on S3: a new version, see ``s3.py``).
        """

    @staticmethod
    def _fresh_dir(root: Path) -> Path:
        """``root`` emptied of an interrupted run's leftovers and created (an ``OSError`` is the caller's to word)."""
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        return root

    def stage_reused(self, staging: Path, reuse: Mapping[str, str]) -> Mapping[str, str]:
        """Put objects reused from earlier snapshots into ``staging`` ahead of ``commit_dir``,
        where that is cheap for the store (it runs while the export still reads); returns the
        part of ``reuse`` that ``commit_dir`` must still take care of. By default nothing is
        staged: server-side copies happen at commit time."""
        return reuse

    def is_complete(self, prefix: str) -> bool:
        return self.exists(f"{prefix.rstrip('/')}/{SUCCESS}")

    @abstractmethod
    def iter_prefixes(self, prefix: str) -> Iterator[str]:
        """Immediate child 'directories' of ``prefix``, without listing what is below them."""
