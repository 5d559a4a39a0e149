"""The hand-written documentation in ``dataset_docs/`` and its check against a live schema.

``dataset_docs/<table>.yaml`` documents every column of one table (see
``dataset_docs/README.md``), ``dataset.yaml`` holds the dataset-level keys of the
card's front-matter and ``card.md`` the card's prose. :func:`check_documentation`
compares a table's documentation with the schema the export writes, as listed by
``TableSchema.describe()`` or ``Manifest.schema``: dicts with ``name``,
``pg_type`` (``format_type()`` spelling), ``arrow_type`` (``str()`` of the pyarrow
type) and ``nullable``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataset_assets.tables import read_yaml
from dataset_assets.settings import docs_dir
from dataset_assets.errors import UserError

DATASET_FILE = "dataset.yaml"
TEMPLATE_FILE = "card.md"
REQUIRED_KEYS = ("type", "nullable", "parquet_type", "description")
# Keys the card renderer computes itself; dataset.yaml must not set them.
GENERATED_KEYS = ("configs", "dataset_info", "size_categories")


@dataclass(frozen=True)
class ColumnDoc:
    """One documented column, as written in ``<table>.yaml``."""

    name: str
    type: str | None
    nullable: bool | None
    parquet_type: str | None
    description: str = ""
    example: Any = None
    has_example: bool = False
    caveats: str = ""


@dataclass(frozen=True)
class TableDoc:
    """``dataset_docs/<table>.yaml``: summary and columns in file order."""

    table: str
    pretty_name: str
    summary: str
    columns: dict[str, ColumnDoc]
    declared_table: str | None = None  # the file's own ``table:`` key
    problems: tuple[str, ...] = ()     # malformed entries found while loading


@dataclass(frozen=True)
class DatasetDoc:
    """``dataset_docs/dataset.yaml``: keys copied into the card's front-matter, in file order."""

    front_matter: dict[str, Any] = field(default_factory=dict)


def _dir(directory: str | Path | None) -> Path:
    return Path(directory) if directory is not None else docs_dir()


def table_doc_path(table: str, directory: str | Path | None = None) -> Path:
    return _dir(directory) / f"{table}.yaml"


def load_table_doc(table: str, directory: str | Path | None = None) -> TableDoc:
    """Load ``<table>.yaml``; raise :class:`UserError` if it is missing or not a mapping.

    Entries that are present but malformed (a column without ``type``, a
    non-boolean ``nullable``) are kept and listed in ``TableDoc.problems``.
    """
    path = table_doc_path(table, directory)
    if not path.is_file():
        raise UserError(
            f"Table {table!r} has no documentation: create dataset_docs/{table}.yaml "
            f"({path}) describing every column, as explained in dataset_docs/README.md."
        )
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("columns"), dict):
        raise UserError(f"{path} must be a mapping with a 'columns' mapping; see dataset_docs/README.md.")
    problems: list[str] = []
    columns: dict[str, ColumnDoc] = {}
    for name, spec in raw["columns"].items():
        name = str(name)
        if not isinstance(spec, dict):
            problems.append(f"{table}.{name}: the entry in {path.name} is not a mapping of type, nullable, parquet_type, description.")
            spec = {}
        missing = [k for k in REQUIRED_KEYS if spec.get(k) in (None, "")]
        if missing:
            problems.append(f"{table}.{name}: {path.name} lacks {', '.join(missing)}.")
        nullable = spec.get("nullable")
        if nullable is not None and not isinstance(nullable, bool):
            problems.append(f"{table}.{name}: nullable must be true or false in {path.name}, not {nullable!r}.")
            nullable = None
        columns[name] = ColumnDoc(
            name=name,
            type=_text(spec.get("type")),
            nullable=nullable,
            parquet_type=_text(spec.get("parquet_type")),
            description=_text(spec.get("description")) or "",
            example=spec.get("example"),
            has_example="example" in spec,
            caveats=_text(spec.get("caveats")) or "",
        )
    declared = raw.get("table")
    return TableDoc(
        table=table,
        pretty_name=_text(raw.get("pretty_name")) or table,
        summary=_text(raw.get("summary")) or "",
        columns=columns,
        declared_table=None if declared is None else str(declared),
        problems=tuple(problems),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value).strip()


def load_dataset_doc(directory: str | Path | None = None) -> DatasetDoc:
    """Load ``dataset.yaml`` (an empty :class:`DatasetDoc` if there is none)."""
    path = _dir(directory) / DATASET_FILE
    if not path.is_file():
        return DatasetDoc()
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path} must be a mapping of dataset card keys; see dataset_docs/README.md.")
    return DatasetDoc(front_matter=dict(raw))


def load_card_template(directory: str | Path | None = None) -> str:
    """The markdown body of the card, with ``{{placeholders}}``."""
    path = _dir(directory) / TEMPLATE_FILE
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"The card template {path} does not exist; create dataset_docs/{TEMPLATE_FILE}.") from None


def check_documentation(table: str, schema_columns: list[dict], directory: str | Path | None = None) -> list[str]:
    """Problems (one sentence each) between ``dataset_docs/<table>.yaml`` and a live schema; empty if none.

    Checked: every live column is documented, every documented column exists, and
    ``type``, ``nullable`` and ``parquet_type`` equal the live ``pg_type``,
    nullability and Arrow type. Columns are matched by name, never by position: the
    order of the documentation file does not matter (real catalogues order their
    columns differently from one deployment to the next), and the card lists the
    columns in the table's order.
    """
    try:
        doc = load_table_doc(table, directory)
    except UserError as exc:
        return [str(exc)]
    return documentation_problems(table, doc, schema_columns)


def documentation_problems(table: str, doc: TableDoc, schema_columns: list[dict]) -> list[str]:
    """:func:`check_documentation` for a table doc already loaded."""
    problems = list(doc.problems)
    if doc.declared_table is not None and doc.declared_table != table:
        problems.append(f"{table}: {table}.yaml says table: {doc.declared_table}; it must be {table}.")
    live = {c["name"]: c for c in schema_columns}
    for name in live:
        if name not in doc.columns:
            problems.append(f"{table}.{name}: the column is not documented; add it to dataset_docs/{table}.yaml.")
    for name, col in doc.columns.items():
        if name not in live:
            problems.append(f"{table}.{name}: documented in dataset_docs/{table}.yaml but the table has no such column; remove or rename the entry.")
            continue
        problems.extend(_compare(table, col, live[name]))
    return problems


def _compare(table: str, col: ColumnDoc, live: dict) -> list[str]:
    out = []
    where = f"{table}.{col.name}"
    if col.type is not None and col.type != live.get("pg_type"):
        out.append(f"{where}: documented type {col.type!r} differs from the catalog's {live.get('pg_type')!r}.")
    if col.nullable is not None and col.nullable != bool(live.get("nullable")):
        out.append(f"{where}: documented nullable: {str(col.nullable).lower()}, but the column is {'nullable' if live.get('nullable') else 'NOT NULL'}.")
    if col.parquet_type is not None and col.parquet_type != live.get("arrow_type"):
        out.append(f"{where}: documented parquet_type {col.parquet_type!r} differs from the written {live.get('arrow_type')!r}.")
    return out
