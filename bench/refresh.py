"""Refresh: what the next release costs after the catalogue's real kinds of change.

For each scenario, in ONE run, on a FRESH copy of the benchmark's ``image`` table (database
``bench_refresh``, made from the seeded template with CREATE DATABASE ... TEMPLATE, then
CHECKPOINT, autovacuum off on its tables):

1. base:    export date D1 into store A (default, incremental options)   -> the previous release
2. change:  the scenario's change, ANALYZE, then one untimed full read and a CHECKPOINT
3. full:    export D2 into store B with ExportOptions(incremental=False)  -> the reference (timed)
4. refresh: export D2 into store A with the default options (builds on D1) (timed)
5. compare: the refreshed release against the full export row for row; bytes a Hub push
            would send through Xet (hf_xet's local CAS)

Scenarios (bench/README.md, "Refresh"):

S1  append: 1% new rows for existing providers
S2  uniform: 1% of rows (uniform in the key space) get a new title or new tags
S3  re-ingestion: every row of the provider nearest 5% of the table gets updated_on /
    last_synced_with_source = now(); 10% of them a new title as well
S4  popularity: standardized_popularity and updated_on recomputed for every row of the
    provider nearest 10% of the table (--s4-share: another share; 0.37 picks flickr, the
    seeded table's biggest provider, as the catalogue's monthly refresh recomputes it)
S5  touch-only: updated_on = now() on 20% of rows, nothing else
S6a rewrite: VACUUM FULL image
S6b rewrite: the table rebuilt with the same rows and swapped in by rename
S7  removals: 0.1% of rows, half moved to deleted_image, half marked removed_from_source

Usage: python bench/refresh.py [--layout clustered|chunks] [--rows 1000000] [--scenarios S1,S7]
                               [--workers N] [--shard-bytes N] [--baseline-full] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dataset_assets  # noqa: E402,F401  first: it chooses Arrow's allocator, as in every process of ours (dataset_assets/allocator.py)
import run as bench  # noqa: E402  (the main benchmark: seeding, the embedded server, machine facts)

TABLE = "image"
COPY_DB = "bench_refresh"
DEFAULT_ROWS = 1_000_000
D1, D2 = "2026-01-01", "2026-01-02"
ROUNDS_FROM = "2025-10-01"  # --append-rounds: the first export, then one refresh a day (at most ~90 rounds before D2)
SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6a", "S6b", "S7")
TARGET_SHARDS = 100                      # production proportions: about 100 shards per table
VOLATILE = bench.VOLATILE
MB = 1e6


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- source-database CPU

class ServerCpu:
    """CPU seconds the embedded Postgres spent: the postmaster's own time, the time of its
    children it has reaped (``cutime + cstime`` of /proc/<postmaster>/stat) and the time of its
    live children (backends, parallel workers, checkpointer, ... : ``utime + stime`` of every
    /proc/<pid>/stat whose ppid is the postmaster). Backends exit when their connection closes
    and are then reaped into ``cutime``, so a reading taken ~0.3 s after the measured call holds
    all of its backends' time."""

    SETTLE_S = 0.3

    def __init__(self, data_dir: Path):
        self.pid = int((Path(data_dir) / "postmaster.pid").read_text().split("\n", 1)[0].strip())
        self.tick = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _fields(pid: int | str) -> list[str]:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces

    def seconds(self) -> float:
        f = self._fields(self.pid)  # f[i] is field i + 3 of proc(5)
        ticks = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime (14-17)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                c = self._fields(entry.name)
            except (OSError, ValueError):
                continue  # gone meanwhile
            if int(c[1]) == self.pid:  # field 4: ppid
                ticks += int(c[11]) + int(c[12])
        return ticks / self.tick

    def settle(self) -> None:
        time.sleep(self.SETTLE_S)


# --------------------------------------------------------------------------- the exports

def byte_counter():
    """A Progress that sums what the export reports reading (rows, Arrow bytes of the batches): its
    first stage, the read. (A clustered export reports later stages too, writing its shards from
    the spill or rewriting shards: counted as read from 3cd07b9 until 2026-12-03 10:55, they made a
    full export's "read" 1.99M rows of 1M, and the bytes-read ratios of those runs too small.)"""
    from dataset_assets.export.progress import Progress

    class ByteCounter(Progress):
        def __init__(self):
            self.rows = 0
            self.nbytes = 0
            self.stages = 0
            self._lock = threading.Lock()

        def start(self, label: str, total_rows: int | None) -> None:
            with self._lock:
                self.stages += 1

        def advance(self, rows: int, nbytes: int) -> None:
            with self._lock:
                if self.stages <= 1:
                    self.rows += rows
                    self.nbytes += nbytes

    return ByteCounter()


