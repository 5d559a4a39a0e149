"""Helpers for tests/integration/test_refresh.py (layout clustered, export/refresh.py).

Everything here reads what a test can see from outside the engine: the released parquet files
listed in a manifest, the manifest itself, the change feed, and the source database. Nothing
here imports the engine's internals (sort keys, hashes), so the tests check it independently.

Row comparisons are NaN-aware: two values are equal when both are null, both are NaN, or they
are equal (floats: the same bits, so -0.0 differs from 0.0 as it does for the engine's hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataset_assets.export.run import ExportOptions, export_snapshot
from dataset_assets.storage.manifest import Manifest, load_manifest, sha256_file

TABLE = "image"
KEY = "identifier"
CLUSTER = "provider"
VOLATILE = ("updated_on", "last_synced_with_source")
FILE = "__file"          # the release file a row was read from (added by :func:`release`)
WORKERS = 2
SHARD_BYTES = 1 << 20  # the smallest the configuration allows

CONFIG = f"""
tables:
  {TABLE}:
    primary_key: {KEY}
    tombstone_table: deleted_{TABLE}
    layout: clustered
    cluster_by: [{CLUSTER}]
    shard_bytes: {SHARD_BYTES}
    volatile_columns: [{", ".join(VOLATILE)}]
"""

# rows a release keeps: the engine's filters (source/plan.py build_filters), spelled out here
RELEASED = (f"i.removed_from_source IS NOT TRUE AND NOT EXISTS "
            f"(SELECT 1 FROM deleted_{TABLE} d WHERE d.{KEY} = i.{KEY})")


def write_config(path: Path) -> Path:
    path.write_text(CONFIG)
    return path


# ---------------------------------------------------------------------------------------------
# Source database
# ---------------------------------------------------------------------------------------------


def sql(uri: str, *statements: str, params=None) -> list[int]:
    """Run ``statements`` in one transaction; their row counts."""
    out = []
    with psycopg.connect(uri) as conn:
        for s in statements:
            out.append(conn.execute(s, params).rowcount)
    return out


def autocommit(uri: str, *statements: str) -> None:
    """Statements that cannot run in a transaction (VACUUM FULL)."""
    with psycopg.connect(uri, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def query(uri: str, statement: str, params=None) -> list[tuple]:
    with psycopg.connect(uri) as conn:
        return conn.execute(statement, params).fetchall()


def keys(uri: str, where: str, limit: int | None = None, order: str = f"md5(i.{KEY}::text)") -> list[str]:
    """Identifiers (text) of rows of the table matching ``where`` (alias ``i``), in a stable pseudo-random order."""
    lim = f" LIMIT {int(limit)}" if limit is not None else ""
    return [r[0] for r in query(uri, f"SELECT i.{KEY}::text FROM {TABLE} i WHERE {where} ORDER BY {order}{lim}")]


def released_count(uri: str) -> int:
    return query(uri, f"SELECT count(*) FROM {TABLE} i WHERE {RELEASED}")[0][0]


def table_count(uri: str) -> int:
    return query(uri, f"SELECT count(*) FROM {TABLE}")[0][0]


def rebuild_and_swap(uri: str) -> None:
    """Rebuild the table as a new one (another oid, every row rewritten) and swap it in by rename."""
    sql(uri,
        f"CREATE TABLE {TABLE}_rebuilt (LIKE {TABLE} INCLUDING ALL)",
        f"INSERT INTO {TABLE}_rebuilt SELECT * FROM {TABLE} ORDER BY {KEY}",
        f"ALTER TABLE {TABLE} RENAME TO {TABLE}_old",
        f"ALTER TABLE {TABLE}_rebuilt RENAME TO {TABLE}",
        f"DROP TABLE {TABLE}_old")
    autocommit(uri, f"ANALYZE {TABLE}")


def tombstone(uri: str, ids: list[str], delete: bool = False) -> None:
    """Copy rows ``ids`` into the tombstone table (as upstream does); ``delete``: and delete them from the table."""
    stmts = [f"INSERT INTO deleted_{TABLE} SELECT i.*, now(), 'test' FROM {TABLE} i "
             f"WHERE i.{KEY} = ANY(%s::uuid[]) ON CONFLICT DO NOTHING"]
    if delete:
        stmts.append(f"DELETE FROM {TABLE} WHERE {KEY} = ANY(%s::uuid[])")
    with psycopg.connect(uri) as conn:
        for s in stmts:
            conn.execute(s, (ids,))


# ---------------------------------------------------------------------------------------------
# Releases
# ---------------------------------------------------------------------------------------------


def prefix(date: str) -> str:
    return f"snapshots/{date}/{TABLE}"


def manifest(store, date: str) -> Manifest:
    return load_manifest(store, prefix(date))


def release(store, date: str) -> tuple[pa.Table, Manifest]:
    """The released rows of ``date`` (every file the manifest lists, in its order), sorted by key,
    with the file each row came from in column ``FILE``."""
    m = manifest(store, date)
    parts = []
    for f in m.files:
        t = pq.read_table(store.local_path(f"{prefix(date)}/{f.path}"))
        parts.append(t.append_column(FILE, pa.array([f.path] * t.num_rows, pa.string())))
    t = pa.concat_tables(parts) if parts else None
    assert t is not None, f"{date}: the manifest lists no file"
    return t.sort_by(KEY), m


def shard_tables(store, date: str, m: Manifest) -> dict[str, pa.Table]:
    return {f.path: pq.read_table(store.local_path(f"{prefix(date)}/{f.path}")) for f in m.files}


def feed(store, date: str, m: Manifest) -> pa.Table:
    files = (m.changes or {}).get("files") or []
    assert files, f"{date}: manifest.changes lists no feed file"
    return pa.concat_tables([pq.read_table(store.local_path(f"{prefix(date)}/{f['path']}")) for f in files])


def export_pair(uri: str, date: str, store, full_store, **options) -> tuple[Manifest, Manifest]:
    """A refresh (default options, or ``options``) of ``date`` into ``store``, then, with no write
    in between, a full export of the same data into ``full_store``."""
    [r] = export_snapshot(uri, [TABLE], date, store, ExportOptions(workers=WORKERS, **options))
    [f] = export_snapshot(uri, [TABLE], date, full_store, ExportOptions(workers=WORKERS, incremental=False, **options))
    return r.manifest, f.manifest


def first_export(uri: str, date: str, store, **options) -> Manifest:
    [r] = export_snapshot(uri, [TABLE], date, store, ExportOptions(workers=WORKERS, **options))
    return r.manifest


# ---------------------------------------------------------------------------------------------
# Comparing rows
# ---------------------------------------------------------------------------------------------


def _arr(a) -> pa.Array:
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def equal_mask(a, b) -> np.ndarray:
    """Per position: both null, both NaN, or equal (floats by their bits)."""
    a, b = _arr(a), _arr(b)
    assert a.type == b.type, f"{a.type} != {b.type}"
    both_null = pc.and_(a.is_null(), b.is_null())
    if pa.types.is_floating(a.type):
        bits = {16: pa.int16(), 32: pa.int32(), 64: pa.int64()}[a.type.bit_width]
        same = pc.equal(a.view(bits), b.view(bits))
        same = pc.or_(pc.fill_null(same, False), pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    else:
        same = pc.fill_null(pc.equal(a, b), False)
    return pc.or_(both_null, same).to_numpy(zero_copy_only=False).astype(bool)


def row_equal_mask(a: pa.Table, b: pa.Table, columns) -> np.ndarray:
    out = np.ones(a.num_rows, dtype=bool)
    for c in columns:
        out &= equal_mask(a.column(c), b.column(c))
    return out


def data_columns(t: pa.Table) -> list[str]:
    return [c for c in t.column_names if c != FILE]


def differences(a: pa.Table, b: pa.Table, columns=None, what=("a", "b"), show: int = 3) -> list[str]:
    """How two tables of rows differ (both sorted by key), column by column; empty when equal."""
    cols = list(columns) if columns is not None else data_columns(a)
    ka, kb = _arr(a.column(KEY)).to_pylist(), _arr(b.column(KEY)).to_pylist()
    if ka != kb:
        sa, sb = set(ka), set(kb)
        return [f"{a.num_rows} vs {b.num_rows} rows; keys only in {what[0]}: {sorted(sa - sb)[:show]} "
                f"({len(sa - sb)}), only in {what[1]}: {sorted(sb - sa)[:show]} ({len(sb - sa)})"]
    out = []
    for c in cols:
        if c not in b.column_names:
            out.append(f"column {c} missing in {what[1]}")
            continue
        if a.schema.field(c).type != b.schema.field(c).type:
            out.append(f"column {c}: type {a.schema.field(c).type} vs {b.schema.field(c).type}")
            continue
        bad = np.flatnonzero(~equal_mask(a.column(c), b.column(c)))
        if len(bad):
            ex = [(ka[i], a.column(c)[int(i)].as_py(), b.column(c)[int(i)].as_py()) for i in bad[:show]]
            out.append(f"column {c}: {len(bad)} rows differ, e.g. (key, {what[0]}, {what[1]}) {ex}")
    return out


def non_volatile(t: pa.Table) -> list[str]:
    return [c for c in data_columns(t) if c not in VOLATILE]


def by_key(t: pa.Table, ks) -> pa.Table:
    return t.filter(pc.is_in(t.column(KEY), value_set=pa.array(sorted(ks), pa.string()))).sort_by(KEY)


@dataclass
class Diff:
    inserted: set       # keys in new, not in old
    deleted: set        # keys in old, not in new
    changed: set        # keys in both whose non-volatile columns differ
    unchanged: set      # keys in both whose non-volatile columns are equal


def release_diff(old: pa.Table, new: pa.Table) -> Diff:
    ko, kn = set(old.column(KEY).to_pylist()), set(new.column(KEY).to_pylist())
    both = ko & kn
    o, n = by_key(old, both), by_key(new, both)
    same = row_equal_mask(o, n, non_volatile(new))
    ks = o.column(KEY).to_pylist()
    return Diff(kn - ko, ko - kn, {k for k, s in zip(ks, same) if not s}, {k for k, s in zip(ks, same) if s})


def expected_refresh(previous: pa.Table, full: pa.Table) -> pa.Table:
    """What a refresh should release given the previous release and a full export of the same data:
    the full export's rows, except that a row whose non-volatile columns equal the previous
    release's row is that previous row (a change only in volatile columns is no change)."""
    d = release_diff(previous, full)
    cols = data_columns(full)
    keep_old = by_key(previous, d.unchanged).select(cols)
    take_new = full.filter(pc.invert(pc.is_in(full.column(KEY), value_set=pa.array(sorted(d.unchanged), pa.string())))).select(cols)
    return pa.concat_tables([keep_old, take_new]).sort_by(KEY)


