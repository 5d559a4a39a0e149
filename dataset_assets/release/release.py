"""A release of a snapshot date: push it to the Hub, mark it published (immutable from then on),
then tell the webhook. The CLI's ``publish`` and the ``hub_release`` asset both run this."""

from __future__ import annotations

from collections.abc import Callable

from dataset_assets.tables import in_table_order
from dataset_assets.storage.release_state import begin_release, end_release, mark_published
from dataset_assets.storage.manifest import Manifest
from dataset_assets.storage.stores.base import Store
from dataset_assets.release.hub import PublishResult, publish_snapshot
from dataset_assets.release.notify import notify_webhook


def release_snapshot(
    store: Store,
    snapshot: str,
    repo_id: str,
    *,
    token: str | None,
    endpoint: str | None,
    private: bool,
    gated: bool | str,
    webhook_url: str | None,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
    apply_settings: bool = False,
) -> tuple[PublishResult, list[Manifest]]:
    """The published result and the manifests of the tables it holds (tables.yaml's first).
    ``apply_settings``: change an existing repo's visibility and gating to ``private``/``gated`` (else a
    difference is refused). A failing webhook only ``warn``s: the release has happened by then."""
    begin_release(store, snapshot, {"repo_id": repo_id})  # the date's writers wait (release_state)
    try:
        result = publish_snapshot(store, snapshot, repo_id, token=token, endpoint=endpoint, private=private,
                                  gated=gated, apply_settings=apply_settings, log=log)
        mark_published(store, snapshot, {"repo_id": result.repo_id, "url": result.repo_url, "tag": result.tag,
                                         "commit": result.commit_sha})
    finally:
        end_release(store, snapshot)  # after a crash it stays: the writers refuse until a push finishes
    pushed = {m.table: m for m in map(Manifest.from_json, result.manifests)}  # what was published, not a re-read
    manifests = [pushed[t] for t in in_table_order(pushed)]
    if webhook_url:
        notify_webhook(webhook_url, result, manifests, log=warn)
    return result, manifests
