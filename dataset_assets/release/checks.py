"""The blocking checks of a snapshot date, without Dagster: the Dagster asset checks
(``assets/checks.py``, ``assets/card.py``) and ``dataset-assets release`` both run these functions
and differ only in how they report a :class:`CheckResult`.

Per table: ``rows_match_source`` (the manifest's row count equals the independent ``count(*)`` the
export made in the same Postgres snapshot), ``primary_key_unique`` (unique and never null),
``checksums_verify`` (every file re-hashes to its manifest), ``columns_documented`` (dataset_docs/
matches the schema), ``rows_not_collapsed`` (no drop beyond ``DATASET_ASSETS_MAX_ROW_DROP`` against
the previous snapshot). Per date: ``one_postgres_snapshot`` (every table read in one Postgres snapshot).

Also what the command line needs to skip a step that is done: :func:`tables_ready` (every table of a
date complete, in one Postgres snapshot), :func:`card_is_current` (the stored card describes the
stored tables). (A released date's tag is verified by ``release.hub.verify_release``.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from dataset_assets.errors import UserError
from dataset_assets.release.card.docs import check_documentation
from dataset_assets.storage.checks import primary_key_report
from dataset_assets.storage.layout import card_key, date_tables, snapshot_dates, table_prefix
from dataset_assets.storage.manifest import Manifest, load_manifest
from dataset_assets.storage.stores import Store
from dataset_assets.storage.verify import verify_table
from dataset_assets.tables import TableConfig, in_table_order, table_config

MAX_ROW_DROP_ENV = "DATASET_ASSETS_MAX_ROW_DROP"
DEFAULT_MAX_ROW_DROP = 0.5

# checksums first: the others read the files, which are worth reading only once they match the manifest
TABLE_CHECKS = ("checksums_verify", "rows_match_source", "primary_key_unique", "columns_documented", "rows_not_collapsed")
DATE_CHECKS = ("one_postgres_snapshot",)
CARD = "dataset_card"  # the asset the date's checks belong to in Dagster


@dataclass(frozen=True)
class CheckResult:
    """One check's answer: ``metadata`` holds plain values (str, int, float, dict); ``description``
    says what failed (None when passed)."""

    asset: str  # the table, or ``dataset_card`` for a check of the whole date
    check: str
    passed: bool
    metadata: dict = field(default_factory=dict)
    description: str | None = None

    def sentence(self, date: str) -> str:
        """One sentence naming the table (or date) and the check, for a failure."""
        what = f"table {self.asset}" if self.asset != CARD else "the tables"
        detail = (self.description or "failed").rstrip(". ")
        return f"The blocking check {self.check} failed for {what} of snapshot {date}: {detail}."


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


def previous_snapshot(store: Store, table: str, date: str) -> tuple[str, Manifest] | None:
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


def row_drop(store: Store, table: str, date: str, rows: int, limit: float) -> tuple[bool, dict, str | None]:
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


def _manifest(store: Store, date: str, table: str, manifest: Manifest | None) -> Manifest:
    return manifest if manifest is not None else load_manifest(store, table_prefix(date, table), table, date)


# --- the checks of one table ------------------------------------------------------------------
def rows_match_source(store: Store, date: str, table: str, manifest: Manifest | None = None) -> CheckResult:
    m = _manifest(store, date, table, manifest)
    counted = m.timings.get("source_rows_counted")
    if m.chunking and "separate query" not in (m.timings.get("count_check") or ""):
        counted = None  # an incremental manifest of before the independent count: its number is its own row count
    all_rows = m.timings.get("source_rows_all_counted")
    if counted is None and all_rows is not None and m.layout:
        # a refresh (layout clustered): the rows of the table Postgres counted (filters not applied) must
        # be the row index's rows, and the shards its released rows
        index_rows = ((m.layout or {}).get("index") or {}).get("rows")
        released = m.timings.get("index_released_rows")
        ok = all_rows == index_rows and released == m.row_count
        return CheckResult(
            table, "rows_match_source", passed=ok,
            metadata={"snapshot_rows": m.row_count, "source_rows": all_rows, "index_rows": index_rows if index_rows is not None else -1,
                      "how": m.timings.get("count_check") or "", "source_snapshot": m.source_snapshot.get("txid_snapshot", "")},
            description=None if ok else f"Postgres counted {all_rows} rows, the row index holds {index_rows} ({released} released, "
                                        f"the snapshot {m.row_count})")
    return CheckResult(
        table, "rows_match_source", passed=counted is not None and counted == m.row_count,
        metadata={"snapshot_rows": m.row_count, "source_rows": counted if counted is not None else -1,
                  "how": m.timings.get("count_check") or "", "source_snapshot": m.source_snapshot.get("txid_snapshot", "")},
        description=None if counted == m.row_count else (
            f"source counted {counted}, snapshot holds {m.row_count}" if counted is not None else
            "the manifest records no count(*) of the source made apart from the export; materialise the snapshot again"),
    )


def primary_key_unique(store: Store, date: str, cfg: TableConfig, manifest: Manifest | None = None) -> CheckResult:
    """Raises :class:`UserError` when the key is not among the exported columns (the check cannot run)."""
    table = cfg.name
    m = _manifest(store, date, table, manifest)
    key = m.primary_key or cfg.primary_key  # manifests before the field: the configured key
    if key not in {c["name"] for c in m.schema}:
        raise UserError(f"The primary key {key!r} of {table} is not among the exported columns; "
                        f"add it to the table's columns in tables.yaml.")
    r = primary_key_report(store, table_prefix(date, table), m, key)
    return CheckResult(
        table, "primary_key_unique", passed=r.ok,
        metadata={"key": key, "rows": r.rows, "nulls": r.nulls, "duplicates": r.duplicates, "examples": ", ".join(r.examples)},
        description=None if r.ok else (
            f"the key {key} has {r.duplicates} duplicate and {r.nulls} null value(s) in {r.rows} rows"
            + (f" (e.g. {', '.join(r.examples[:3])})" if r.examples else "")),
    )


def checksums_verify(store: Store, date: str, table: str) -> CheckResult:
    report = verify_table(store, date, table)
    return CheckResult(
        table, "checksums_verify", passed=report.ok,
        metadata={"files_checked": report.files_checked, "problems": "\n".join(report.problems) or "none"},
        description=None if report.ok else (
            f"{report.problems[0]}" + (f" (and {len(report.problems) - 1} more problem(s))" if len(report.problems) > 1 else "")
            + f"; export the date again (materialise it, or dataset-assets export --snapshot {date} --force)"),
    )


def columns_documented(store: Store, date: str, table: str, manifest: Manifest | None = None) -> CheckResult:
    m = _manifest(store, date, table, manifest)
    problems = check_documentation(table, m.schema)
    return CheckResult(
        table, "columns_documented", passed=not problems,
        metadata={"problems": "\n".join(problems) or "none", "columns": len(m.schema)},
        description=None if not problems else (
            problems[0].rstrip(". ") + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")),
    )


def rows_not_collapsed(store: Store, date: str, table: str, manifest: Manifest | None = None,
                       limit: float | None = None) -> CheckResult:
    m = _manifest(store, date, table, manifest)
    passed, metadata, description = row_drop(store, table, date, m.row_count, max_row_drop() if limit is None else limit)
    return CheckResult(table, "rows_not_collapsed", passed=passed, metadata=metadata, description=description)


def run_table_check(name: str, store: Store, date: str, cfg: TableConfig, manifest: Manifest | None = None) -> CheckResult:
    """The check ``name`` (one of :data:`TABLE_CHECKS`) of table ``cfg`` on ``date`` (``manifest``: the table's,
    when the caller has read it already)."""
    if name == "checksums_verify":
        return checksums_verify(store, date, cfg.name)  # reads the manifest itself, with the files
    m = _manifest(store, date, cfg.name, manifest)
    if name == "rows_match_source":
        return rows_match_source(store, date, cfg.name, m)
    if name == "primary_key_unique":
        return primary_key_unique(store, date, cfg, m)
    if name == "columns_documented":
        return columns_documented(store, date, cfg.name, m)
    if name == "rows_not_collapsed":
        return rows_not_collapsed(store, date, cfg.name, m)
    raise ValueError(f"unknown table check {name!r}")


# --- the checks of a date -----------------------------------------------------------------------
def snapshot_identity(manifest: Manifest) -> str:
    s = manifest.source_snapshot or {}
    return f"{s.get('txid_snapshot', '')}@{s.get('taken_at', '')}"


def one_postgres_snapshot(store: Store, date: str, tables: list[str] | None = None) -> CheckResult:
    """Every table of ``date`` (default: every table folder) records the same Postgres snapshot."""
    names = in_table_order(tables if tables is not None else date_tables(store, date))
    seen = {t: snapshot_identity(load_manifest(store, table_prefix(date, t), t, date)) for t in names}
    distinct = sorted(set(seen.values()))
    return CheckResult(
        CARD, "one_postgres_snapshot", passed=len(distinct) == 1,
        metadata={"postgres_snapshots": dict(seen)},
        description=None if len(distinct) == 1 else
        f"the tables of {date} come from {len(distinct)} Postgres snapshots; rematerialise the tables of the date",
    )


def blocking_checks(store: Store, date: str, tables: list[str]) -> Iterator[CheckResult]:
    """Every blocking check of ``date``: each table's, in :data:`TABLE_CHECKS` order, then the date's."""
    for t in in_table_order(tables):
        cfg = table_config(t)
        manifest = None
        for name in TABLE_CHECKS:
            if name != "checksums_verify" and manifest is None:
                manifest = _manifest(store, date, t, None)  # read once for the table's checks
            yield run_table_check(name, store, date, cfg, manifest)
    yield one_postgres_snapshot(store, date)  # every table folder of the date, as the card's Dagster check


# --- what the command line skips ----------------------------------------------------------------
def tables_ready(store: Store, date: str, tables: list[str]) -> str | None:
    """None when every table of ``tables`` is complete on ``date`` (its manifest loads) and all were read
    in one Postgres snapshot; else why not (the export has to run)."""
    missing = [t for t in tables if not store.is_complete(table_prefix(date, t))]
    if missing:
        return f"{', '.join(missing)} not complete"
    try:
        check = one_postgres_snapshot(store, date, tables)
    except UserError as exc:
        return str(exc)
    return None if check.passed else f"the tables come from {len(set(check.metadata['postgres_snapshots'].values()))} Postgres snapshots"


def card_is_current(store: Store, date: str) -> str | None:
    """None when the stored card of ``date`` describes the stored tables (it names the root hash of every
    complete table of the date); else why not (the card has to be rendered)."""
    try:
        text = store.read_bytes(card_key(date)).decode("utf-8", "replace")
    except FileNotFoundError:
        return "no card yet"
    for t in date_tables(store, date):
        prefix = table_prefix(date, t)
        if not store.is_complete(prefix):
            return f"{t} is not complete"
        try:
            m = load_manifest(store, prefix, t, date)
        except UserError as exc:
            return str(exc)
        if not m.root_hash or m.root_hash not in text:
            return f"the card does not describe the stored {t}"
    return None
