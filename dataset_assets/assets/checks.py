"""Blocking checks for every table snapshot; a failure stops the card (and the
push) for that date."""


import dagster as dg

from dataset_assets.tables import TableConfig
from dataset_assets.storage.checks import primary_key_report
from dataset_assets.release.card.docs import check_documentation
from dataset_assets.storage.layout import table_prefix
from dataset_assets.storage.manifest import load_manifest
from dataset_assets.storage.verify import verify_table
from dataset_assets.resources import SnapshotStore
from dataset_assets.assets.failures import user_errors_fail


def build_table_checks(cfg: TableConfig) -> list[dg.AssetChecksDefinition]:
    table = cfg.name

    def manifest_for(context, snapshot_store):
        store = snapshot_store.open()
        prefix = table_prefix(context.partition_key, table)
        return store, prefix, load_manifest(store, prefix, table, context.partition_key)

    @dg.asset_check(asset=table, name="rows_match_source", blocking=True,
                    description="Rows in the snapshot equal count(*) in the source at the same Postgres snapshot "
                                "(for an incremental snapshot: per chunk read, see the metadata).")
    def rows_match_source(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        with user_errors_fail():
            _, _, m = manifest_for(context, snapshot_store)
            counted = m.timings.get("source_rows_counted")
            return dg.AssetCheckResult(
                passed=counted is not None and counted == m.row_count,
                metadata={"snapshot_rows": m.row_count, "source_rows": counted if counted is not None else -1,
                          "how": m.timings.get("count_check") or "",
                          "source_snapshot": m.source_snapshot.get("txid_snapshot", "")},
                description=None if counted == m.row_count else f"source counted {counted}, snapshot holds {m.row_count}",
            )

    @dg.asset_check(asset=table, name="primary_key_unique", blocking=True,
                    description=f"The primary key (as the export resolved it; configured: {cfg.primary_key}) is unique and never null.")
    def primary_key_unique(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        with user_errors_fail():
            store, prefix, m = manifest_for(context, snapshot_store)
            key = m.primary_key or cfg.primary_key  # manifests before the field: the configured key
            if key not in {c["name"] for c in m.schema}:
                raise dg.Failure(description=f"The primary key {key!r} of {table} is not among the exported columns; "
                                             f"add it to the table's columns in tables.yaml.")
            r = primary_key_report(store, prefix, m, key)
            return dg.AssetCheckResult(
                passed=r.ok,
                metadata={"key": key, "rows": r.rows, "nulls": r.nulls, "duplicates": r.duplicates,
                          "examples": ", ".join(r.examples)},
            )

    @dg.asset_check(asset=table, name="checksums_verify", blocking=True,
                    description="Every file re-hashes to the sha256 in the manifest; nothing is missing or extra.")
    def checksums_verify(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        with user_errors_fail():
            store = snapshot_store.open()
            report = verify_table(store, context.partition_key, table)
            return dg.AssetCheckResult(
                passed=report.ok,
                metadata={"files_checked": report.files_checked, "problems": "\n".join(report.problems) or "none"},
            )

    @dg.asset_check(asset=table, name="columns_documented", blocking=True,
                    description="Every column is documented in dataset_docs/ and every documented column exists, with matching types.")
    def columns_documented(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        with user_errors_fail():
            _, _, m = manifest_for(context, snapshot_store)
            problems = check_documentation(table, m.schema)
            return dg.AssetCheckResult(passed=not problems, metadata={"problems": "\n".join(problems) or "none",
                                                                       "columns": len(m.schema)})

    return [rows_match_source, primary_key_unique, checksums_verify, columns_documented]