def reset_peak_rss() -> float | None:
    """Before an export: what the process holds is given back where it can be (garbage, Arrow's
    and malloc's free memory), then VmHWM is reset (Linux: 5 into /proc/self/clear_refs), so the
    peak read after the export is its own on top of what this process still holds (the RSS
    returned here: earlier releases compared in memory, the allocators' retained pages)."""
    import ctypes
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mib("VmRSS")


def _status_mib(field: str) -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((ln for ln in status.splitlines() if ln.startswith(field + ":")), None)
    return round(int(line.split()[1]) / 1024, 1) if line else None


def peak_rss_mib() -> float | None:
    return _status_mib("VmHWM")


ROW_GROUP_BYTES: int | None = None  # --row-group-mib: the writer's row groups (None: the engine's default)


def run_export(uri: str, date: str, store, workers: int, cpu: ServerCpu, verbose: bool, **options) -> dict:
    """One export of ``image``, timed in-process, with the server's CPU around it."""
    from dataset_assets.export.run import ExportOptions, export_snapshot

    progress = byte_counter()
    if ROW_GROUP_BYTES:
        from dataset_assets.export.shards import ParquetOptions

        options.setdefault("parquet", ParquetOptions(row_group_bytes=ROW_GROUP_BYTES))
    opts = ExportOptions(workers=workers, **options)
    cpu.settle()  # backends of earlier connections are reaped before the first reading
    c0 = cpu.seconds()
    start_rss = reset_peak_rss()  # the process's peak from here: this export's, on top of what the process holds
    t0 = time.perf_counter()
    [res] = export_snapshot(uri, [TABLE], date, store, opts, progress=progress,
                            log=(lambda m: log(f"      {m}")) if verbose else (lambda m: None))
    wall = time.perf_counter() - t0
    cpu.settle()
    server_cpu = cpu.seconds() - c0
    m = res.manifest
    rewritten = [f for f in m.files if f.reused_from is None]
    ch = m.chunking or {}
    return {
        "date": date, "wall_s": wall, "server_cpu_s": server_cpu, "rows": m.row_count, "peak_rss_mib": peak_rss_mib(), "start_rss_mib": start_rss,
        "read_rows": progress.rows, "read_bytes": progress.nbytes,
        "files": len(m.files), "bytes": m.total_bytes,
        "files_rewritten": len(rewritten), "bytes_rewritten": sum(f.bytes for f in rewritten),
        "base_snapshot": ch.get("base_snapshot"), "changed_chunks": ch.get("changed_chunks"),
        "chunks": len(ch.get("fingerprints") or {}) or None, "not_reused": ch.get("not_reused"),
        "timings": m.timings,
        "paths": [str(store.local_path(f"{res.prefix}/{f.path}")) for f in m.files],
    }


def fmt_export(label: str, r: dict) -> str:
    extra = ""
    if r.get("changed_chunks") is not None:
        extra = f", changed chunks {r['changed_chunks']}/{r['chunks']}"
    if r.get("not_reused"):
        extra += f", not reused: {r['not_reused']}"
    return (f"    {label:<8} {r['wall_s']:7.2f}s  server CPU {r['server_cpu_s']:6.2f}s  read {r['read_rows']:>9,} rows "
            f"{r['read_bytes'] / MB:8.1f} MB  files {r['files_rewritten']:>4}/{r['files']:<4} rewritten "
            f"{r['bytes_rewritten'] / MB:7.1f}/{r['bytes'] / MB:.1f} MB{extra}")


# --------------------------------------------------------------------------- table configuration

def image_settings() -> dict:
    """The image table's settings of the project's tables.yaml, as they are."""
    import yaml

    from dataset_assets.settings import PACKAGE_DIR

    raw = yaml.safe_load((Path(PACKAGE_DIR) / "tables.yaml").read_text(encoding="utf-8"))
    return dict(raw["tables"][TABLE])


def write_tables_yaml(path: Path, settings: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"tables": {TABLE: settings}}, sort_keys=False))
    return path


def use_tables(path: Path) -> None:
    """Point the engine at ``path``; it fails here, not mid-run, if it refuses a setting."""
    os.environ["DATASET_ASSETS_TABLES"] = str(path)
    from dataset_assets.tables import load_tables

    load_tables()


# --------------------------------------------------------------------------- the database copy

def fresh_copy(server: str, template: str) -> str:
    """``bench_refresh`` as a fresh copy of ``template``, checkpointed, autovacuum off."""
    from dataset_assets.local.embedded import drop_database

    drop_database(server, COPY_DB)
    with bench.connect_adbc(server) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{template}' AND pid <> pg_backend_pid()")
        cur.execute(f'CREATE DATABASE "{COPY_DB}" TEMPLATE "{template}"')
    uri = bench._with_db(server, COPY_DB)
    with bench.connect_adbc(uri) as conn, conn.cursor() as cur:
        for t in (TABLE, f"deleted_{TABLE}"):
            no_autovacuum(cur, t)
        cur.execute("CHECKPOINT")  # the copy's writes are flushed before anything is timed
    return uri


