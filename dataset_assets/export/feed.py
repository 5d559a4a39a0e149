"""Apply a table's change feed to its previous release: the consumer's side of a refresh.

A release of a table in layout clustered carries ``changes/changes-00000.parquet``: its changes
since the previous release (``manifest.changes``: ``base_snapshot``, ``base_root_hash``, the
feed's files, counts, and ``row_groups``: the row groups of each file the refresh wrote). Each
feed row is ``change`` (insert | update | delete), ``file`` (the release file the row belongs
to, or left), then the table's columns (a delete carries only the key).

Applying it to the previous release's files rebuilds the new release's files exactly::

    for each file of the new manifest:
        the previous file with the same name and sha256   -> kept as it is
        a previous file with the same name, changed       -> its rows in order, without the keys
            deleted or upserted into another file, the keys upserted into this file replaced in
            place, then this file's other upserted rows appended in feed order
        a file the previous release did not have          -> this file's feed rows, in feed order
      written with the manifest's writer settings in the recorded row groups; its sha256 checked
      (a changed file the feed appends no row to is spliced from the previous one as the refresh
      spliced it: ``refresh.splice_groups``, ``refresh.write_spliced``)
    the root hash over the files == the new manifest's root hash

so a consumer who follows the feed downloads what changed, not the table, and can prove the
result is the new release (the same pyarrow version writes the same bytes; ``parquet.pyarrow``
in the manifest names it). A consumer who only wants rows can upsert the insert and update rows
by key and drop the deleted keys.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dataset_assets.errors import UserError
from dataset_assets.export.shards import open_writer, options_from
from dataset_assets.storage.layout import MANIFEST
from dataset_assets.storage.manifest import FileEntry, Manifest, feed_files, parse_manifest, root_hash, sha256_file

CHANGE, FILE = "change", "file"


@dataclass
class ApplyReport:
    files_kept: int = 0
    files_rebuilt: int = 0
    rows: int = 0
    root_hash: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _manifest(path: Path, what: str) -> Manifest:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; give the {what} release's table folder (it holds {MANIFEST}).") from None
    return parse_manifest(raw, str(path))


def apply_changes(previous: Path, new_manifest: Path, feed_dir: Path, out: Path) -> ApplyReport:
    """Rebuild the release described by ``new_manifest`` into ``out`` from the previous release's
    table folder ``previous`` and the feed files under ``feed_dir`` (the new release's table
    folder, or any folder holding ``changes/...``). Checks every file's sha256 and the root hash."""
    old = _manifest(previous / MANIFEST, "previous")
    new = _manifest(new_manifest, "new")
    ch = new.changes
    if not ch:
        raise UserError(f"{new_manifest} has no change feed (a first export, or layout chunks); download the release whole.")
    if ch.get("base_root_hash") != old.root_hash:
        raise UserError(f"The feed of {new.table} {new.snapshot} applies to the release with root hash {ch.get('base_root_hash')} "
                        f"({ch.get('base_snapshot')}), but {previous} holds {old.root_hash} ({old.snapshot}); "
                        f"apply the feeds in order, starting from the release you have.")
    feeds = []
    for f in feed_files(new):  # validated: a malformed entry is one sentence, not a TypeError
        p = feed_dir / f.path
        if not p.exists():
            raise UserError(f"The change feed file {p} is missing; download {new.table}/{f.path} of {new.snapshot}.")
        if sha256_file(p) != f.sha256:
            raise UserError(f"{p} does not match the sha256 in {new_manifest}; download it again.")
        feeds.append(pq.read_table(p))
    feed = pa.concat_tables(feeds) if feeds else None
    try:
        options, dictionary, statistics = options_from(new.parquet)
    except (KeyError, TypeError, ValueError, UserError):
        raise UserError(f"{new_manifest} records no writer settings to rebuild its files with; download the release whole.") from None
    schema = new.arrow()
    key = new.primary_key
    out.mkdir(parents=True, exist_ok=True)
    report = ApplyReport()
    prev_files = {f.path: f for f in old.files}
    ops = pl.from_arrow(feed.select([CHANGE, FILE, key])) if feed is not None else pl.DataFrame(
        schema={CHANGE: pl.String, FILE: pl.String, key: pl.String})
    ops = ops.with_row_index("row")
    deleted = ops.filter(pl.col(CHANGE) == "delete").get_column(key)
    upserts = ops.filter(pl.col(CHANGE) != "delete")
    groups = (ch.get("row_groups") or {})
    for f in new.files:
        target = out / f.path
        before = prev_files.get(f.path)
        if before is not None and before.sha256 == f.sha256:
            shutil.copyfile(previous / f.path, target)
            report.files_kept += 1
        else:
            mine = upserts.filter(pl.col(FILE) == f.path)
            elsewhere = upserts.filter(pl.col(FILE) != f.path).get_column(key)
            if before is None or not _rebuilt_in_place(previous / f.path, target, feed, mine, deleted, elsewhere, key,
                                                        schema, options, dictionary, statistics):
                rows = _rebuild(previous / f.path if before is not None else None, feed, mine, deleted, elsewhere, key, schema)
                sizes = groups.get(f.path)
                if not sizes or sum(sizes) != rows.num_rows:
                    report.problems.append(f"{f.path}: the feed gives {rows.num_rows} rows, the manifest {f.rows}")
                    continue
                w = open_writer(target, schema, options, dictionary, statistics)
                try:
                    start = 0
                    for n in sizes:
                        piece = rows.slice(start, n)
                        w.write_table(piece, row_group_size=n)
                        start += n
                finally:
                    w.close()
            report.files_rebuilt += 1
        report.rows += f.rows
        got = sha256_file(target)
        if got != f.sha256:
            report.problems.append(f"{f.path}: rebuilt with sha256 {got}, the manifest says {f.sha256}")
    rebuilt = [FileEntry(path=f.path, rows=f.rows, bytes=(out / f.path).stat().st_size if (out / f.path).exists() else -1,
                         sha256=sha256_file(out / f.path) if (out / f.path).exists() else "") for f in new.files]
    report.root_hash = root_hash(rebuilt)
    if report.root_hash != new.root_hash:
        report.problems.append(f"root hash {report.root_hash} of the rebuilt files differs from the manifest's {new.root_hash}")
    else:
        shutil.copyfile(new_manifest, out / MANIFEST)
    return report


