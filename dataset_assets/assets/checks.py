"""Blocking checks for every table snapshot; a failure stops the card (and the
push) for that date. The checks themselves are ``release/checks.py`` (shared with
``dataset-assets release``); these wrappers turn their results into Dagster's."""


import dagster as dg

from dataset_assets.tables import TableConfig
from dataset_assets.release import checks as core
from dataset_assets.release.checks import (  # noqa: F401  (re-exported: the names the Dagster layer used)
    DEFAULT_MAX_ROW_DROP, MAX_ROW_DROP_ENV, max_row_drop, previous_snapshot, row_drop,
)
from dataset_assets.resources import SnapshotStore
from dataset_assets.assets.failures import user_errors_fail


def check_result(result: core.CheckResult) -> dg.AssetCheckResult:
    """The Dagster form of a shared check's result (dict values as JSON metadata)."""
    metadata = {k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in result.metadata.items()}
    return dg.AssetCheckResult(passed=result.passed, metadata=metadata, description=result.description)


def build_table_checks(cfg: TableConfig) -> list[dg.AssetChecksDefinition]:
    table = cfg.name

    def run(name: str, context, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        with user_errors_fail():
            return check_result(core.run_table_check(name, snapshot_store.open(), context.partition_key, cfg))

    @dg.asset_check(asset=table, name="rows_match_source", blocking=True,
                    description="Rows in the snapshot equal count(*) with the export's filters in the source at the same "
                                "Postgres snapshot, counted by a query of its own (in every mode; an incremental snapshot "
                                "also checks each chunk read, see the metadata).")
    def rows_match_source(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        return run("rows_match_source", context, snapshot_store)

    @dg.asset_check(asset=table, name="primary_key_unique", blocking=True,
                    description=f"The primary key (as the export resolved it; configured: {cfg.primary_key}) is unique and never null.")
    def primary_key_unique(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        return run("primary_key_unique", context, snapshot_store)

    @dg.asset_check(asset=table, name="checksums_verify", blocking=True,
                    description="Every file re-hashes to the sha256 in the manifest; nothing is missing or extra.")
    def checksums_verify(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        return run("checksums_verify", context, snapshot_store)

    @dg.asset_check(asset=table, name="columns_documented", blocking=True,
                    description="Every column is documented in dataset_docs/ and every documented column exists, with matching types.")
    def columns_documented(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        return run("columns_documented", context, snapshot_store)

    @dg.asset_check(asset=table, name="rows_not_collapsed", blocking=True,
                    description=f"The snapshot holds no more than {MAX_ROW_DROP_ENV} (a fraction, default "
                                f"{DEFAULT_MAX_ROW_DROP}) fewer rows than the previous complete snapshot of {table}.")
    def rows_not_collapsed(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        return run("rows_not_collapsed", context, snapshot_store)

    return [rows_match_source, primary_key_unique, checksums_verify, columns_documented, rows_not_collapsed]
