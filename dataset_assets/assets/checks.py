"""Blocking checks for every table snapshot; a failure stops the card (and the
push) for that date."""


import os

import dagster as dg

from dataset_assets.errors import UserError
from dataset_assets.tables import TableConfig
from dataset_assets.storage.checks import primary_key_report
from dataset_assets.release.card.docs import check_documentation
from dataset_assets.storage.layout import snapshot_dates, table_prefix
from dataset_assets.storage.manifest import Manifest, load_manifest
from dataset_assets.storage.verify import verify_table
from dataset_assets.resources import SnapshotStore
from dataset_assets.assets.failures import user_errors_fail


MAX_ROW_DROP_ENV = "DATASET_ASSETS_MAX_ROW_DROP"
DEFAULT_MAX_ROW_DROP = 0.5


def max_row_drop() -> float:
    """The largest share of its rows a table snapshot may lose against the previous one
    (``DATASET_ASSETS_MAX_ROW_DROP``, default 0.5)."""
    raw = os.environ.get(MAX_ROW_DROP_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_ROW_DROP
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise UserError(f"{MAX_ROW_DROP_ENV} is {raw!r}; set it to a fraction from 0 to 1 (default {DEFAULT_MAX_ROW_DROP}), "
                        f"the largest share of its rows a table snapshot may lose against the previous one.")
    return value


def previous_snapshot(store, table: str, date: str) -> tuple[str, Manifest] | None:
    """The newest complete snapshot of ``table`` before ``date`` whose manifest loads (a damaged
    one is skipped: its own checksum check says so)."""
    for earlier in reversed(snapshot_dates(store)):
        if earlier >= date:
            continue
        prefix = table_prefix(earlier, table)
        if not store.is_complete(prefix):
            continue
        try:
            return earlier, load_manifest(store, prefix, table, earlier)
        except UserError:
            continue
    return None


def row_drop(store, table: str, date: str, rows: int, limit: float) -> tuple[bool, dict, str | None]:
    """(passed, metadata, description) of the ``rows_not_collapsed`` check for ``rows`` rows of
    ``table`` on ``date``."""
    prev = previous_snapshot(store, table, date)
    if prev is None or prev[1].row_count == 0:
        return True, {"rows": rows, "previous_snapshot": prev[0] if prev else "", "max_drop": limit}, None
    earlier, m = prev
    drop = (m.row_count - rows) / m.row_count
    meta = {"rows": rows, "previous_snapshot": earlier, "previous_rows": m.row_count, "drop": round(drop, 4), "max_drop": limit}
    if drop <= limit:
        return True, meta, None
    return False, meta, (f"{table} holds {rows} rows on {date}, {drop:.0%} fewer than the {m.row_count} of {earlier}, more than the "
                         f"{limit:.0%} allowed; if the source really lost them, set {MAX_ROW_DROP_ENV} above {drop:.2f} and run "
                         f"the check again, otherwise find out what emptied the table and materialise the snapshot again.")


def build_table_checks(cfg: TableConfig) -> list[dg.AssetChecksDefinition]:
    table = cfg.name

    def manifest_for(context, snapshot_store):
        store = snapshot_store.open()
        prefix = table_prefix(context.partition_key, table)
        return store, prefix, load_manifest(store, prefix, table, context.partition_key)

    @dg.asset_check(asset=table, name="rows_match_source", blocking=True,
                    description="Rows in the snapshot equal count(*) with the export's filters in the source at the same "
                                "Postgres snapshot, counted by a query of its own (in every mode; an incremental snapshot "
                                "also checks each chunk read, see the metadata).")
    def rows_match_source(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        with user_errors_fail():
            _, _, m = manifest_for(context, snapshot_store)
            counted = m.timings.get("source_rows_counted")
            if m.chunking and "separate query" not in (m.timings.get("count_check") or ""):
                counted = None  # an incremental manifest of before the independent count: its number is its own row count
            return dg.AssetCheckResult(
                passed=counted is not None and counted == m.row_count,
                metadata={"snapshot_rows": m.row_count, "source_rows": counted if counted is not None else -1,
                          "how": m.timings.get("count_check") or "",
                          "source_snapshot": m.source_snapshot.get("txid_snapshot", "")},
                description=None if counted == m.row_count else (
                    f"source counted {counted}, snapshot holds {m.row_count}" if counted is not None else
                    "the manifest records no count(*) of the source made apart from the export; materialise the snapshot again"),
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

    @dg.asset_check(asset=table, name="rows_not_collapsed", blocking=True,
                    description=f"The snapshot holds no more than {MAX_ROW_DROP_ENV} (a fraction, default "
                                f"{DEFAULT_MAX_ROW_DROP}) fewer rows than the previous complete snapshot of {table}.")
    def rows_not_collapsed(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        with user_errors_fail():
            store, _, m = manifest_for(context, snapshot_store)
            passed, metadata, description = row_drop(store, table, context.partition_key, m.row_count, max_row_drop())
            return dg.AssetCheckResult(passed=passed, metadata=metadata, description=description)

    return [rows_match_source, primary_key_unique, checksums_verify, columns_documented, rows_not_collapsed]
