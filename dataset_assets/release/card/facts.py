"""Everything the dataset card says about one table of a snapshot, gathered in one pass.

Reads the table's manifest, the footers of its parquet files and the profile
columns (through :mod:`.profile`), derives the ``datasets`` features from the
Arrow schema, reads the footers of its change feed (layout clustered, a refresh:
``manifest.changes``), and records every inconsistency as a one-sentence problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from dataset_assets.errors import UserError
from dataset_assets.storage.stores import SUCCESS, Store
from dataset_assets.release.card.docs import TableDoc, documentation_problems, load_table_doc
from dataset_assets.storage.manifest import FileEntry, Manifest, feed_files
from dataset_assets.release.card.profile import Distribution, scan_table
from dataset_assets.storage.layout import table_prefix
from dataset_assets.storage.manifest import load_manifest


CHANGE_COLUMN = "change"   # the change feed's first column: insert | update | delete
FILE_COLUMN = "file"       # then (when the export writes it) the release file the row is in, or left


@dataclass
class ChangeFeedFacts:
    """A table's change feed (``<table>/changes/``) as the card describes it."""

    files: list[FileEntry]
    base_snapshot: str
    base_root_hash: str
    counts: dict[str, int]                     # inserted, updated, deleted (from the manifest)
    features_yaml: list[dict]
    columns: list[str]                         # the feed's columns, in file order
    rows: int                                  # counted in the parquet footers

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def has_subset(self) -> bool:
        """Whether the card offers the feed as a subset: ``datasets`` cannot load a split of no rows (an empty
        row group gives it a batch size of 0, no row group "no data"), so an empty feed gets none."""
        return self.rows > 0


@dataclass
class TableFacts:
    """One table of a snapshot as the card describes it."""

    name: str
    prefix: str
    manifest: Manifest
    features_yaml: list[dict]                  # datasets' YAML form of the features, for dataset_info
    doc: TableDoc | None
    rows: int                                  # counted in the parquet footers (what ``datasets`` verifies)
    distributions: dict[str, Distribution] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    changes: ChangeFeedFacts | None = None     # the change feed since the previous release, if the snapshot has one
    volatile_columns: tuple[str, ...] = ()     # layout clustered: columns whose change alone is no change

    @property
    def bytes(self) -> int:
        return self.manifest.total_bytes

    @property
    def columns(self) -> list[dict]:
        return self.manifest.schema


def hub_features(schema: pa.Schema):
    """``datasets.Features`` for an Arrow schema, exactly as ``datasets`` derives them when reading parquet."""
    try:
        from datasets import Features
    except ImportError:  # pragma: no cover - depends on the environment
        raise UserError("Building the dataset card needs the 'datasets' package; install it next to dataset-assets.") from None
    return Features.from_arrow_schema(schema.remove_metadata())


def collect_table(store: Store, snapshot: str, table: str, profile_columns: tuple[str, ...] = (),
                  docs_directory: str | Path | None = None, volatile_columns: tuple[str, ...] = ()) -> TableFacts:
    """Facts about ``snapshots/<snapshot>/<table>``; raise :class:`UserError` if it is incomplete.
    ``volatile_columns``: the table configuration's, documented for a table in layout clustered."""
    prefix = table_prefix(snapshot, table)
    if not store.is_complete(prefix):
        raise UserError(
            f"Table {table} of snapshot {snapshot} in {store.url} has no {SUCCESS} marker (an interrupted export); "
            "rerun its export before building the card."
        )
    manifest = load_manifest(store, prefix, table, snapshot)
    features = hub_features(manifest.arrow())
    problems: list[str] = []
    names = [c["name"] for c in manifest.schema]
    profile = [c for c in profile_columns if c in names]
    problems += [f"{table}: profile column {c!r} is not in the table; fix profile_columns in tables.yaml." for c in profile_columns if c not in names]
    scan = scan_table(store, prefix, manifest.files, profile)
    problems += _schema_problems(table, manifest, features, scan.schemas)
    problems += _row_problems(table, manifest, scan.rows, scan.file_rows)
    try:
        doc = load_table_doc(table, docs_directory)
        problems += documentation_problems(table, doc, manifest.schema)
    except UserError as exc:
        doc = None
        problems.append(str(exc))
    changes = _change_feed(store, prefix, table, manifest, problems)
    volatile = _volatile(table, manifest, volatile_columns, problems)
    return TableFacts(
        name=table,
        prefix=prefix,
        manifest=manifest,
        features_yaml=features._to_yaml_list(),
        doc=doc,
        rows=scan.rows,
        distributions=scan.distributions,
        problems=problems,
        changes=changes,
        volatile_columns=volatile,
    )


