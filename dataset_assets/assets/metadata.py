"""What a materialised table snapshot shows in the Dagster UI."""


import dagster as dg
import pyarrow.parquet as pq

from dataset_assets.release.card.docs import load_table_doc
from dataset_assets.export.run import TableResult
from dataset_assets.errors import UserError
from dataset_assets.source.connect import redact
from dataset_assets.tables import load_tables
from dataset_assets.storage.stores import MANIFEST, Store

PREVIEW_ROWS = 5
PREVIEW_CHARS = 60


def column_schema(table: str, schema: list[dict]) -> dg.TableSchema:
    try:
        docs = load_table_doc(table).columns
    except UserError:
        docs = {}
    return dg.TableSchema(columns=[
        dg.TableColumn(
            name=c["name"],
            type=c["arrow_type"],
            description=(getattr(docs.get(c["name"]), "description", None) or f"Postgres {c['pg_type']}"),
            constraints=dg.TableColumnConstraints(nullable=c["nullable"]),
        )
        for c in schema
    ])


def _location(store: Store, key: str) -> dg.MetadataValue:
    local = store.local_path(key)
    return dg.MetadataValue.path(str(local)) if local is not None else dg.MetadataValue.url(store.location(key))


def preview(store: Store, result: TableResult) -> str:
    if not result.manifest.files:
        return "(no rows)"
    first = f"{result.prefix}/{result.manifest.files[0].path}"
    local = store.local_path(first)
    if local is None:
        return "(preview available for local stores)"
    pf = pq.ParquetFile(local)
    rows = pf.read_row_group(0).slice(0, PREVIEW_ROWS).to_pylist() if pf.num_row_groups else []
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    def cell(v):
        s = "" if v is None else str(v)
        s = s.replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= PREVIEW_CHARS else s[: PREVIEW_CHARS - 1] + "…"
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def source_description(source: dict) -> dict:
    """The manifest's source as the UI shows it: host, port and database; no user, no password."""
    return {k: redact(str(source[k])) if isinstance(source.get(k), str) else source.get(k)
            for k in ("host", "port", "database") if k in (source or {})}


def preview_enabled(table: str) -> bool:
    """``preview`` of the table in tables.yaml (true when the table is not configured)."""
    try:
        config = load_tables().get(table)
    except UserError:
        return True
    return True if config is None else config.preview


def refresh_metadata(m) -> dict:
    """Layout clustered: how the snapshot was made (first export, or a refresh by xmin or by
    content) and what it found: rows read, unchanged candidates, inserts, updates, deletes,
    how rows gone from the table were found (through the tombstones, by the keys of every unchanged row,
    or by content), shards rewritten and merged, files written and reused; and the wall seconds of each stage."""
    r = (m.layout or {}).get("refresh") if isinstance(m.layout, dict) else None
    if not r:
        return {}
    keys = ("mode", "base_snapshot", "why_content", "rows_read", "bytes_read", "candidates", "unchanged_candidates",
            "inserted", "updated", "moved", "deleted", "deletions_found_by", "rows_counted_by", "shards_rewritten", "shards_merged",
            "shards_written", "files_written", "files_reused")
    out = {"refresh": dg.MetadataValue.json({k: r[k] for k in keys if k in r}),
           "shards_rewritten": r.get("shards_rewritten", r.get("shards_written", 0))}
    stages = (m.timings or {}).get("stages_seconds")
    if stages:  # where the time went: read, finish (first export); read, classify, rewrite, index, feed
        out["stages_seconds"] = dg.MetadataValue.json(stages)
    return out


def table_metadata(store: Store, result: TableResult) -> dict:
    m = result.manifest
    t = m.timings
    seconds = t.get("total_seconds") or t.get("copy_seconds") or 0
    return {
        "dagster/row_count": m.row_count,
        "dagster/column_schema": column_schema(result.table, m.schema),
        "bytes": dg.MetadataValue.int(m.total_bytes),
        "size_mb": round(m.total_bytes / 1e6, 2),
        "files": len(m.files),
        "duration_s": round(seconds, 2),
        "rows_per_second": int(m.row_count / seconds) if seconds else 0,
        "mb_per_second": round(m.total_bytes / 1e6 / seconds, 1) if seconds else 0,
        "manifest": _location(store, f"{result.prefix}/{MANIFEST}"),
        "root_hash": m.root_hash,
        "source": dg.MetadataValue.json(source_description(m.source)),
        "source_snapshot": m.source_snapshot.get("txid_snapshot", ""),
        "rows_exported": t.get("rows_exported", m.row_count),
        "rows_reused": t.get("rows_reused", 0),
        "files_reused": sum(1 for f in m.files if f.reused_from),
        "changed_chunks": (m.chunking or {}).get("changed_chunks", -1),
        **refresh_metadata(m),
        "preview": dg.MetadataValue.md(preview(store, result) if preview_enabled(result.table)
                                       else f"(off: preview: false for {result.table} in tables.yaml)"),
    }