def apply_feed(previous: pa.Table, changes: pa.Table) -> pa.Table:
    """The consumer's side, by key only: drop the deleted keys, upsert the inserted and updated rows."""
    cols = data_columns(previous)
    kind = changes.column("change")
    dels = changes.filter(pc.equal(kind, "delete")).column(KEY)
    ups = changes.filter(pc.invert(pc.equal(kind, "delete"))).select(cols).cast(previous.select(cols).schema)
    gone = pa.concat_arrays([_arr(dels), _arr(ups.column(KEY))]) if ups.num_rows or len(dels) else pa.array([], pa.string())
    kept = previous.select(cols).filter(pc.invert(pc.is_in(previous.column(KEY), value_set=gone)))
    return pa.concat_tables([kept, ups]).sort_by(KEY)


def sort_tuple(provider, key):
    """(provider, key) in the order the layout promises: nulls first, then bytewise (code points)."""
    return (provider is not None, provider or "", key)


def shard_files(m: Manifest) -> dict[str, int]:
    """Release file -> the shard (id) it belongs to: a shard is its main file and, once rows were
    appended to its range, a tail file (``layout.shards[*].path`` / ``.tail``)."""
    out = {}
    for s in m.layout["shards"]:
        for path in (s["path"], s.get("tail")):
            if path:
                out[path] = s["id"]
    return out


