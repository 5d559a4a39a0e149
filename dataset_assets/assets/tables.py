"""One asset per configured media table, partitioned by snapshot date.

The asset calls the engine; everything it shows in the UI comes from the
manifest the engine wrote.
"""


import dagster as dg

from dataset_assets.tables import TableConfig
from dataset_assets.release.card.docs import load_table_doc
from dataset_assets.export.run import export_snapshot
from dataset_assets.storage.release_state import ensure_draft
from dataset_assets.export.progress import LogProgress
from dataset_assets.errors import UserError
from dataset_assets.partitions import snapshots
from dataset_assets.resources import ExportSettings, SnapshotStore, SourceDatabase
from dataset_assets.assets.failures import user_errors_fail
from dataset_assets.assets.metadata import table_metadata


def build_table_asset(cfg: TableConfig) -> dg.AssetsDefinition:
    try:
        summary = load_table_doc(cfg.name).summary
    except UserError:  # an undocumented table still loads; its check fails
        summary = f"Snapshot of the {cfg.name} table."

    @dg.asset(
        name=cfg.name,
        partitions_def=snapshots,
        pool="source_db",
        group_name="snapshots",
        kinds={"postgres", "parquet"},
        description=summary,
        metadata={"table": cfg.name, "primary_key": cfg.primary_key},
    )
    def table_snapshot(context: dg.AssetExecutionContext, source_db: SourceDatabase,
                       snapshot_store: SnapshotStore, export_settings: ExportSettings) -> dg.MaterializeResult:
        date = context.partition_key
        with user_errors_fail():
            store = snapshot_store.open()
            ensure_draft(store, date)
            [result] = export_snapshot(
                source_db.resolve_uri(), [cfg.name], date, store,
                export_settings.options(force=True),   # re-materialising a draft replaces it
                progress=LogProgress(context.log.info, every=5.0),
                log=context.log.info,
            )
            return dg.MaterializeResult(metadata=table_metadata(store, result))

    return table_snapshot
