"""Published-vs-draft: a snapshot date that has been published is immutable.

Publishing writes ``snapshots/<date>/_PUBLISHED`` (JSON: where and when);
every writer checks for it before touching that date.
"""

from __future__ import annotations

import datetime as dt
import json

from dataset_assets.errors import UserError
from dataset_assets.storage.layout import PUBLISHED, published_key  # noqa: F401  (PUBLISHED re-exported)
from dataset_assets.storage.stores import Store


def publication(store: Store, snapshot: str) -> dict | None:
    try:
        return json.loads(store.read_bytes(published_key(snapshot)))
    except FileNotFoundError:
        return None


def is_published(store: Store, snapshot: str) -> bool:
    return store.exists(published_key(snapshot))


def mark_published(store: Store, snapshot: str, info: dict) -> None:
    body = dict(info, published_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    store.put_bytes(published_key(snapshot), json.dumps(body, indent=2).encode())


def ensure_draft(store: Store, snapshot: str) -> None:
    """Raise if ``snapshot`` is published: published snapshots are never rewritten."""
    info = publication(store, snapshot)
    if info is not None:
        where = info.get("repo_id") or info.get("url") or "the Hub"
        raise UserError(
            f"Snapshot {snapshot} was published to {where} and is immutable; "
            f"changes go into the next snapshot date instead."
        )
