"""The Hub release of a snapshot date: push the snapshot to the Hugging Face dataset repo and tag it.

After a successful push the date is marked published in the store (``_PUBLISHED``): from then on the
snapshot is immutable and its tables refuse to be re-materialised. A configured webhook is told last;
a failing webhook only logs a warning.
"""


import dagster as dg

from dataset_assets.partitions import snapshots
from dataset_assets.release.notify import load_snippet
from dataset_assets.resources import HubResource, SnapshotStore
from dataset_assets.assets.failures import user_errors_fail


def load_markdown(repo_id: str, tag: str, tables: list[str]) -> str:
    lines = ["```python", "from datasets import load_dataset", ""]
    lines += [f"{t} = {load_snippet(repo_id, tag, t)}" for t in tables]
    return "\n".join([*lines, "```"])


def build_release_asset(card_key: dg.AssetKey, automation_condition=None) -> dg.AssetsDefinition:
    @dg.asset(
        name="hub_release",
        partitions_def=snapshots,
        deps=[card_key],
        group_name="release",
        kinds={"huggingface"},
        automation_condition=automation_condition,
        description="Publishes the snapshot to the Hugging Face dataset repo in one commit tagged "
                    "snapshot-<date>, then marks the date published (immutable) and notifies the webhook.",
    )
    def hub_release(context: dg.AssetExecutionContext, snapshot_store: SnapshotStore,
                    hub: HubResource) -> dg.MaterializeResult:
        date = context.partition_key
        with user_errors_fail():
            result, manifests = hub.release(snapshot_store.open(), date, log=context.log.info, warn=context.log.warning)
        tables = [m.table for m in manifests]
        return dg.MaterializeResult(metadata={
            "repo": dg.MetadataValue.url(result.repo_url),
            "revision": dg.MetadataValue.url(f"{result.repo_url}/tree/{result.tag}"),
            "repo_id": result.repo_id,
            "commit": result.commit_sha or "",
            "tag": result.tag,
            "new_commit": result.committed,
            "files_added": result.added_files,
            "files_deleted": result.deleted_files,
            "files_kept": result.kept_files,
            "bytes_uploaded": dg.MetadataValue.int(result.added_bytes),  # sizes of the files added
            "bytes_kept": dg.MetadataValue.int(result.kept_bytes),  # files skipped: the Hub held them
            "upload_protocol": result.protocol or "none",
            "bytes_sent": dg.MetadataValue.int(result.sent_bytes),
            **({} if result.xet_new_bytes is None else {
                "xet_new_bytes": dg.MetadataValue.int(result.xet_new_bytes),
                "xet_deduped_bytes": dg.MetadataValue.int(result.xet_deduped_bytes or 0),
                "xet_sent_bytes": dg.MetadataValue.int(result.xet_sent_bytes or 0)}),
            "upload": result.upload_summary(),
            "tables": ", ".join(tables),
            "dagster/row_count": sum(m.row_count for m in manifests),
            "load": dg.MetadataValue.md(load_markdown(result.repo_id, result.tag, tables)),
        })

    return hub_release
