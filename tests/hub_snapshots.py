"""Small snapshots as the exporter leaves them in a store (shards of one ``id`` column, a real
manifest, ``_SUCCESS``, a card), for the tests of the push and of the Hub's failures."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq

from dataset_assets.storage.manifest import FileEntry, Manifest, encode_schema
from dataset_assets.storage.stores import LocalStore


def card(*tables: str, license: str | None = None, configs: str | None = None) -> bytes:
    if configs is None:
        configs = "".join(
            f"- config_name: {t}\n  data_files:\n  - split: train\n    path: {t}/train-*.parquet\n" for t in tables)
    head = f"license: {license}\n" if license is not None else ""
    return f"---\n{head}configs:\n{configs}---\n# Test dataset\n".encode()


def parquet(ids: list[int]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64())}), buf)
    return buf.getvalue()


def write_snapshot(store: LocalStore, date: str, tables: dict[str, list[list[int]]], *, success: bool = True,
                   readme: bytes | None = None) -> None:
    """A snapshot as the exporter leaves it: shards, ``_manifest.json``, ``_SUCCESS``, ``README.md``."""
    for table, shards in tables.items():
        prefix = f"snapshots/{date}/{table}"
        staging = store.staging_dir(prefix)
        files = []
        for i, ids in enumerate(shards):
            data = parquet(ids)
            name = f"train-{i:05d}-000.parquet"
            (staging / name).write_bytes(data)
            files.append(FileEntry(path=name, rows=len(ids), bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
        manifest = Manifest(table=table, snapshot=date, row_count=sum(len(s) for s in shards), files=files,
                            schema=[{"name": "id", "type": "int8"}],
                            arrow_schema=encode_schema(pa.schema([("id", pa.int64())])), source={},
                            source_snapshot={}, created_at="2026-01-01T00:00:00+00:00")
        (staging / "_manifest.json").write_text(manifest.to_json())
        store.commit_dir(staging, prefix)
        if not success:
            store.delete_prefix(f"{prefix}/_SUCCESS")
    store.put_bytes(f"snapshots/{date}/README.md", readme if readme is not None else card(*tables))
