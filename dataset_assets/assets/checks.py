"""Blocking checks for every table snapshot; a failure stops the card (and the
push) for that date. The checks themselves are ``release/checks.py`` (shared with
``dataset-assets release``); this turns their results into Dagster's.

Every table's checks are one multi-asset check, so they run in one step: under Dagster's
default executor each step is a process of its own. With a check per step, a daemon's run
of the two media tables (tests/e2e, 2026-12-02) took 46 s: 8 s for the tables' step, then
ten check steps of about 7 s each, under a second of which was checking. In the one step
the checks run in threads, one per core, as the executor ran one step per core (the long
ones, re-hashing files and reading every key, wait on I/O, hashlib and Arrow, not on the
interpreter); each stays a check of its own in the UI, with its own result, and any subset
of them can run."""

import os
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from dataset_assets.errors import UserError
from dataset_assets.tables import TableConfig
from dataset_assets.release import checks as core
from dataset_assets.release.checks import (  # noqa: F401  (re-exported: the names the Dagster layer used)
    DEFAULT_MAX_ROW_DROP, MAX_ROW_DROP_ENV, max_row_drop, previous_snapshot, row_drop,
)
from dataset_assets.resources import SnapshotStore


def checks_at_once() -> int:
    return max(2, os.cpu_count() or 2)


def check_result(result: core.CheckResult, key: dg.AssetCheckKey | None = None) -> dg.AssetCheckResult:
    """The Dagster form of a shared check's result (dict values as JSON metadata); ``key``: whose, in a
    multi-asset check."""
    metadata = {k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in result.metadata.items()}
    where = {"asset_key": key.asset_key, "check_name": key.name} if key is not None else {}
    return dg.AssetCheckResult(passed=result.passed, metadata=metadata, description=result.description, **where)


def descriptions(cfg: TableConfig) -> dict[str, str]:
    """What each of a table's checks verifies, in :data:`core.TABLE_CHECKS` order."""
    text = {
        "checksums_verify": "Every file re-hashes to the sha256 in the manifest; nothing is missing or extra.",
        "rows_match_source": "Rows in the snapshot equal count(*) with the export's filters in the source at the same "
                             "Postgres snapshot, counted by a query of its own (in every mode; an incremental snapshot "
                             "also checks each chunk read, see the metadata).",
        "primary_key_unique": f"The primary key (as the export resolved it; configured: {cfg.primary_key}) is unique "
                              f"and never null.",
        "columns_documented": "Every column is documented in dataset_docs/ and every documented column exists, with "
                              "matching types.",
        "rows_not_collapsed": f"The snapshot holds no more than {MAX_ROW_DROP_ENV} (a fraction, default "
                              f"{DEFAULT_MAX_ROW_DROP}) fewer rows than the previous complete snapshot of {cfg.name}.",
    }
    return {name: text[name] for name in core.TABLE_CHECKS}


def build_table_checks(tables: list[TableConfig]) -> dg.AssetChecksDefinition:
    """The blocking checks of every table in ``tables``, one step (see the module's docstring)."""
    by_table = {cfg.name: cfg for cfg in tables}
    specs = [dg.AssetCheckSpec(name, asset=cfg.name, blocking=True, description=text)
             for cfg in tables for name, text in descriptions(cfg).items()]

    @dg.multi_asset_check(specs=specs, can_subset=True, name="table_checks",
                          description="The blocking checks of each table snapshot.")
    def table_checks(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore):
        date = context.partition_key
        chosen = [s.key for s in specs if s.key in context.selected_asset_check_keys]

        def run(key: dg.AssetCheckKey) -> tuple[dg.AssetCheckKey, core.CheckResult | None, str | None]:
            try:
                store = snapshot_store.open()  # one per check: they run in threads
                return key, core.run_table_check(key.name, store, date, by_table[key.asset_key.to_user_string()]), None
            except UserError as exc:  # the check could not run: the step fails with its sentence, after the others
                return key, None, str(exc)

        errors: dict[tuple[str, str], list[str]] = {}  # (table, sentence) -> the checks it stopped
        with ThreadPoolExecutor(checks_at_once()) as pool:
            for key, result, error in pool.map(run, chosen):
                if error is not None:
                    errors.setdefault((key.asset_key.to_user_string(), error), []).append(key.name)
                else:
                    yield check_result(result, key)
        if errors:  # one sentence per cause (a damaged manifest stops four checks of its table)
            raise dg.Failure(description=" ".join(
                f"{table}: {', '.join(names)} could not run: {sentence}" for (table, sentence), names in errors.items()))

    return table_checks
