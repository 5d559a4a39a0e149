"""Read and check one snapshot in a store before it is published.

Layout (see ``dataset_assets.storage.stores``)::

    snapshots/<YYYY-MM-DD>/README.md
    snapshots/<YYYY-MM-DD>/<table>/train-CCCCC-PPP.parquet
    snapshots/<YYYY-MM-DD>/<table>/_manifest.json
    snapshots/<YYYY-MM-DD>/<table>/_SUCCESS

Only complete tables (with ``_SUCCESS``) and the shards their manifest lists are published.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from dataset_assets.release.card import README
from dataset_assets.export.run import parse_snapshot_date
from dataset_assets.storage.manifest import FORMAT as MANIFEST_FORMAT
from dataset_assets.errors import UserError, VerificationError
from dataset_assets.storage.stores.base import MANIFEST, SUCCESS, Store

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Shard:
    """One parquet file: ``repo_path`` on the Hub, ``key`` in the store, size and sha256 from the manifest."""

    table: str
    repo_path: str
    key: str
    size: int
    sha256: str
    rows: int


@dataclass(frozen=True)
class Table:
    name: str
    manifest: bytes  # published verbatim as <table>/_manifest.json
    shards: tuple[Shard, ...]


@dataclass(frozen=True)
class Snapshot:
    date: str
    readme: bytes
    tables: tuple[Table, ...]

    @property
    def shards(self) -> list[Shard]:
        return [s for t in self.tables for s in t.shards]

    def metadata_files(self) -> dict[str, bytes]:
        """Small files written on every publish: the card and one manifest per table."""
        files = {README: self.readme}
        files.update({f"{t.name}/{MANIFEST}": t.manifest for t in self.tables})
        return files


def snapshot_prefix(date: str) -> str:
    return f"snapshots/{date}"


def load_snapshot(store: Store, date: str) -> Snapshot:
    """Read the snapshot ``date`` from ``store``; raise :class:`UserError` if it is not publishable."""
    date = parse_snapshot_date(date)
    prefix = snapshot_prefix(date)
    readme_key = f"{prefix}/{README}"
    table_prefixes = sorted(store.iter_prefixes(prefix))  # one level; not every object of the snapshot
    if not table_prefixes and not store.exists(readme_key):
        raise UserError(f"There is no snapshot {date} in {store.url}; export it first or pick an existing date.")
    if not store.exists(readme_key):
        raise UserError(f"Snapshot {date} in {store.url} has no {README} (the dataset card); build the card, then publish.")
    if not table_prefixes:
        raise UserError(f"Snapshot {date} in {store.url} holds no table folders; export at least one table first.")
    incomplete = [p.rsplit("/", 1)[-1] for p in table_prefixes if not store.is_complete(p)]
    if incomplete:
        raise UserError(
            f"Table folder(s) {', '.join(incomplete)} of snapshot {date} in {store.url} lack {SUCCESS} "
            "(an interrupted export); rerun the export of that snapshot before publishing."
        )
    tables = tuple(_load_table(store, date, p) for p in table_prefixes)
    return Snapshot(date, store.read_bytes(readme_key), tables)


def _load_table(store: Store, date: str, table_prefix: str) -> Table:
    name = table_prefix.rsplit("/", 1)[-1]
    key = f"{table_prefix}/{MANIFEST}"
    try:
        raw = store.read_bytes(key)
        manifest = json.loads(raw)
    except FileNotFoundError:
        raise VerificationError(f"{key} is missing in {store.url}; rerun the export of table {name}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError(f"{key} in {store.url} is not valid JSON ({exc}); rerun the export of table {name}.") from None
    problem = _manifest_problem(manifest, name, date)
    if problem:
        raise VerificationError(f"{key} in {store.url} {problem}; rerun the export of table {name}.")
    sizes = {o.key: o.size for o in store.list(table_prefix + "/")}
    shards = []
    for f in manifest["files"]:
        shard_key = f"{table_prefix}/{f['path']}"
        if sizes.get(shard_key) != f["bytes"]:
            found = "is missing" if shard_key not in sizes else f"has {sizes[shard_key]} bytes, not {f['bytes']}"
            raise VerificationError(f"{shard_key} in {store.url} {found} as its manifest says; rerun the export of table {name}.")
        shards.append(Shard(name, f"{name}/{f['path']}", shard_key, f["bytes"], f["sha256"], f.get("rows", 0)))
    return Table(name, raw, tuple(shards))


def _manifest_problem(manifest: object, table: str, date: str) -> str | None:
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return f"is not a {MANIFEST_FORMAT} manifest"
    if manifest.get("table") != table or manifest.get("snapshot") != date:
        return f"describes table {manifest.get('table')!r} of snapshot {manifest.get('snapshot')!r}"
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        return "lists no files"
    for f in files:
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and f["path"] and "/" not in f["path"]
                and not f["path"].startswith((".", "_")) and isinstance(f.get("bytes"), int)
                and isinstance(f.get("sha256"), str) and _SHA256.fullmatch(f["sha256"])):
            return f"has a malformed file entry {f!r}"
    return None
