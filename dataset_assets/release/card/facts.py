"""Everything the dataset card says about one table of a snapshot, gathered in one pass.

Reads the table's manifest, the footers of its parquet files and the profile
columns (through :mod:`.profile`), derives the ``datasets`` features from the
Arrow schema, and records every inconsistency as a one-sentence problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from dataset_assets.errors import UserError
from dataset_assets.storage.stores import SUCCESS, Store
from dataset_assets.release.card.docs import TableDoc, documentation_problems, load_table_doc
from dataset_assets.storage.manifest import Manifest
from dataset_assets.release.card.profile import Distribution, scan_table
from dataset_assets.storage.layout import table_prefix
from dataset_assets.storage.manifest import load_manifest


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
                  docs_directory: str | Path | None = None) -> TableFacts:
    """Facts about ``snapshots/<snapshot>/<table>``; raise :class:`UserError` if it is incomplete."""
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
    return TableFacts(
        name=table,
        prefix=prefix,
        manifest=manifest,
        features_yaml=features._to_yaml_list(),
        doc=doc,
        rows=scan.rows,
        distributions=scan.distributions,
        problems=problems,
    )


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
