"""Draft or released: a snapshot date that has been released (pushed to the Hub) is immutable.

The release writes ``snapshots/<date>/_RELEASING`` before its push and removes it when the push
ends (a crashed push leaves it), then ``snapshots/<date>/_PUBLISHED`` (JSON: where and when).
Every writer of a date (the export, the card) checks both before touching it: one writer per
date, and nothing rewritten under a push or after it.
"""

from __future__ import annotations

import datetime as dt
import json

from dataset_assets.errors import UserError
from dataset_assets.storage.layout import PUBLISHED, published_key, releasing_key  # noqa: F401  (PUBLISHED re-exported)
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


def begin_release(store: Store, snapshot: str, info: dict) -> None:
    body = dict(info, started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    store.put_bytes(releasing_key(snapshot), json.dumps(body, indent=2).encode())


def end_release(store: Store, snapshot: str) -> None:
    store.delete_prefix(releasing_key(snapshot))


def is_releasing(store: Store, snapshot: str) -> bool:
    return store.exists(releasing_key(snapshot))


def ensure_draft(store: Store, snapshot: str) -> None:
    """Raise if ``snapshot`` is published, or its push runs (or crashed): published snapshots
    are never rewritten, and nothing is rewritten under a push."""
    if is_releasing(store, snapshot) and not is_published(store, snapshot):
        raise UserError(
            f"The push of snapshot {snapshot} to the Hub is running or was interrupted, so its files must not change; "
            f"wait for it, or rerun hub_release (dataset-assets publish --snapshot {snapshot}) to finish it."
        )
    info = publication(store, snapshot)
    if info is not None:
        where = info.get("repo_id") or info.get("url") or "the Hub"
        raise UserError(
            f"Snapshot {snapshot} was published to {where} and is immutable; "
            f"changes go into the next snapshot date instead."
        )