def no_autovacuum(cur, table: str) -> None:
    cur.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)")


def execute(uri: str, statements: list[str]) -> list[int]:
    """``statements`` in one transaction; the row count of each."""
    import psycopg

    out = []
    with psycopg.connect(uri) as conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)
            out.append(cur.rowcount)
    return out


def autocommit(uri: str, statements: list[str]) -> None:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def settle_after_change(uri: str) -> None:
    """ANALYZE, one full read (sets the changed rows' hint bits, prunes what it can) and a
    CHECKPOINT: neither timed export pays for the change's after-effects, and both start warm."""
    autocommit(uri, [f"ANALYZE {TABLE}", f"ANALYZE deleted_{TABLE}"])
    bench.warm_up(uri)
    autocommit(uri, ["CHECKPOINT"])


# --------------------------------------------------------------------------- the scenarios

def pick(tag: str, fraction: float, alias: str = "") -> str:
    """A deterministic predicate true for about ``fraction`` of the rows: md5 of the key."""
    key = f"{alias}identifier::text"
    return f"(('x' || substr(md5('{tag}:' || {key}), 1, 8))::bit(32)::bigint < {int(fraction * 2**32)})"


def half(tag: str) -> str:
    """A deterministic predicate true for about half of the rows."""
    return f"(substr(md5('{tag}:' || identifier::text), 1, 1) < '8')"


def provider_shares(uri: str) -> list[tuple[str, int, float]]:
    with bench.connect_adbc(uri) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT provider, count(*) FROM {TABLE} WHERE provider IS NOT NULL GROUP BY provider ORDER BY 2 DESC")
        counts = cur.fetchall()
        cur.execute(f"SELECT count(*) FROM {TABLE}")
        total = cur.fetchone()[0]
    return [(p, int(n), n / total) for p, n in counts]


def nearest_provider(shares, target: float) -> tuple[str, int, float]:
    return min(shares, key=lambda s: (abs(s[2] - target), s[0]))


def quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


S4_SHARE = 0.10  # S4's provider: the one nearest this share of the table (--s4-share)


