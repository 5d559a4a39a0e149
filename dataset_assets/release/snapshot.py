"""Read and check one snapshot in a store before it is published.

Layout (see ``dataset_assets.storage.stores``)::

    snapshots/<YYYY-MM-DD>/README.md
    snapshots/<YYYY-MM-DD>/<table>/train-CCCCC-PPP.parquet       (layout clustered: train-NNNNN.parquet)
    snapshots/<YYYY-MM-DD>/<table>/changes/changes-00000.parquet  layout clustered, a refresh: the change feed
    snapshots/<YYYY-MM-DD>/<table>/_index.parquet                 layout clustered: the row index (never pushed)
    snapshots/<YYYY-MM-DD>/<table>/_manifest.json
    snapshots/<YYYY-MM-DD>/<table>/_SUCCESS

Only complete tables (with ``_SUCCESS``) are published: the shards their manifest lists and the
files of their change feed (``manifest.changes``, pushed as ``<table>/changes/...``), with each
table's manifest in its public form (:func:`public_manifest`): nothing of the source's internals
(host, port, user, database, Postgres snapshot ids, change signals, cluster and relation identity,
chunk fingerprints, the clustered layout's shard ranges and row index) reaches the Hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from dataset_assets.settings import env_int
from dataset_assets.errors import UserError, VerificationError
from dataset_assets.storage.layout import MANIFEST, README, SUCCESS, card_key, date_prefix, leaf, parse_snapshot_date
from dataset_assets.storage.manifest import feed_files, parse_manifest, side_files
from dataset_assets.storage.stores.base import Store
from dataset_assets.storage.verify import file_problems, stored_files


@dataclass(frozen=True)
class Shard:
    """One parquet file to push: ``repo_path`` on the Hub, ``key`` in the store, size and sha256 from the
    manifest; ``kind`` "shard" (``manifest.files``) or "changes" (a file of the change feed)."""

    table: str
    repo_path: str
    key: str
    size: int
    sha256: str
    rows: int
    kind: str = "shard"


@dataclass(frozen=True)
class Table:
    name: str
    manifest: bytes  # published verbatim as <table>/_manifest.json: public_manifest() of the store's
    shards: tuple[Shard, ...]  # every file pushed: the shards, then the change feed's files (never the row index)


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


def load_snapshot(store: Store, date: str) -> Snapshot:
    """Read the snapshot ``date`` from ``store``; raise :class:`UserError` if it is not publishable."""
    date = parse_snapshot_date(date)
    prefix = date_prefix(date)
    readme_key = card_key(date)
    table_prefixes = sorted(store.iter_prefixes(prefix))  # one level; not every object of the snapshot
    if not table_prefixes and not store.exists(readme_key):
        raise UserError(f"There is no snapshot {date} in {store.url}; export it first or pick an existing date.")
    if not store.exists(readme_key):
        raise UserError(f"Snapshot {date} in {store.url} has no {README} (the dataset card); build the card, then publish.")
    if not table_prefixes:
        raise UserError(f"Snapshot {date} in {store.url} holds no table folders; export at least one table first.")
    incomplete = [leaf(p) for p in table_prefixes if not store.is_complete(p)]
    if incomplete:
        raise UserError(
            f"Table folder(s) {', '.join(incomplete)} of snapshot {date} in {store.url} lack {SUCCESS} "
            "(an interrupted export); rerun the export of that snapshot before publishing."
        )
    tables = tuple(_load_table(store, date, p) for p in table_prefixes)
    return Snapshot(date, store.read_bytes(readme_key), tables)


def _load_table(store: Store, date: str, table_prefix: str) -> Table:
    name = leaf(table_prefix)
    key = f"{table_prefix}/{MANIFEST}"
    try:
        raw = store.read_bytes(key)
    except FileNotFoundError:
        raise VerificationError(f"{key} is missing in {store.url}; rerun the export of table {name}.") from None
    manifest = parse_manifest(raw, f"{key} in {store.url}", name, date)
    if not manifest.files:
        raise VerificationError(f"{key} in {store.url} lists no files; rerun the export of table {name}.")
    problems = file_problems(manifest.files + side_files(manifest), stored_files(store, table_prefix), table_prefix,
                             allowed_extra=(MANIFEST, SUCCESS))
    if problems:
        raise VerificationError(f"{problems[0]} in {store.url}, against its manifest; rerun the export of table {name}.")
    shards = [Shard(name, f"{name}/{f.path}", f"{table_prefix}/{f.path}", f.bytes, f.sha256, f.rows) for f in manifest.files]
    shards += [Shard(name, f"{name}/{f.path}", f"{table_prefix}/{f.path}", f.bytes, f.sha256, f.rows, "changes")
               for f in feed_files(manifest)]
    return Table(name, public_manifest(raw), tuple(shards))


# What a published manifest keeps; every other field is blanked (an empty dict, or null), so the
# file still loads as a Manifest and a field added later stays private until it is listed here.
PUBLIC_FIELDS = ("table", "snapshot", "row_count", "files", "schema", "arrow_schema", "created_at", "timings",
                 "parquet", "filters", "chunking", "primary_key", "changes", "root_hash", "format")
BLANK_DICT_FIELDS = ("source", "source_snapshot")      # required fields of a Manifest: kept as {}
PUBLIC_TIMINGS = ("copy_seconds", "total_seconds", "rows_exported", "rows_reused", "rows_per_second",
                  "source_rows_counted", "count_check")
PUBLIC_CHUNKING = ("key", "key_type", "base_snapshot", "changed_chunks", "reused_files")  # not the boundaries: keys of any row, removed ones too
# The change feed: its files, counts, the release it follows, and the row groups of each rewritten file (row
# counts, which ``dataset-assets apply-changes`` needs to rebuild the files byte for byte from a download). (``layout``
# stays blanked: its shard ranges and row index hold keys of rows, removed ones too.)
PUBLIC_CHANGES = ("base_snapshot", "base_root_hash", "files", "inserted", "updated", "deleted", "row_groups")


def public_manifest(raw: bytes | str) -> bytes:
    """The manifest as published: files (rows, bytes, sha256), row count, schema, root hash, filters,
    parquet settings and timings; the source's host, port, user and database, the
    Postgres snapshot, the change signal, the cluster and relation identity, the chunks (boundaries, fingerprints)
    and the clustered layout (shard ranges, row index) blanked; the change feed (``changes``: its files, counts, row groups and
    the release it follows) kept. The root hash covers only the files, so it stays valid."""
    d = json.loads(raw)
    out: dict = {}
    for key, value in d.items():
        if key in PUBLIC_FIELDS:
            out[key] = value
        elif key in BLANK_DICT_FIELDS:
            out[key] = {}
        else:
            out[key] = None
    if isinstance(out.get("timings"), dict):
        out["timings"] = {k: v for k, v in out["timings"].items() if k in PUBLIC_TIMINGS}
    if isinstance(out.get("chunking"), dict):
        out["chunking"] = {k: v for k, v in out["chunking"].items() if k in PUBLIC_CHUNKING}
    if isinstance(out.get("changes"), dict):
        out["changes"] = {k: v for k, v in out["changes"].items() if k in PUBLIC_CHANGES}
    return (json.dumps(out, indent=2, sort_keys=False) + "\n").encode()


# --- the Hub's limits -------------------------------------------------------------------------------------------
GB = 1000**3


@dataclass(frozen=True)
class HubLimits:
    """What one release may hold so the Hub and its dataset viewer take it (see ``../shared/notes/hugging-face-hub.md``).

    * ``files_per_commit``: files one commit adds or replaces. The Hub advises 50-100 per commit; ``create_commit``
      does not split (only ``upload_folder``'s pipeline does, 20-1000 files per commit, adapting to the server's
      commit timeout), and a release is one atomic commit, so it is refused above this. The default is 5,000
      (``DATASET_ASSETS_HUB_FILES_PER_COMMIT``), not 100: incremental tables write one shard per key chunk
      (1,000 rows by default), so a first release of a 1M-row table sends about 1,000 files; fewer, larger
      files need the byte-sized shards of the refresh issue.
    * ``entries_per_folder``: files and subfolders directly in one folder of the repo after the commit (< 10k).
    * ``files_per_repo``: files in the repo after the commit (< 100k).
    * ``file_bytes``: one file's size (the Hub advises < 200 GB, 500 GB is the hard limit).
    * ``row_group_bytes``: uncompressed bytes of one parquet row group (the footer's ``total_byte_size``, the
      number the dataset viewer compares with 300,000,000: above it the viewer refuses the file).
    """

    files_per_commit: int = field(default_factory=lambda: env_int("DATASET_ASSETS_HUB_FILES_PER_COMMIT", 5_000, minimum=1))
    entries_per_folder: int = 10_000
    files_per_repo: int = 100_000
    file_bytes: int = 200 * GB
    row_group_bytes: int = 300_000_000


DEFAULT_LIMITS = HubLimits()

_FEWER_FILES = ("export the date again with fewer files (a larger chunk_rows in tables.yaml for an incremental table, "
                "larger shards with --shard-mib for a full one) or publish fewer tables, then publish")
_SMALLER_FILES = "export the date again with smaller shards (--shard-mib), then publish"


def commit_limit_problem(repo_id: str, date: str, sent: list[str], tree_after: set[str] | list[str],
                         limits: HubLimits = DEFAULT_LIMITS) -> str | None:
    """The sentence refusing a commit that sends the files ``sent`` and leaves the repo holding ``tree_after``
    (every file path), or None when it fits ``limits``."""
    if len(sent) > limits.files_per_commit:
        return (f"Snapshot {date} would send {len(sent)} files to {repo_id} in one commit, more than the "
                f"{limits.files_per_commit} files per commit the Hub takes reliably, so nothing was published; "
                f"{_FEWER_FILES}.")
    if len(tree_after) > limits.files_per_repo:
        return (f"After snapshot {date}, {repo_id} would hold {len(tree_after)} files, more than the Hub's "
                f"{limits.files_per_repo} files per repository, so nothing was published; {_FEWER_FILES}.")
    entries: dict[str, set[str]] = {}
    for path in tree_after:
        parts = path.split("/")
        for depth in range(len(parts)):
            entries.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
    for folder, names in sorted(entries.items()):
        if len(names) > limits.entries_per_folder:
            where = f"folder {folder}/" if folder else "the top folder"
            return (f"After snapshot {date}, {where} of {repo_id} would hold {len(names)} files and folders, more "
                    f"than the Hub's {limits.entries_per_folder} per folder, so nothing was published; "
                    f"{_FEWER_FILES}.")
    return None


def file_limit_problem(repo_id: str, date: str, shards: list[Shard], limits: HubLimits = DEFAULT_LIMITS) -> str | None:
    """The sentence refusing a shard larger than the Hub's file size limit (sizes from the manifests), or None."""
    for s in shards:
        if s.size > limits.file_bytes:
            return (f"{s.repo_path} of snapshot {date} has {s.size} bytes, more than the Hub's file size limit of "
                    f"{limits.file_bytes} bytes, so nothing was published to {repo_id}; {_SMALLER_FILES}.")
    return None


def row_group_problem(path: str, metadata, date: str, limits: HubLimits = DEFAULT_LIMITS) -> str | None:
    """The sentence refusing a parquet file (its footer's ``metadata``, a :class:`pyarrow.parquet.FileMetaData`)
    with a row group of more than ``limits.row_group_bytes`` uncompressed bytes, or None."""
    for i in range(metadata.num_row_groups):
        rg = metadata.row_group(i)
        if rg.total_byte_size > limits.row_group_bytes:
            return (f"Row group {i} of {path} (snapshot {date}) holds {rg.total_byte_size} uncompressed bytes "
                    f"({rg.num_rows} rows), more than the {limits.row_group_bytes} per row group the Hub's dataset viewer "
                    f"reads, "
                    f"so nothing was published; export the date again with smaller row groups (row_group_mib of "
                    f"the export settings), then publish.")
    return None