def _rebuilt_in_place(before: Path, target: Path, feed: pa.Table, mine: pl.DataFrame, deleted: pl.Series,
                      elsewhere: pl.Series, key: str, schema: pa.Schema, options, dictionary, statistics) -> bool:
    """A changed file that keeps its rows where they were (the feed appends none to it: its rows
    are updated in place or leave) rebuilt as the refresh wrote it: spliced from the previous file
    (``refresh.splice_groups``, ``refresh.write_spliced``), each row group with its own updated
    rows, only the changed columns encoded, a row group without changes copied undecoded. False
    (nothing written) when the file gains rows or the previous one is not in ``schema``."""
    from dataset_assets.export.refresh import row_group_of, splice_groups, write_spliced  # the engine's own; heavy to import

    with open(before, "rb") as raw, pq.ParquetFile(before) as pf:
        if not pf.schema_arrow.equals(schema):
            return False
        new_rows = feed.take(pa.array(mine.get_column("row").to_numpy())).select(schema.names).cast(schema) \
            if mine.height else schema.empty_table()
        in_group = row_group_of(pf, key, new_rows.column(key))  # each updated row's row group
        if (in_group < 0).any():
            return False  # rows appended: rebuilt from the rows (_rebuild)
        keys = pl.from_arrow(new_rows.column(key))

        def updates_of(i: int) -> tuple[pa.Table | None, pl.Series]:
            rows = np.flatnonzero(in_group == i)
            return (new_rows.take(pa.array(rows)), keys.gather(rows)) if len(rows) else (None, keys.clear())

        out_keys = pl.concat([deleted, elsewhere]).cast(keys.dtype)
        write_spliced(target, raw, splice_groups(pf, key, out_keys, updates_of, schema), schema, dictionary, statistics, options)
    return True


def _rebuild(before: Path | None, feed: pa.Table, mine: pl.DataFrame, deleted: pl.Series, elsewhere: pl.Series,
             key: str, schema: pa.Schema) -> pa.Table:
    """One changed file's rows in order (module docstring)."""
    new_rows = feed.take(pa.array(mine.get_column("row").to_numpy())).select(schema.names).cast(schema) \
        if mine.height else schema.empty_table()
    if before is None:
        return new_rows
    old = pq.read_table(before).select(schema.names).cast(schema)
    old_keys = pl.DataFrame({key: pl.from_arrow(old.column(key))}).with_row_index("i")
    mine_keys = pl.DataFrame({key: pl.from_arrow(new_rows.column(key))}).with_row_index("u")
    j = old_keys.join(mine_keys, on=key, how="left", maintain_order="left")
    j = j.filter(~pl.col(key).is_in(pl.concat([deleted.cast(j.schema[key]), elsewhere.cast(j.schema[key])]).implode())
                 | pl.col("u").is_not_null())
    take = j.select(pl.when(pl.col("u").is_null()).then(pl.col("i").cast(pl.Int64))
                    .otherwise(pl.col("u").cast(pl.Int64) + old.num_rows)).to_series().to_numpy()
    kept = pa.concat_tables([old, new_rows]).take(pa.array(take, pa.int64()))
    appended_mask = ~mine_keys.get_column(key).is_in(old_keys.get_column(key).implode())
    appended = new_rows.filter(pa.array(appended_mask.to_numpy())) if new_rows.num_rows else new_rows
    return pa.concat_tables([kept, appended]) if appended.num_rows else kept