def change(uri: str, scenario: str) -> dict:
    """Apply ``scenario``'s change; returns what was changed (rows per kind, provider and share)."""
    if scenario == "S1":
        from dataset_assets.local.seed import change_rows

        # new rows generated by the seeder (providers drawn from the same distribution), keys
        # uniform over the key space; deterministic for a given table and seed
        done = change_rows(uri, TABLE, fraction=0.01, seed=101, mode="random", kinds=("insert",))
        return {"inserted": done["insert"], "what": f"{done['insert']:,} rows inserted"}
    if scenario == "S2":
        sel = pick("S2", 0.01)
        title = half("S2-title")
        [n] = execute(uri, [
            f"UPDATE {TABLE} SET "
            f"title = CASE WHEN {title} THEN coalesce(nullif(title, ''), 'Untitled') || ' (rev ' || substr(md5('S2-rev:' || identifier::text), 1, 6) || ')' ELSE title END, "
            f"tags = CASE WHEN {title} THEN tags ELSE coalesce(tags, '[]'::jsonb) || jsonb_build_array(jsonb_build_object('name', 'revised', 'provider', coalesce(provider, 'unknown'))) END, "
            f"updated_on = now(), last_synced_with_source = now() WHERE {sel}"])
        return {"updated": n, "what": f"{n:,} rows: new title or tags (about half each), updated_on bumped"}
    if scenario == "S3":
        prov, count, share = nearest_provider(provider_shares(uri), 0.05)
        [n, t] = execute(uri, [
            f"UPDATE {TABLE} SET updated_on = now(), last_synced_with_source = now() "
            f"WHERE provider = {quote(prov)} AND NOT {pick('S3', 0.10)}",
            f"UPDATE {TABLE} SET updated_on = now(), last_synced_with_source = now(), "
            f"title = coalesce(nullif(title, ''), 'Untitled') || ' (re-ingested)' "
            f"WHERE provider = {quote(prov)} AND {pick('S3', 0.10)}"])
        return {"provider": prov, "provider_rows": count, "provider_share": share, "bumped": n + t, "content_changed": t,
                "what": f"provider {prov} ({share:.1%} of rows): {n + t:,} rows bumped, {t:,} of them with a new title"}
    if scenario == "S4":
        prov, count, share = nearest_provider(provider_shares(uri), S4_SHARE)
        [n] = execute(uri, [
            f"UPDATE {TABLE} SET standardized_popularity = standardized_popularity * 0.97 + 0.03 * "
            f"(('x' || substr(md5('S4:' || identifier::text), 1, 8))::bit(32)::bigint / 4294967296.0), updated_on = now() "
            f"WHERE provider = {quote(prov)}"])
        return {"provider": prov, "provider_rows": count, "provider_share": share, "updated": n,
                "what": f"provider {prov} ({share:.1%} of rows): {n:,} rows, standardized_popularity and updated_on"}
    if scenario == "S5":
        [n] = execute(uri, [f"UPDATE {TABLE} SET updated_on = now() WHERE {pick('S5', 0.20)}"])
        return {"updated": n, "what": f"{n:,} rows: updated_on bumped, nothing else"}
    if scenario == "S6a":
        autocommit(uri, [f"VACUUM FULL {TABLE}"])
        return {"what": f"VACUUM FULL {TABLE}"}
    if scenario == "S6b":
        execute(uri, [
            f"CREATE TABLE {TABLE}_new (LIKE {TABLE} INCLUDING ALL)",
            f"ALTER TABLE {TABLE}_new SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)",
            f"INSERT INTO {TABLE}_new SELECT * FROM {TABLE}",
        ])
        execute(uri, [  # the swap, in one transaction
            f"ALTER TABLE {TABLE} RENAME TO {TABLE}_old",
            f"ALTER TABLE {TABLE}_new RENAME TO {TABLE}",
            f"DROP TABLE {TABLE}_old",
        ])
        return {"what": f"{TABLE} rebuilt as {TABLE}_new (same rows) and swapped in by rename"}
    if scenario == "S7":
        from dataset_assets.local.seed import DELETED_REASONS

        with bench.connect_adbc(uri) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'deleted_{TABLE}' "
                        f"AND column_name IN (SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                        f"AND table_name = '{TABLE}') ORDER BY ordinal_position")
            cols = [r[0] for r in cur.fetchall()]
        sel = pick("S7", 0.001)
        moved = f"{sel} AND {half('S7-tomb')}"
        col_list = ", ".join(cols)
        [ins, dele, rem] = execute(uri, [
            f"INSERT INTO deleted_{TABLE} ({col_list}, deleted_on, deleted_reason) "
            f"SELECT {col_list}, now(), {quote(DELETED_REASONS[0])} FROM {TABLE} "
            f"WHERE {moved} AND NOT EXISTS (SELECT 1 FROM deleted_{TABLE} d WHERE d.identifier = {TABLE}.identifier)",
            f"DELETE FROM {TABLE} WHERE {moved}",
            f"UPDATE {TABLE} SET removed_from_source = true, updated_on = now() WHERE {sel} AND NOT {half('S7-tomb')}",
        ])
        return {"tombstoned": dele, "tombstone_rows_inserted": ins, "marked_removed": rem,
                "what": f"{dele:,} rows moved to deleted_{TABLE} ({ins:,} new tombstones), {rem:,} marked removed_from_source"}
    raise ValueError(scenario)


# --------------------------------------------------------------------------- comparing releases

def read_column(paths: list[str], name: str):
    """One column of a release (every file, in order) as one array: the releases are compared a
    column at a time (5M rows read whole, both releases and their sorted copies, took 17 GB)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = [pq.read_table(p, columns=[name]).column(0) for p in paths]
    return pa.chunked_array([c for col in parts for c in col.chunks], type=parts[0].type).combine_chunks()


def key_order(paths: list[str], key: str):
    """The key column of a release, and the positions that sort it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    k = read_column(paths, key)
    storage = k.storage if isinstance(k.type, pa.ExtensionType) else k
    order = pc.sort_indices(storage)
    return k.take(order), order


def _key_text(v) -> str:
    if isinstance(v, (bytes, bytearray)) and len(v) == 16:
        import uuid

        return str(uuid.UUID(bytes=bytes(v)))
    return str(v)