def _volatile(table: str, manifest: Manifest, configured: tuple[str, ...], problems: list[str]) -> tuple[str, ...]:
    """The volatile columns to document: the configuration's, for a snapshot the clustered layout wrote
    (the other layouts have no volatile columns); a set other than the one the export applied (its
    manifest's layout records it) is a problem, as the card would then describe other data."""
    layout = manifest.layout if isinstance(manifest.layout, dict) else None
    if layout is None:
        return ()
    names = {c["name"] for c in manifest.schema}
    applied = layout.get("volatile_columns")
    if isinstance(applied, list) and sorted(applied) != sorted(configured):
        problems.append(f"{table}: the table configuration names the volatile columns {', '.join(sorted(configured)) or 'none'}, "
                        f"but snapshot {manifest.snapshot} was exported with {', '.join(sorted(applied)) or 'none'}; "
                        f"fix volatile_columns in the table configuration or export the date again.")
    return tuple(c for c in configured if c in names)


def _change_feed(store: Store, prefix: str, table: str, manifest: Manifest, problems: list[str]) -> ChangeFeedFacts | None:
    """The change feed's facts from its manifest entry and the footers of its files (their schema must be
    ``change``, optionally ``file``, then the table's columns, each file alike)."""
    changes = manifest.changes
    if not changes:
        return None
    try:
        files = feed_files(manifest)
    except UserError as exc:
        problems.append(str(exc))
        return None
    where = f"{table}/changes"
    counts = {k: changes.get(k) for k in ("inserted", "updated", "deleted")}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
        problems.append(f"{where}: the manifest's change feed lacks its counts of inserted, updated and deleted rows; "
                        f"rerun the export.")
        counts = {k: v if isinstance(v, int) else 0 for k, v in counts.items()}
    if not files:
        problems.append(f"{where}: the manifest's change feed lists no files; rerun the export.")
        return None
    table_schema = manifest.arrow()
    schema: pa.Schema | None = None
    rows = 0
    for f in files:
        with store.open_parquet(f"{prefix}/{f.path}") as pf:
            file_schema, file_rows = pf.schema_arrow, pf.metadata.num_rows
        rows += file_rows
        if file_rows != f.rows:
            problems.append(f"{table}/{f.path}: {file_rows} rows in the file, {f.rows} in the manifest.")
        if schema is None:
            schema = file_schema
            problems += _feed_schema_problems(f"{table}/{f.path}", file_schema, table_schema)
        elif not file_schema.remove_metadata().equals(schema.remove_metadata()):
            problems.append(f"{table}/{f.path}: its schema differs from {table}/{files[0].path}'s; rerun the export.")
    if rows != sum(counts.values()):
        problems.append(f"{where}: the files hold {rows} rows, the manifest says {counts['inserted']} inserted, "
                        f"{counts['updated']} updated and {counts['deleted']} deleted.")
    return ChangeFeedFacts(
        files=files,
        base_snapshot=str(changes.get("base_snapshot")),
        base_root_hash=str(changes.get("base_root_hash")),
        counts=counts,
        features_yaml=hub_features(schema)._to_yaml_list(),
        columns=schema.names,
        rows=rows,
    )


def _feed_schema_problems(where: str, feed: pa.Schema, table: pa.Schema) -> list[str]:
    lead = [CHANGE_COLUMN] + ([FILE_COLUMN] if FILE_COLUMN in feed.names[1:2] else [])
    if feed.names != lead + table.names:
        return [f"{where}: the change feed's columns are {', '.join(feed.names)}, not {CHANGE_COLUMN}"
                f"{', ' + FILE_COLUMN if len(lead) > 1 else ''} and then the table's; rerun the export."]
    for name in table.names:
        if not feed.field(name).type.equals(table.field(name).type):
            return [f"{where}: the change feed's column {name} is {feed.field(name).type}, the table's "
                    f"{table.field(name).type}; rerun the export."]
    return []


def _schema_problems(table: str, manifest: Manifest, features: Any, schemas: dict[str, pa.Schema]) -> list[str]:
    out = []
    arrow = manifest.arrow()
    if arrow.names != [c["name"] for c in manifest.schema]:
        out.append(f"{table}: the manifest's Arrow schema and column list disagree; rerun the export.")
    for path, schema in schemas.items():
        if schema.names != arrow.names or hub_features(schema) != features:
            out.append(f"{table}/{path}: its parquet schema differs from the manifest's, so the card's features would not match it; rerun the export.")
    return out


def _row_problems(table: str, manifest: Manifest, rows: int, file_rows: dict[str, int]) -> list[str]:
    out = [
        f"{table}/{f.path}: {file_rows[f.path]} rows in the file, {f.rows} in the manifest."
        for f in manifest.files if f.path in file_rows and file_rows[f.path] != f.rows
    ]
    if rows != manifest.row_count:
        out.append(f"{table}: the files hold {rows} rows, the manifest says {manifest.row_count}.")
    return out
