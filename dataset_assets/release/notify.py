"""Tell people a snapshot was published: one Slack-compatible webhook message.

The message is ``{"text": "<one paragraph>"}`` (Slack incoming webhooks, Mattermost, Teams workflows and most
chat tools accept it): the snapshot date, each table with its rows and size, the repo URL, how to load it, and
what the upload cost (files added and skipped, bytes sent, with Xet the new bytes after chunk dedup).

Notifying is best effort: the snapshot is already on the Hub when it runs, so a webhook that cannot be reached
or answers an error is retried a few times, then logged as a warning, and never fails the publish.
The webhook URL usually holds a secret, so only its host is ever logged.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from dataset_assets.storage.manifest import Manifest
from dataset_assets.release.hub import PublishResult, human_size

TIMEOUT = 10.0
ATTEMPTS = 3
RETRY_WAIT = 1.0
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_log = logging.getLogger(__name__)


def load_snippet(repo_id: str, tag: str, table: str) -> str:
    return f'load_dataset("{repo_id}", "{table}", revision="{tag}")'


def message(result: PublishResult, manifests: Iterable[Manifest]) -> str:
    """The one-paragraph announcement of a published snapshot."""
    manifests = list(manifests)
    tables = ", ".join(f"{m.table} ({m.row_count:,} rows, {human_size(m.total_bytes)})" for m in manifests) or "no tables"
    commit = f", commit {result.commit_sha[:12]}" if result.commit_sha else ""
    how = ""
    if manifests:
        how = (f" Load it with `{load_snippet(result.repo_id, result.tag, manifests[0].table)}`"
               + (" (one subset per table)." if len(manifests) > 1 else "."))
    return (f"Snapshot {result.snapshot} of {result.repo_id} is published at {result.repo_url} "
            f"(tag {result.tag}{commit}): {tables}.{how} Upload: {result.upload_summary()}.")


def notify_webhook(
    url: str,
    result: PublishResult,
    manifests: Iterable[Manifest],
    *,
    log: Callable[[str], object] | None = None,
    timeout: float = TIMEOUT,
    attempts: int = ATTEMPTS,
    retry_wait: float = RETRY_WAIT,
) -> None:
    """POST ``{"text": message(result, manifests)}`` to the webhook ``url``.

    Network errors and 408/429/5xx answers are retried (``attempts`` in all, waiting ``retry_wait`` then
    twice as long, each request with a ``timeout`` in seconds). If the webhook still fails, a warning is
    passed to ``log`` (default: this module's logger) and the function returns normally: a failing webhook
    never fails the publish, which has already happened. The URL is never logged, only its host.
    """
    warn = log or _log.warning
    where = urlsplit(url).hostname or "the webhook"
    body = json.dumps({"text": message(result, manifests)}).encode()
    problem = "no attempt was made"
    for attempt in range(1, max(1, attempts) + 1):
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "dataset-assets"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - configured URL
                response.read()
            return
        except urllib.error.HTTPError as err:
            problem = f"HTTP {err.code}"
            if err.code not in _RETRY_STATUS:
                break
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            problem = type(reason).__name__ if not isinstance(reason, str) else reason
            if isinstance(err, ValueError):  # a malformed URL: retrying cannot help
                break
        if attempt < attempts:
            time.sleep(retry_wait * 2 ** (attempt - 1))
    warn(f"Could not notify the webhook at {where} ({problem}) about snapshot {result.snapshot}; "
         "the snapshot is published all the same.")