def _same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _column_equal(a, b) -> bool:
    """Equal values and null positions, NaN equal to NaN (plain Arrow equality says NaN != NaN)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_floating(a.type) and pa.types.is_floating(b.type):
        na, nb = pc.fill_null(pc.is_nan(a), False), pc.fill_null(pc.is_nan(b), False)
        if not na.equals(nb):
            return False
        zero = pa.scalar(0.0, a.type)
        return pc.if_else(na, zero, a).equals(pc.if_else(nb, zero, b))
    return a.equals(b)


def compare_releases(full_paths: list[str], refresh_paths: list[str], key: str, volatile=()) -> dict:
    """Do the two releases hold the same rows? Both sorted by the key, then schema, then every
    column (values, nulls, NaN positions), a column at a time. The first differing key when not,
    and whether only ``volatile`` columns differ."""
    import pyarrow.parquet as pq

    if not full_paths or not refresh_paths:
        return {"equal": not full_paths and not refresh_paths, "why": "a release has no files"}
    sa, sb = pq.read_schema(full_paths[0]), pq.read_schema(refresh_paths[0])
    if not sa.equals(sb, check_metadata=False):
        diff = [f"{fa} / {fb}" for fa, fb in zip(sa, sb) if not fa.equals(fb)]
        return {"equal": False, "why": f"schemas differ: {'; '.join(diff) or 'column count'}"}
    (keys_a, order_a), (keys_b, order_b) = key_order(full_paths, key), key_order(refresh_paths, key)
    ka, kb = keys_a.to_pylist(), keys_b.to_pylist()
    if ka != kb:
        i = next((i for i, (x, y) in enumerate(zip(ka, kb)) if x != y), min(len(ka), len(kb)))
        first = min(v for v in (ka[i] if i < len(ka) else None, kb[i] if i < len(kb) else None) if v is not None)
        return {"equal": False, "why": f"keys differ ({len(ka):,} rows in the full export, {len(kb):,} in the refresh)",
                "first_key": _key_text(first)}
    first_row, cols, kept = None, [], 0
    for name in sa.names:
        ca, cb = read_column(full_paths, name).take(order_a), read_column(refresh_paths, name).take(order_b)
        if _column_equal(ca, cb):
            continue
        cols.append(name)
        va, vb = ca.to_pylist(), cb.to_pylist()
        differ = [i for i, (x, y) in enumerate(zip(va, vb)) if not _same_value(x, y)]
        first_row = differ[0] if first_row is None else min(first_row, differ[0])
        kept = max(kept, len(differ))
    if cols:
        if bool(volatile) and set(cols) <= set(volatile):
            # the refresh keeps a row's previous version when only its volatile columns changed (README,
            # "Refresh"): equal on every other column is the contract; say how many rows kept theirs
            return {"equal": True, "rows": len(ka), "volatile_kept": kept, "columns": cols}
        return {"equal": False, "why": f"values differ in {', '.join(cols)}",
                "only_volatile_differ": False, "columns": cols, "first_key": _key_text(ka[first_row])}
    if sa.metadata != sb.metadata:
        return {"equal": True, "rows": len(ka), "note": "schema metadata differs"}
    return {"equal": True, "rows": len(ka)}


# --------------------------------------------------------------------------- Xet

def xet_sent(cas_dir: Path, before: list[str] | None, after: list[str]) -> dict:
    """Upload ``before`` (if any) in one commit, then ``after`` in a second commit to hf_xet's
    local CAS in ``cas_dir``; the second commit's dedup metrics."""
    import hf_xet

    cas_dir.mkdir(parents=True, exist_ok=True)
    session = hf_xet.XetSession()
    endpoint = f"local://{cas_dir}"

    def commit(paths):
        c = session.new_upload_commit(endpoint=endpoint)
        for p in paths:
            c.start_upload_file(p, sha256=hf_xet.SKIP_SHA256)
        return c.wait_to_finish().dedup_metrics

    if before:
        commit(before)
    t0 = time.perf_counter()
    m = commit(after)
    return {"sent_bytes": m.xorb_bytes_uploaded + m.shard_bytes_uploaded, "new_bytes": m.new_bytes,
            "xorb_bytes_uploaded": m.xorb_bytes_uploaded, "shard_bytes_uploaded": m.shard_bytes_uploaded,
            "deduped_bytes": m.deduped_bytes, "total_bytes": m.total_bytes, "new_chunks": m.new_chunks,
            "total_chunks": m.total_chunks, "upload_s": round(time.perf_counter() - t0, 2)}


# --------------------------------------------------------------------------- one scenario

def ratio(a, b):
    return None if a is None or not b else a / b


