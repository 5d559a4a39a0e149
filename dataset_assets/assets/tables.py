"""The tables of a snapshot date: one asset per configured table (its own key, lineage,
checks and metadata), materialised together by one multi-asset, so that every table of a
date is read in ONE Postgres snapshot and a date is always whole. A table that did not
change costs its change detection and reuses its shards (the incremental export).

The step calls the export; everything it shows in the UI comes from the manifests it wrote.
"""


import dagster as dg

from dataset_assets.assets.failures import user_errors_fail
from dataset_assets.assets.metadata import table_metadata
from dataset_assets.errors import UserError
from dataset_assets.export.progress import LogProgress
from dataset_assets.export.run import export_snapshot
from dataset_assets.partitions import snapshots
from dataset_assets.release.card.docs import load_table_doc
from dataset_assets.resources import ExportSettings, SnapshotStore, SourceDatabase
from dataset_assets.storage.release_state import ensure_draft
from dataset_assets.tables import TableConfig

GROUP = "snapshots"


def _summary(cfg: TableConfig) -> str:
    try:
        return load_table_doc(cfg.name).summary
    except UserError:  # an undocumented table still loads; its check fails
        return f"Snapshot of the {cfg.name} table."


def build_tables_asset(configs: list[TableConfig]) -> dg.AssetsDefinition:
    specs = [
        dg.AssetSpec(
            cfg.name,
            partitions_def=snapshots,
            group_name=GROUP,
            kinds={"postgres", "parquet"},
            description=_summary(cfg),
            metadata={"table": cfg.name, "primary_key": cfg.primary_key},
        )
        for cfg in configs
    ]
    names = [cfg.name for cfg in configs]

    @dg.multi_asset(
        name="tables",
        specs=specs,
        partitions_def=snapshots,
        pool="source_db",
        can_subset=False,  # a date is always whole: every table, one Postgres snapshot
        description="Every configured table of a snapshot date, read in one Postgres snapshot.",
    )
    def tables(context: dg.AssetExecutionContext, source_db: SourceDatabase,
               snapshot_store: SnapshotStore, export_settings: ExportSettings):
        date = context.partition_key
        with user_errors_fail():
            store = snapshot_store.open()
            ensure_draft(store, date)
            results = export_snapshot(
                source_db.resolve_uri(), names, date, store,
                export_settings.options(force=True),   # re-materialising a draft replaces it
                progress=LogProgress(context.log.info, every=5.0),
                log=context.log.info,
            )
            for result in results:
                yield dg.MaterializeResult(asset_key=result.table, metadata=table_metadata(store, result))

    return tables