def shard_ranges(store, date: str, m: Manifest) -> list[tuple[int, tuple, tuple, int]]:
    """Per shard, in the layout's order: (id, smallest (provider, key), largest, rows), over its files."""
    tables = shard_tables(store, date, m)
    out = []
    for s in m.layout["shards"]:
        ts = sorted(sort_tuple(p, k) for path in (s["path"], s.get("tail")) if path
                    for p, k in zip(tables[path].column(CLUSTER).to_pylist(), tables[path].column(KEY).to_pylist()))
        out.append((s["id"], ts[0], ts[-1], len(ts)))
    return out


def origins(previous: Manifest, new: Manifest) -> dict[int, int]:
    """Shard id of ``new`` -> the shard of ``previous`` it comes from: the same id, or (a shard
    compacted or split under a new id) the previous shard whose range holds its lower bound.
    Lower bounds are compared as the opaque strings they are (they sort as the ranges do)."""
    prev = [(s["lower"], s["id"]) for s in previous.layout["shards"]]
    ids = {i for _, i in prev}
    out = {}
    for s in new.layout["shards"]:
        if s["id"] in ids:
            out[s["id"]] = s["id"]
        else:
            lower = s["lower"]
            out[s["id"]] = [i for lo, i in prev if lo is None or (lower is not None and lo <= lower)][-1]
    return out


sha256 = sha256_file  # the engine's own, as the manifests were made


# ---------------------------------------------------------------------------------------------
# The check every refresh gets
# ---------------------------------------------------------------------------------------------