def run_scenario(name: str, server: str, template: str, cfg: Path, args, cpu: ServerCpu, key: str, volatile=()) -> dict:
    log(f"\n{name}: fresh copy of {template}")
    uri = fresh_copy(server, template)
    bench.warm_up(uri)
    os.environ["DATASET_ASSETS_TABLES"] = str(cfg)
    from dataset_assets.storage.stores import LocalStore

    work = Path(tempfile.mkdtemp(prefix=f"refresh-{name}-", dir=bench.WORK_DIR))
    try:
        store_a, store_b = LocalStore(work / "A"), LocalStore(work / "B")
        base = run_export(uri, D1 if not args.append_rounds else ROUNDS_FROM, store_a, args.workers, cpu, args.verbose)
        log(fmt_export("base", base))
        for j in range(args.append_rounds):  # steady state: the tails fill with each day's appended rows
            what = change(uri, "S1")
            settle_after_change(uri)
            day = run_export(uri, (dt.date.fromisoformat(ROUNDS_FROM) + dt.timedelta(days=j + 1)).isoformat(),
                             store_a, args.workers, cpu, args.verbose)
            log(fmt_export(f"round {j + 1}", day) + f"  ({what['what']})")
            base["paths"] = day["paths"]  # the previous release, for the Xet comparison
        t0 = time.perf_counter()
        what = change(uri, name)
        change_s = time.perf_counter() - t0
        log(f"    change   {what['what']} ({change_s:.1f}s)")
        settle_after_change(uri)
        full = run_export(uri, D2, store_b, args.workers, cpu, args.verbose, incremental=False)
        log(fmt_export("full", full))
        refresh = run_export(uri, D2, store_a, args.workers, cpu, args.verbose)
        log(fmt_export("refresh", refresh))
        same = compare_releases(full["paths"], refresh["paths"], key, volatile)
        log(f"    equal    {'yes' if same['equal'] else 'NO'}"
            + ("" if same["equal"] else f": {same['why']}" + (f"; first differing key {same['first_key']}" if same.get("first_key") else "")))
        xet_full = xet_sent(work / "cas-full", None, full["paths"])
        xet_refresh = xet_sent(work / "cas-refresh", base["paths"], refresh["paths"])
        changed_col = changed_column_bytes(name, base["paths"], refresh["paths"])
        log(f"    xet      full export {xet_full['sent_bytes'] / MB:.1f} MB sent, refresh {xet_refresh['sent_bytes'] / MB:.1f} MB "
            f"(new bytes {xet_refresh['new_bytes'] / MB:.1f} MB of {xet_refresh['total_bytes'] / MB:.1f} MB)")
    finally:
        if args.keep:
            log(f"    kept     {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for r in (base, full, refresh):
        r.pop("paths")
    ratios = {
        "wall": ratio(refresh["wall_s"], full["wall_s"]),
        "server_cpu": ratio(refresh["server_cpu_s"], full["server_cpu_s"]),
        "bytes_read": ratio(refresh["read_bytes"], full["read_bytes"]),
        "bytes_rewritten": ratio(refresh["bytes_rewritten"], full["bytes_rewritten"]),
        "xet_sent": ratio(xet_refresh["sent_bytes"], xet_full["sent_bytes"]),
    }
    if changed_col:
        ratios["xet_vs_changed_column"] = ratio(xet_refresh["sent_bytes"], changed_col["bytes"])
        log(f"    column   {changed_col['column']}: {changed_col['bytes'] / MB:.2f} MB compressed in the rewritten files; "
            f"Xet sent {ratios['xet_vs_changed_column']:.2f}x that (target <= 3)")
    return {"scenario": name, "change": what, "change_s": round(change_s, 2), "base": base, "full": full,
            "refresh": refresh, "xet_full": xet_full, "xet_refresh": xet_refresh, "equal": same, "ratios": ratios,
            "changed_column": changed_col}


# S4's target is relative to the changed column: its compressed bytes in the files the refresh wrote
CHANGED_COLUMN = {"S4": "standardized_popularity"}


def changed_column_bytes(name: str, before: list[str], after: list[str]) -> dict | None:
    """The compressed bytes of the scenario's changed column in the refresh's new files (files
    linked from the previous release share its inodes and are left out)."""
    column = CHANGED_COLUMN.get(name)
    if column is None:
        return None
    import pyarrow.parquet as pq

    old = {os.stat(p).st_ino for p in before}
    total = 0
    for p in after:
        if os.stat(p).st_ino in old:
            continue
        md = pq.read_metadata(p)
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                if rg.column(c).path_in_schema == column:
                    total += rg.column(c).total_compressed_size
    return {"column": column, "bytes": total}


# --------------------------------------------------------------------------- output

def fmt_rows(head: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|"]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i in (0, len(r) - 1) else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def f3(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def tables_text(results: list[dict], markdown: bool) -> str:
    ok = [r for r in results if "error" not in r]
    head = ["scenario", "wall", "source CPU", "bytes read", "bytes rewritten", "Xet bytes sent", "equal"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["scenario"], "FAILED", "", "", "", "", r["error"][:80]])
            continue
        q, e = r["ratios"], r["equal"]
        rows.append([r["scenario"], f3(q["wall"]), f3(q["server_cpu"]), f3(q["bytes_read"]), f3(q["bytes_rewritten"]),
                     f3(q["xet_sent"]), (f"yes ({', '.join(e['columns'])} kept on {e['volatile_kept']:,} rows)" if e.get("volatile_kept")
                                         else "yes") if e["equal"] else "NO (" + (f"only {', '.join(e['columns'])}; " if e.get("only_volatile_differ") else "")
                     + f"{e.get('first_key') or e['why']})"])
    part1 = fmt_rows(head, rows, markdown)
    head2 = ["scenario", "full s", "refresh s", "full CPU s", "refresh CPU s", "read MB full", "read MB refresh",
             "files rewritten", "MB rewritten", "Xet MB full", "Xet MB refresh", "peak RSS MiB full / refresh (at start)", "change"]
    rows2 = []
    for r in ok:
        f, s = r["full"], r["refresh"]
        rows2.append([r["scenario"], f"{f['wall_s']:.2f}", f"{s['wall_s']:.2f}", f"{f['server_cpu_s']:.2f}", f"{s['server_cpu_s']:.2f}",
                      f"{f['read_bytes'] / MB:.1f}", f"{s['read_bytes'] / MB:.1f}", f"{s['files_rewritten']}/{s['files']}",
                      f"{s['bytes_rewritten'] / MB:.1f}/{s['bytes'] / MB:.1f}", f"{r['xet_full']['sent_bytes'] / MB:.1f}",
                      f"{r['xet_refresh']['sent_bytes'] / MB:.1f}", f"{f.get('peak_rss_mib')} / {s.get('peak_rss_mib')} ({f.get('start_rss_mib')} / {s.get('start_rss_mib')})",
                      r["change"]["what"]])
    part2 = fmt_rows(head2, rows2, markdown) if rows2 else ""
    return ("Refresh / full export of the same run:\n" + part1 + "\n\nAbsolute:\n" + part2).rstrip()


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", choices=["clustered", "chunks"], default="clustered",
                   help="clustered: layout clustered by provider, ~100 shards, volatile columns (the new engine); "
                        "chunks: the table's settings as they are (default clustered)")
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"rows of the image table (default {DEFAULT_ROWS:,})")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)} (default all)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="export workers (default: cores)")
    p.add_argument("--shard-bytes", type=int, help="shard_bytes of the clustered layout (default: 1/100 of the parquet "
                                                    "bytes of a full export of the table, measured first)")
    p.add_argument("--baseline-full", action="store_true", help="also time one full export with layout chunks "
                                                                 "(the old mode) and compare the first export in --layout to it")
    p.add_argument("--markdown", action="store_true", help="also print the tables as markdown")
    p.add_argument("--s4-share", type=float, default=S4_SHARE, help=f"S4 changes the provider nearest this share of the "
                   f"table (default {S4_SHARE}; 0.37: flickr in the seeded table, its biggest provider)")
    p.add_argument("--reseed", action="store_true", help="rebuild the seeded table even if it holds --rows rows")
    p.add_argument("--shared-buffers", help="shared_buffers of the benchmark's embedded server (default: 25%% of RAM, as bench/run.py)")
    p.add_argument("--out", help="where to save the JSON results (default bench/results/refresh-<layout>-<timestamp>.json)")
    p.add_argument("--verbose", action="store_true", help="print the engine's log lines")
    p.add_argument("--row-group-mib", type=int, help="row groups of every export, in MiB of Arrow data "
                                                      "(default: the engine's, ParquetOptions.row_group_bytes)")
    p.add_argument("--append-rounds", type=int, default=0, metavar="K",
                   help="before each scenario's change, K rounds of S1's 1 %% append, each refreshed (dates before "
                        "the scenario's), so the previous release is a refresh whose tails hold rows, as in steady "
                        "state (default 0: the previous release is a first export)")
    p.add_argument("--keep", action="store_true", help="keep each scenario's stores (previous release, full export, "
                                                        "refresh) under .local/bench-tmp/ for inspection")
    args = p.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in args.scenarios if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s) {', '.join(bad)}; choose from {','.join(SCENARIOS)}")
    if args.rows < 1 or args.workers < 1:
        p.error("--rows and --workers must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    global ROW_GROUP_BYTES, S4_SHARE
    ROW_GROUP_BYTES = args.row_group_mib * (1 << 20) if args.row_group_mib else None
    S4_SHARE = args.s4_share
    bench.WORK_DIR.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HOME", str(bench.WORK_DIR / "hf-home"))  # hf_xet's logs stay under .local/
    from dataset_assets.errors import UserError
    from dataset_assets.local.embedded import drop_database, embedded_uri

    started = dt.datetime.now(dt.timezone.utc)
    # the seeded table is cached per size: 'bench' holds the default 1M rows (as for bench/run.py),
    # other sizes get their own template so a small run does not replace it
    template = "bench" if args.rows == DEFAULT_ROWS else f"bench_{args.rows}"
    src, owned = bench.resolve_source(None, template, args.shared_buffers)
    rows = bench.ensure_seeded(src, args.rows, args.reseed, owned)
    server = embedded_uri(bench.DEFAULT_DATA_DIR)
    cpu = ServerCpu(bench.DEFAULT_DATA_DIR)
    shared_buffers = bench.scalar(src, "SELECT current_setting('shared_buffers')")
    settings = image_settings()
    key = settings.get("primary_key", "identifier")
    chunks_cfg = write_tables_yaml(bench.WORK_DIR / "refresh-tables-chunks.yaml", settings)
    use_tables(chunks_cfg)
    info = bench.machine_info()

    baseline = None
    estimate = None
    if args.baseline_full or (args.layout == "clustered" and not args.shard_bytes):
        from dataset_assets.storage.stores import LocalStore

        log(f"\nfull export with layout chunks ({'the baseline, timed' if args.baseline_full else 'to size the shards'})")
        uri = fresh_copy(server, template)
        bench.warm_up(uri)
        work = Path(tempfile.mkdtemp(prefix="refresh-baseline-", dir=bench.WORK_DIR))
        try:
            baseline = run_export(uri, D1, LocalStore(work / "store"), args.workers, cpu, args.verbose, incremental=False)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        baseline.pop("paths")
        log(fmt_export("chunks", baseline))
        estimate = baseline["bytes"]

    shard_bytes = None
    if args.layout == "clustered":
        shard_bytes = args.shard_bytes or max(1 << 20, estimate // TARGET_SHARDS)
        how = "--shard-bytes" if args.shard_bytes else (f"1/{TARGET_SHARDS} of the {estimate / MB:.1f} MB of the full export"
                                                        + (", raised to the 1 MiB minimum" if shard_bytes == 1 << 20 else ""))
        cfg_settings = dict(settings, layout="clustered", cluster_by=["provider"], shard_bytes=int(shard_bytes),
                            volatile_columns=VOLATILE)
        cfg = write_tables_yaml(bench.WORK_DIR / "refresh-tables-clustered.yaml", cfg_settings)
        log(f"layout clustered: cluster_by [provider], shard_bytes {shard_bytes:,} ({how}), volatile_columns {VOLATILE}")
        try:
            use_tables(cfg)
        except UserError as exc:
            log(f"\nThe engine does not accept the clustered layout's settings yet:\n  {exc}\n"
                f"Run with --layout chunks until it does.")
            drop_database(server, COPY_DB)
            return 2
    else:
        cfg = chunks_cfg
        log("layout chunks: the image table's settings of dataset_assets/tables.yaml as they are")

    results = []
    for name in args.scenarios:
        try:
            results.append(run_scenario(name, server, template, cfg, args, cpu, key, VOLATILE if args.layout == "clustered" else ()))
        except Exception as exc:  # noqa: BLE001 - recorded; the other scenarios still run
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log(f"    FAILED: {type(exc).__name__}: {msg}")
            results.append({"scenario": name, "error": f"{type(exc).__name__}: {msg}"})
    drop_database(server, COPY_DB)

    info["loadavg_end"] = list(os.getloadavg())
    when = started.strftime("%Y-%m-%d %H:%M UTC")
    heading = (f"Refresh benchmark {when}: {rows:,} {TABLE} rows, layout {args.layout}"
               + (f" (shard_bytes {shard_bytes:,})" if shard_bytes else "")
               + (f", row groups of {args.row_group_mib} MiB" if args.row_group_mib else "")
               + (f", after {args.append_rounds} rounds of 1 % appends, each refreshed" if args.append_rounds else "")
               + f", {args.workers} workers; machine {info['nproc']} cores, {info['memory_gib']} GiB RAM"
               + (f" ({info['cpu_model']})" if info["cpu_model"] else "") + f"; shared_buffers {shared_buffers}")
    first_exports = [r["base"]["wall_s"] for r in results if "error" not in r]
    base_line = None
    if baseline is not None and args.baseline_full:
        med = statistics.median(first_exports) if first_exports else None
        fulls = [r["full"]["wall_s"] for r in results if "error" not in r]
        base_line = (f"baseline: full export, layout chunks {baseline['wall_s']:.2f}s; first export in layout {args.layout} "
                     + (f"median {med:.2f}s of {len(first_exports)} = {med / baseline['wall_s']:.3f}x "
                        f"(target <= 1.15) {'PASS' if med / baseline['wall_s'] <= 1.15 else 'FAIL'}; "
                        f"full export in layout {args.layout} median {statistics.median(fulls) / baseline['wall_s']:.3f}x"
                        if med else "not measured"))
    print()
    print(heading)
    print(tables_text(results, markdown=False))
    if base_line:
        print(base_line)
    if args.markdown:
        print()
        print(f"**{heading}**\n")
        print(tables_text(results, markdown=True))
        if base_line:
            print(f"\n{base_line}")

    out = {"kind": "refresh", "date": started.isoformat(timespec="seconds"), "machine": info, "rows": rows,
           "template_database": template, "layout": args.layout, "shard_bytes": shard_bytes, "workers": args.workers,
           "append_rounds": args.append_rounds,
           "dates": [D1, D2], "shared_buffers": shared_buffers, "tables_yaml": Path(cfg).read_text(),
           "baseline_full_chunks": baseline if args.baseline_full else None, "size_estimate_bytes": estimate,
           "scenarios": results}
    path = Path(args.out) if args.out else HERE / "results" / f"refresh-{args.layout}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nsaved {path}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
