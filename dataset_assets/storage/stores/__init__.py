"""Stores: where snapshots live. ``open_store(url)`` picks the implementation."""

from __future__ import annotations

from pathlib import Path

from dataset_assets.settings import ENV_STORE, local_dir, required_in_production
from dataset_assets.storage.stores.base import MANIFEST, SUCCESS, Store, StoredObject
from dataset_assets.storage.stores.local import LocalStore

__all__ = ["MANIFEST", "SUCCESS", "Store", "StoredObject", "LocalStore", "open_store", "default_store_url"]


def default_store_url() -> str:
    return (local_dir() / "store").as_uri()


def open_store(url: str | Path | None = None) -> Store:
    """``file:///path``, a plain path, or ``s3://bucket/prefix``."""
    if not required_in_production(ENV_STORE, str(url or ""), "store folder"):
        url = default_store_url()
    url = str(url)
    if url.startswith("s3://"):
        from dataset_assets.storage.stores.s3 import S3Store

        return S3Store.from_url(url)
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return LocalStore(unquote(urlparse(url).path))
    if "://" in url:
        from dataset_assets.errors import UserError

        raise UserError(f"Unsupported store URL {url!r}; use a folder path, file:///path or s3://bucket/prefix.")
    return LocalStore(url)