@dataclass
class Checked:
    previous: pa.Table
    refreshed: pa.Table
    full: pa.Table
    manifest: Manifest
    stats: dict
    diff: Diff
    moved: set
    touched: set          # ids of the previous release's shards that had to change
    shard_of: dict        # key -> shard id (of the previous release's layout) in the refreshed release
    feed: pa.Table | None


def in_flight(m: Manifest) -> bool:
    """Whether a transaction was in progress when ``m``'s Postgres snapshot was taken (xmin < xmax)."""
    xmin, xmax, _ = (m.source_snapshot or {}).get("txid_snapshot", "0:0:").split(":")
    return int(xmin) < int(xmax)


def spurious_tombstone_fallback(stats: dict, base: Manifest) -> bool:
    """The refresh compared content because "tombstones were removed" while none was: tombstones
    committed while an older transaction was open (anywhere on the server) when the base was
    exported count as newer than the base (test_tombstones_added_while_a_transaction_is_open_keep_xmin)."""
    return stats["mode"] == "content" and "tombstones were removed" in (stats.get("why_content") or "") and in_flight(base)


def check_refresh(uri: str, store, full_store, base_date: str, date: str, mode: str | None,
                  check_feed: bool = True, tolerate_tombstone_window: bool = False, **options) -> Checked:
    """Refresh ``date`` on top of ``base_date`` in ``store``, full-export it into ``full_store``,
    and check everything a refresh promises:

    * the same rows as the full export, every non-volatile column equal (NaN = NaN);
    * volatile columns: the full export's, but for rows whose other columns did not change since
      the previous release, which keep the previous release's row;
    * the stats (inserted, updated, moved, deleted, shards rewritten/reused) equal what the two
      releases show; reused files are the previous ones byte for byte;
    * shards hold disjoint ascending (provider, key) ranges; the row index's sha256 and counts;
    * the change feed applied to the previous release gives this one, its counts those of the manifest.

    ``options``: ExportOptions of both exports (e.g. ``parquet``).
    ``tolerate_tombstone_window``: for tests that never delete a tombstone row, accept mode content
    instead of ``mode`` xmin when it is the engine's known spurious fallback
    (:func:`spurious_tombstone_fallback`, which another session on the test server can cause).
    """
    previous, pm = release(store, base_date)
    m, fm = export_pair(uri, date, store, full_store, **options)
    refreshed, _ = release(store, date)
    full, _ = release(full_store, date)
    stats = m.layout["refresh"]

    # 1. same rows as a full export, but for the volatile columns
    assert m.row_count == refreshed.num_rows == fm.row_count == full.num_rows, \
        (m.row_count, refreshed.num_rows, fm.row_count, full.num_rows)
    assert refreshed.select(data_columns(refreshed)).schema.equals(full.select(data_columns(full)).schema)
    problems = differences(refreshed, full, non_volatile(full), ("refresh", "full export"))
    assert not problems, f"refresh {date} differs from a full export: {problems}"
    # 2. volatile columns: a row unchanged but for them keeps the previous release's values
    expected = expected_refresh(previous, full)
    problems = differences(refreshed, expected, VOLATILE, ("refresh", "expected"))
    assert not problems, f"refresh {date}: volatile columns not as expected: {problems}"

    # 3. the stats. Shards are named by id (a shard's rows may be in its main file and its tail);
    # a shard rewritten under a new id (compacted, split) is named by the previous shard it replaces.
    d = release_diff(previous, refreshed)
    old_shard_of_file, new_shard_of_file = shard_files(pm), shard_files(m)
    origin = origins(pm, m)
    old_shard = {k: old_shard_of_file[f] for k, f in zip(previous.column(KEY).to_pylist(), previous.column(FILE).to_pylist())}
    new_shard = {k: origin[new_shard_of_file[f]] for k, f in zip(refreshed.column(KEY).to_pylist(), refreshed.column(FILE).to_pylist())}
    # a shard merged into a neighbour (it shrank): gone from the layout, no new shard stems from it,
    # and every row it still holds is in one neighbour now
    gone = {s["id"] for s in pm.layout["shards"]} - {s["id"] for s in m.layout["shards"]} - set(origin.values())
    taken: dict[int, set[int]] = {}
    for k, sid in old_shard.items():
        if sid in gone and k in new_shard:
            taken.setdefault(sid, set()).add(new_shard[k])
    assert all(len(v) == 1 for v in taken.values()), f"a merged shard's rows went to several shards: {taken}"
    merged = {sid: next(iter(v)) for sid, v in taken.items()}
    order = [s["id"] for s in pm.layout["shards"]]
    for sid, into in merged.items():
        assert abs(order.index(sid) - order.index(into)) == 1, f"shard {sid} merged into {into}, not a neighbour"
    moved = {k for k in d.changed if merged.get(old_shard[k], old_shard[k]) != new_shard[k]}
    # a changed row of a merged shard now in the shard that took it: moved by its new sort key, or
    # updated where it was (the releases cannot tell; the sum must hold)
    either = {k for k in d.changed - moved if old_shard[k] in merged}
    touched = {old_shard[k] for k in d.deleted | d.changed} | {new_shard[k] for k in d.inserted | d.changed} | set(merged.values())
    if mode is not None and not (tolerate_tombstone_window and mode == "xmin" and spurious_tombstone_fallback(stats, pm)):
        assert stats["mode"] == mode, (stats["mode"], stats.get("why_content"))
    got = {k: stats[k] for k in ("inserted", "updated", "moved", "deleted")}
    want = {"inserted": len(d.inserted), "updated": len(d.changed - moved), "moved": len(moved), "deleted": len(d.deleted)}
    if either and got["moved"] != want["moved"]:
        assert len(moved) <= got["moved"] <= len(moved | either) and got["updated"] + got["moved"] == len(d.changed), (got, want)
        want.update(moved=got["moved"], updated=got["updated"])
    assert got == want, f"refresh {date} stats {got}, the releases show {want}"
    assert stats["shards_rewritten"] == len(touched), (stats["shards_rewritten"], sorted(touched))
    assert stats.get("shards_merged", 0) == len(merged), (stats.get("shards_merged"), merged)
    # files: an untouched shard's files are all reused as they were; a file marked reused is the
    # previous file byte for byte; a file written anew belongs to a touched shard
    old_entries = {f.path: f for f in pm.files}
    new_entries = {f.path: f for f in m.files}
    for path, sid in old_shard_of_file.items():
        if sid not in touched:
            f = new_entries.get(path)
            assert f is not None and f.reused_from is not None, f"{path} of unchanged shard {sid} not reused"
    for f in m.files:
        if f.reused_from is not None:
            assert f.path in old_entries and f.sha256 == old_entries[f.path].sha256, f"{f.path} marked reused but not the same"
            assert sha256(store.local_path(f"{prefix(date)}/{f.path}")) == f.sha256
        else:
            assert origin[new_shard_of_file[f.path]] in touched, f"{f.path} written anew but its shard did not change"
    # NB: the engine counts reused *files* here (a touched shard's main file reused beside its new tail counts)
    assert stats["files_reused"] == sum(1 for f in m.files if f.reused_from is not None), stats

    # 4. layout: disjoint ascending shard ranges; the row index
    assert set(new_shard_of_file) == set(new_entries), "every file belongs to a shard"
    ranges = shard_ranges(store, date, m)
    for (s1, _, hi, _), (s2, lo, _, _) in zip(ranges, ranges[1:]):
        assert hi < lo, f"shards {s1} and {s2} overlap or are out of order: {hi} >= {lo}"
    idx = m.layout["index"]
    ipath = store.local_path(f"{prefix(date)}/{idx['path']}")
    assert sha256(ipath) == idx["sha256"]
    assert pq.read_metadata(ipath).num_rows == table_count(uri), "the row index holds every row of the table"

    # 5. the change feed
    ch = None
    if check_feed:
        ch = feed(store, date, m)
        kinds = ch.column("change").to_pylist()
        counts = {k: kinds.count(k) for k in ("insert", "update", "delete")}
        assert counts == {"insert": m.changes["inserted"], "update": m.changes["updated"], "delete": m.changes["deleted"]}, \
            (counts, m.changes)
        assert m.changes["base_snapshot"] == base_date and m.changes["base_root_hash"] == pm.root_hash
        of = {k: set(ch.filter(pc.equal(ch.column("change"), k)).column(KEY).to_pylist()) for k in ("insert", "update", "delete")}
        assert of["insert"] == d.inserted and of["delete"] == d.deleted, "the feed's inserts and deletes are what changed"
        # updates: every changed row; a file the refresh rebuilt (compacted, split, or a tail folded
        # into its shard) may list its unchanged rows too, as updates (the feed replays files)
        assert d.changed <= of["update"] <= d.changed | d.unchanged, (len(of["update"]), len(d.changed))
        applied = apply_feed(previous, ch)
        problems = differences(applied, refreshed.select(data_columns(refreshed)), what=("previous+feed", "refresh"))
        assert not problems, f"feed of {date} applied to {base_date} is not {date}: {problems}"
    return Checked(previous, refreshed, full, m, stats, d, moved, touched, new_shard, ch)
