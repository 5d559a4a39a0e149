"""Postgres -> parquet benchmark: our export against the COPY limit and the usual peers.

``make bench`` (or ``python bench/run.py``) seeds the ``image`` table (cached:
reseeded only when its row count differs from ``--rows``), warms the cache with
one untimed read, then runs every tool ``--repeat`` times, round-robin, each run
in its OWN subprocess (``bench/run.py --one TOOL ...``) so that peak memory is
per tool and nothing is shared. The child measures wall time around the work
only (no interpreter start, no imports) and reports JSON on stdout.

Tools (see bench/README.md):

copy1        psycopg ``COPY (SELECT * FROM image) TO STDOUT (FORMAT binary)`` into /dev/null, one stream
copyN        the same over N connections, each copying one ctid range (the limit with N backends)
naive_adbc   ADBC cursor -> fetch_record_batch -> one pyarrow ParquetWriter
polars_adbc  pl.read_database_uri(engine="adbc") -> DataFrame.write_parquet
connectorx   cx.read_sql(partition_on=..., partition_num=N, return_type="arrow") -> pq.write_table
ours         dataset_assets.export.run.export_snapshot(workers=N)

Every parquet writer uses the same output settings: zstd level 1, the row-group
target of ``ParquetOptions().row_group_bytes`` (in-memory Arrow bytes, converted
to rows from the data's average row width) and the page index.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
TABLE = "image"
TOOLS = ("copy1", "copyN", "naive_adbc", "polars_adbc", "connectorx", "ours")
LIMIT_TOOLS = ("copy1", "copyN")
PEERS = ("naive_adbc", "polars_adbc", "connectorx")
DEFAULT_DATA_DIR = PROJECT / ".local" / "bench-pg"
WORK_DIR = PROJECT / ".local" / "bench-tmp"
RESULT_TAG = "BENCH_RESULT "
MiB = 1 << 20

# connectorx partitions on a numeric column by equal value ranges between its
# min and max and silently drops rows where the column is NULL. The image
# table's primary key is a uuid and its integer columns (width, height,
# filesize) are all nullable, so we partition on coalesce(width, 0), exposed as
# an extra column that is dropped before writing. width is the best spread of
# the three (filesize is log-distributed, height has a long tail), but ranges
# of equal width are still unbalanced (about 3:1 for two partitions).
CX_PARTITION_EXPR = "coalesce(width, 0)"
CX_PARTITION_COL = "cx_part"

TARGET_COPY_RATIO = 1.1     # ours / copy1 (best vs best)
TARGET_PEER_RATIO = 0.8     # ours / fastest peer
TARGET_RSS_MIB = 512
TARGET_RSS_GROWTH = 1.2     # "flat": peak RSS at 5x rows at most this times the peak at 1x


# --------------------------------------------------------------------------- helpers

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def vm_status() -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS of this address space, all threads) in MiB.

    /proc/self/status is used rather than ru_maxrss because ru_maxrss of a
    child can carry the parent's high-water mark across fork/exec.
    """
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0]) / 1024
    except OSError:  # not Linux: fall back to ru_maxrss (KiB on Linux, bytes on macOS)
        m = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        m = m / MiB if sys.platform == "darwin" else m / 1024
        out = {"VmRSS": m, "VmHWM": m}
    return out


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rows_per_group(nbytes: int, rows: int) -> int:
    """Rows per row group for the shared target of in-memory Arrow bytes per row group."""
    from dataset_assets.export.shards import ParquetOptions

    target = ParquetOptions().row_group_bytes
    if rows <= 0 or nbytes <= 0:
        return 1 << 20
    return max(1, int(target // (nbytes / rows)))


def parquet_settings() -> dict:
    """The output settings every parquet writer here shares (from the engine's defaults)."""
    from dataset_assets.export.shards import ParquetOptions

    o = ParquetOptions()
    return {"compression": o.compression, "compression_level": o.compression_level,
            "row_group_bytes": o.row_group_bytes, "page_index": o.page_index}


def parquet_summary(paths: list[Path]) -> dict:
    """What was actually written (checked after the timed part)."""
    import pyarrow.parquet as pq

    if not paths:
        return {}
    rgs, rows, comp, page_index, id_type = 0, 0, set(), True, None
    for p in paths:
        md = pq.read_metadata(p)
        rgs += md.num_row_groups
        rows += md.num_rows
        for i in range(md.num_row_groups):
            col = md.row_group(i).column(0)
            comp.add(col.compression)
            page_index = page_index and col.has_offset_index and col.has_column_index
        if id_type is None:
            s = md.schema.column(0)
            id_type = f"{s.physical_type}/{s.logical_type}"
    return {"files": len(paths), "rows": rows, "row_groups": rgs,
            "rows_per_row_group": round(rows / rgs) if rgs else None,
            "compression": sorted(comp), "page_index": page_index, "identifier": id_type}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ctid_ranges(pages: int, n: int) -> list[tuple[int | None, int | None]]:
    """n contiguous page ranges; the first open below, the last open above."""
    n = max(1, n)
    step = -(-pages // n) if pages else 1
    bounds = [i * step for i in range(1, n)]
    return list(zip([None] + bounds, bounds + [None]))


def ctid_where(lo: int | None, hi: int | None) -> str:
    preds = []
    if lo is not None:
        preds.append(f"ctid >= '({int(lo)},0)'::tid")
    if hi is not None:
        preds.append(f"ctid < '({int(hi)},0)'::tid")
    return (" WHERE " + " AND ".join(preds)) if preds else ""


# --------------------------------------------------------------------------- the tools (run in the child)

def tool_copy(uri: str, table: str, streams: int, outdir: Path) -> dict:
    """Binary COPY into /dev/null over ``streams`` connections (ctid ranges when > 1)."""
    import threading

    import psycopg

    with psycopg.connect(uri, autocommit=True) as c:
        pages = c.execute(f"SELECT pg_relation_size('{table}') / current_setting('block_size')::int").fetchone()[0]
    ranges = ctid_ranges(pages, streams) if streams > 1 else [(None, None)]
    totals = [0] * len(ranges)
    errors: list[BaseException] = []

    def run(i: int, lo, hi) -> None:
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            buf = bytearray()
            n = 0
            try:
                with psycopg.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
                    sql = f"COPY (SELECT * FROM {quote_ident(table)}{ctid_where(lo, hi)}) TO STDOUT (FORMAT binary)"
                    with cur.copy(sql) as cp:
                        for data in cp:  # one CopyData message (one row) at a time
                            buf += data
                            if len(buf) >= MiB:
                                n += os.write(fd, buf)
                                buf.clear()
                    n += os.write(fd, buf)
            finally:
                os.close(fd)
            totals[i] = n
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    t0 = time.perf_counter()
    if len(ranges) == 1:
        run(0, None, None)
    else:
        threads = [threading.Thread(target=run, args=(i, lo, hi)) for i, (lo, hi) in enumerate(ranges)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    # rows: the binary stream has no cheap row count; the parent fills it in from count(*)
    return {"seconds": seconds, "rows": None, "bytes": sum(totals), "streams": len(ranges)}


def tool_naive_adbc(uri: str, table: str, workers: int, outdir: Path) -> dict:
    import adbc_driver_postgresql.dbapi as pg
    import pyarrow as pa
    import pyarrow.parquet as pq

    s = parquet_settings()
    path = outdir / "naive_adbc.parquet"
    t0 = time.perf_counter()
    rows = 0
    with pg.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {quote_ident(table)}")
        reader = cur.fetch_record_batch()
        # pyarrow writes the driver's types as they arrive (driver 1.8.0: uuid as
        # 16-byte binary in an opaque extension, jsonb as string): no conversion needed.
        pending, pending_bytes = [], 0
        with pq.ParquetWriter(path, reader.schema, compression=s["compression"],
                              compression_level=s["compression_level"], write_page_index=s["page_index"]) as writer:
            for batch in reader:
                pending.append(batch)
                pending_bytes += batch.nbytes
                rows += batch.num_rows
                if pending_bytes >= s["row_group_bytes"]:  # same row-group target as ours
                    writer.write_table(pa.Table.from_batches(pending), row_group_size=1 << 30)
                    pending, pending_bytes = [], 0
            if pending:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=1 << 30)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": rows, "bytes": path.stat().st_size, "paths": [path]}


def tool_polars_adbc(uri: str, table: str, workers: int, outdir: Path) -> dict:
    import polars as pl

    s = parquet_settings()
    path = outdir / "polars_adbc.parquet"
    t0 = time.perf_counter()
    # uuid arrives as Binary (16 bytes) and jsonb as a string; polars 2.1 writes
    # both without casts (uuid as plain 16-byte binary).
    df = pl.read_database_uri(f"SELECT * FROM {quote_ident(table)}", uri, engine="adbc")
    rg = rows_per_group(df.estimated_size(), df.height)
    df.write_parquet(path, compression=s["compression"], compression_level=s["compression_level"], row_group_size=rg)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": df.height, "bytes": path.stat().st_size, "paths": [path]}


def tool_connectorx(uri: str, table: str, workers: int, outdir: Path) -> dict:
    import connectorx as cx
    import pyarrow.parquet as pq

    s = parquet_settings()
    path = outdir / "connectorx.parquet"
    query = f"SELECT *, {CX_PARTITION_EXPR} AS {CX_PARTITION_COL} FROM {quote_ident(table)}"
    t0 = time.perf_counter()
    # connectorx reads uuid and jsonb as strings: no casts needed.
    tbl = cx.read_sql(uri, query, partition_on=CX_PARTITION_COL, partition_num=workers, return_type="arrow")
    tbl = tbl.drop_columns([CX_PARTITION_COL])
    pq.write_table(tbl, path, row_group_size=rows_per_group(tbl.nbytes, tbl.num_rows), compression=s["compression"],
                   compression_level=s["compression_level"], write_page_index=s["page_index"])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": tbl.num_rows, "bytes": path.stat().st_size, "paths": [path]}


def ours_tables_file(outdir: Path, table: str, filters: bool) -> Path | None:
    """Without ``filters`` ours exports every row, like the other tools."""
    if filters:
        return None
    p = outdir / "bench-tables.yaml"
    p.write_text(f"tables:\n  {table}:\n    primary_key: identifier\n    exclude_removed: false\n    exclude_tombstoned: false\n")
    return p


def tool_ours(uri: str, table: str, workers: int, outdir: Path, filters: bool = False) -> dict:
    tables_file = ours_tables_file(outdir, table, filters)
    if tables_file is not None:
        os.environ["DATASET_ASSETS_TABLES"] = str(tables_file)
    from dataset_assets.export.run import ExportOptions, export_snapshot
    from dataset_assets.storage.stores.local import LocalStore

    store = LocalStore(outdir / "store")
    t0 = time.perf_counter()
    (res,) = export_snapshot(uri, [table], dt.date.today().isoformat(), store, ExportOptions(workers=workers, force=True, incremental=False))
    seconds = time.perf_counter() - t0
    paths = [store.local_path(f"{res.prefix}/{f.path}") for f in res.manifest.files]
    return {"seconds": seconds, "rows": res.rows, "bytes": res.manifest.total_bytes, "paths": paths,
            "engine_timings": res.manifest.timings, "filters": res.manifest.filters}


def run_one(args) -> int:
    """Child mode: run one tool once and print its result as JSON."""
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # imports happen before the clock starts
    preload = {
        "naive_adbc": ["adbc_driver_postgresql.dbapi", "pyarrow.parquet"],
        "ours": ["adbc_driver_postgresql.dbapi", "pyarrow.parquet", "dataset_assets.export.run"],
        "polars_adbc": ["adbc_driver_postgresql.dbapi", "polars"],
        "connectorx": ["connectorx", "pyarrow.parquet"],
    }.get(args.one, ["psycopg"] if args.one in LIMIT_TOOLS else [])
    for module in preload:
        importlib.import_module(module)
    base = vm_status()
    cpu0 = cpu_seconds()
    if args.one == "copy1":
        out = tool_copy(args.source, TABLE, 1, outdir)
    elif args.one == "copyN":
        out = tool_copy(args.source, TABLE, args.workers, outdir)
    elif args.one == "ours":
        out = tool_ours(args.source, TABLE, args.workers, outdir, filters=args.ours_filters)
    else:
        out = globals()[f"tool_{args.one}"](args.source, TABLE, args.workers, outdir)
    out["cpu_seconds"] = cpu_seconds() - cpu0
    peak = vm_status()
    out["tool"] = args.one
    out["base_rss_mib"] = round(base.get("VmRSS", 0), 1)
    out["peak_rss_mib"] = round(peak.get("VmHWM", 0), 1)
    paths = out.pop("paths", [])
    out["parquet"] = parquet_summary(paths)
    print(RESULT_TAG + json.dumps(out, default=str), flush=True)
    return 0


# --------------------------------------------------------------------------- the parent

def connect_adbc(uri: str):
    import adbc_driver_postgresql.dbapi as pg

    return pg.connect(uri, autocommit=True)


def scalar(uri: str, sql: str):
    with connect_adbc(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        return None if row is None else row[0]


def default_shared_buffers() -> str:
    """25 % of the machine's memory: where the Postgres manual says to start on a dedicated
    server ("Resource Consumption"), and what Amazon RDS sets by default."""
    return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 4 // MiB}MB"


def configure_server(shared_buffers: str) -> str:
    """Run the benchmark's own embedded server with ``shared_buffers`` (ALTER SYSTEM, then one
    restart when it differs); returns the server's URI. The project's other embedded servers
    (demo, tests) keep their 256 MB."""
    from dataset_assets.local.embedded import embedded_uri, stop_embedded

    if not re.fullmatch(r"[0-9]+(kB|MB|GB|TB)", shared_buffers):
        raise SystemExit(f"--shared-buffers {shared_buffers!r} is not a size like 256MB or 6GB.")
    uri = embedded_uri(DEFAULT_DATA_DIR)
    with connect_adbc(uri) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT current_setting('shared_buffers'), pg_size_bytes(current_setting('shared_buffers')) = "
                    f"pg_size_bytes('{shared_buffers}')")
        now, same = cur.fetchone()
        if same:
            return uri
        cur.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
    log(f"benchmark server: shared_buffers {now} -> {shared_buffers} (--shared-buffers); restarting it")
    stop_embedded(DEFAULT_DATA_DIR)
    return embedded_uri(DEFAULT_DATA_DIR)


def resolve_source(source: str | None, database: str, shared_buffers: str | None = None) -> tuple[str, bool]:
    """(uri, owned): owned when it is the benchmark's own embedded database, which then runs with
    ``shared_buffers`` (default: ``default_shared_buffers()``). A ``source`` is used as it is."""
    if source:
        return source, False
    from dataset_assets.local.embedded import ensure_database

    return ensure_database(configure_server(shared_buffers or default_shared_buffers()), database), True


def ensure_seeded(uri: str, rows: int, reseed: bool, owned: bool) -> int:
    """Seed ``image`` with ``rows`` rows unless it already has exactly that many; returns the row count."""
    from dataset_assets.local.seed import seed

    exists = scalar(uri, f"SELECT to_regclass('public.{TABLE}') IS NOT NULL")
    have = int(scalar(uri, f"SELECT count(*) FROM {TABLE}")) if exists else None
    if have == rows and not reseed:
        log(f"{TABLE}: {have:,} rows already seeded; reusing them (pass --reseed to rebuild)")
        return have
    if exists and not owned and not reseed:
        log(f"{TABLE} in the given --source holds {have:,} rows, not {rows:,}; benchmarking it as it is "
            f"(pass --reseed to replace it with {rows:,} sample rows)")
        return have
    log(f"seeding {TABLE} with {rows:,} rows (cached for later runs) ...")
    t0 = time.perf_counter()
    seed(uri, tables=[TABLE], rows={TABLE: rows}, seed=42, replace=True)
    with connect_adbc(uri) as conn, conn.cursor() as cur:  # seed() vacuums too; make sure, and analyze
        cur.execute(f"VACUUM (ANALYZE) {TABLE}")
    log(f"seeded in {time.perf_counter() - t0:.1f}s")
    return int(scalar(uri, f"SELECT count(*) FROM {TABLE}"))


def warm_up(uri: str) -> None:
    """One untimed full read, so every tool starts with a hot cache."""
    import psycopg

    t0 = time.perf_counter()
    n = 0
    with psycopg.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY (SELECT * FROM {TABLE}) TO STDOUT (FORMAT binary)") as cp:
            for data in cp:
                n += len(data)
    log(f"warm-up read: {n / 1e6:.0f} MB in {time.perf_counter() - t0:.1f}s")


def run_child(tool: str, uri: str, workers: int, ours_filters: bool, timeout: float) -> dict:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    outdir = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=WORK_DIR))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", tool, "--source", uri,
           "--workers", str(workers), "--outdir", str(outdir)]
    if ours_filters:
        cmd.append("--ours-filters")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=PROJECT)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "error": f"timed out after {timeout:.0f}s"}
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    err = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    exc_lines = [ln for ln in err if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln)]
    msg = exc_lines[-1] if exc_lines else (err[-1] if err else f"exit code {p.returncode}")
    return {"tool": tool, "error": msg[:300], "stderr_tail": err[-15:]}


def summarize(tool: str, runs: list[dict], rows: int) -> dict:
    ok = [r for r in runs if "error" not in r]
    s: dict = {"tool": tool, "runs": runs}
    if not ok:
        s["error"] = runs[0].get("error") if runs else "not run"
        return s
    times = [r["seconds"] for r in ok]
    best = min(ok, key=lambda r: r["seconds"])
    n = best.get("rows") or rows
    s.update(best=min(times), median=statistics.median(times), rows=n, rows_per_s=n / best["seconds"],
             bytes=best["bytes"], peak_rss_mib=max(r["peak_rss_mib"] for r in ok),
             base_rss_mib=min(r["base_rss_mib"] for r in ok), cpu_seconds=best["cpu_seconds"],
             parquet=best.get("parquet") or None, failed_runs=len(runs) - len(ok))
    return s


def fmt_table(summaries: list[dict], markdown: bool) -> str:
    copy1 = next((s for s in summaries if s["tool"] == "copy1" and "best" in s), None)
    head = ["tool", "best s", "median s", "rows/s", "x copy1", "output MB", "peak RSS MiB", "client CPU s"]
    lines = []
    for s in summaries:
        if "best" not in s:
            lines.append([s["tool"], "FAILED: " + str(s.get("error"))[:90]] + [""] * (len(head) - 2))
            continue
        ratio = f"{s['best'] / copy1['best']:.2f}" if copy1 else "-"
        kind = " (stream)" if s["tool"] in LIMIT_TOOLS else ""
        lines.append([s["tool"], f"{s['best']:.2f}", f"{s['median']:.2f}", f"{s['rows_per_s']:,.0f}", ratio,
                      f"{s['bytes'] / 1e6:.1f}{kind}", f"{s['peak_rss_mib']:.0f}", f"{s['cpu_seconds']:.2f}"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in lines]
        return "\n".join(out)
    widths = [max(len(str(r[i])) for r in [head] + lines) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines])


def targets(summaries: list[dict]) -> list[dict]:
    by = {s["tool"]: s for s in summaries if "best" in s}
    out = []
    ours = by.get("ours")
    if ours is None:
        return out
    if "copy1" in by:
        r = ours["best"] / by["copy1"]["best"]
        out.append({"name": "ours / copy1 time", "value": round(r, 3), "target": f"<= {TARGET_COPY_RATIO}", "pass": r <= TARGET_COPY_RATIO})
    peers = [by[p] for p in PEERS if p in by]
    if peers:
        fastest = min(peers, key=lambda s: s["best"])
        r = ours["best"] / fastest["best"]
        out.append({"name": f"ours / fastest peer ({fastest['tool']}) time", "value": round(r, 3),
                    "target": f"<= {TARGET_PEER_RATIO}", "pass": r <= TARGET_PEER_RATIO})
    out.append({"name": "ours peak RSS MiB", "value": ours["peak_rss_mib"], "target": f"<= {TARGET_RSS_MIB}",
                "pass": ours["peak_rss_mib"] <= TARGET_RSS_MIB})
    return out


def fmt_targets(ts: list[dict], markdown: bool) -> str:
    bullet = "- " if markdown else "  "
    return "\n".join(f"{bullet}{t['name']}: {t['value']} (target {t['target']}) {'PASS' if t['pass'] else 'FAIL'}" for t in ts)


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "memory_gib": mem, "platform": platform.platform(),
            "python": platform.python_version(), "loadavg_start": list(os.getloadavg())}


def versions(uri: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("pyarrow", "polars", "connectorx", "adbc-driver-postgresql", "psycopg", "dataset-assets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    try:
        out["postgres"] = scalar(uri, "SELECT current_setting('server_version')")
    except Exception as exc:  # noqa: BLE001
        out["postgres"] = f"unknown ({exc})"
    return out


def source_facts(uri: str) -> dict:
    with connect_adbc(uri) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT pg_relation_size('{TABLE}'), pg_total_relation_size('{TABLE}'), "
                    f"current_setting('shared_buffers'), current_setting('max_parallel_workers_per_gather')")
        heap, total, sb, mpw = cur.fetchone()
    return {"heap_bytes": heap, "total_relation_bytes": total, "shared_buffers": sb, "max_parallel_workers_per_gather": mpw}


def redact(uri: str) -> str:
    from dataset_assets.source.connect import redact as _r

    return _r(uri)


def main_bench(args) -> int:
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    bad = [t for t in tools if t not in TOOLS]
    if bad:
        log(f"unknown tool(s) {', '.join(bad)}; choose from {','.join(TOOLS)}")
        return 2
    uri, owned = resolve_source(args.source, "bench", args.shared_buffers)
    rows = ensure_seeded(uri, args.rows, args.reseed, owned)
    warm_up(uri)
    info = machine_info()
    log(f"{rows:,} {TABLE} rows, workers={args.workers}, repeat={args.repeat}, tools={','.join(tools)}; "
        f"load average at start {info['loadavg_start'][0]:.2f} (other work on the machine distorts timings)")
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    for r in range(args.repeat):  # round-robin so drift in machine load hits every tool alike
        for t in tools:
            res = run_child(t, uri, args.workers, args.ours_filters, args.timeout)
            if "error" not in res and res.get("rows") is None:
                res["rows"] = rows
            runs[t].append(res)
            if "error" in res:
                log(f"  run {r + 1} {t}: FAILED: {res['error']}")
            else:
                log(f"  run {r + 1} {t}: {res['seconds']:.2f}s, {res['rows']:,} rows, {res['bytes'] / 1e6:.1f} MB, "
                    f"peak RSS {res['peak_rss_mib']:.0f} MiB")
    summaries = [summarize(t, runs[t], rows) for t in tools]
    ts = targets(summaries)
    info["loadavg_end"] = list(os.getloadavg())
    facts = source_facts(uri)
    print()
    print(f"{rows:,} {TABLE} rows, {args.workers} workers/streams, best and median of {args.repeat}; "
          f"parquet: zstd 1, {parquet_settings()['row_group_bytes'] // MiB} MiB row groups, page index; "
          f"server shared_buffers {facts['shared_buffers']}")
    print(fmt_table(summaries, markdown=False))
    print()
    print("targets:")
    print(fmt_targets(ts, markdown=False))
    if args.markdown:
        print()
        print(fmt_table(summaries, markdown=True))
        print()
        print(fmt_targets(ts, markdown=True))
    result = {
        "kind": "bench", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info, "versions": versions(uri), "source": redact(uri), "table": TABLE, "rows": rows,
        "source_facts": facts, "workers": args.workers, "repeat": args.repeat, "tools": tools,
        "parquet_settings": parquet_settings(), "ours_filters": args.ours_filters,
        "connectorx_partition": f"{CX_PARTITION_EXPR} AS {CX_PARTITION_COL}, partition_num={args.workers}",
        "summaries": summaries, "targets": ts,
    }
    save(result, args.out)
    return 0


def main_rss_scaling(args) -> int:
    sizes = [(args.rows, "bench"), (args.rows * 5, "bench_5x")]
    info = machine_info()
    results = []
    for rows_wanted, db in sizes:
        uri, owned = resolve_source(args.source and _with_db(args.source, db), db, args.shared_buffers)
        rows = ensure_seeded(uri, rows_wanted, args.reseed, owned)
        warm_up(uri)
        res = run_child("ours", uri, args.workers, args.ours_filters, args.timeout)
        res["rows_seeded"] = rows
        res["database"] = db
        results.append(res)
        if "error" in res:
            log(f"ours at {rows:,} rows: FAILED: {res['error']}")
        else:
            log(f"ours at {rows:,} rows: {res['seconds']:.2f}s, peak RSS {res['peak_rss_mib']:.0f} MiB")
    print()
    ok = all("error" not in r for r in results)
    for r in results:
        if "error" in r:
            print(f"ours, {r['rows_seeded']:>12,} rows: FAILED: {r['error']}")
        else:
            print(f"ours, {r['rows_seeded']:>12,} rows: {r['seconds']:7.2f}s  {r['rows'] / r['seconds']:>10,.0f} rows/s  "
                  f"peak RSS {r['peak_rss_mib']:6.0f} MiB (after imports {r['base_rss_mib']:.0f} MiB)")
    ts = []
    if ok:
        a, b = results[0]["peak_rss_mib"], results[1]["peak_rss_mib"]
        ts = [{"name": "peak RSS MiB at 5x rows / at 1x", "value": round(b / a, 3), "target": f"<= {TARGET_RSS_GROWTH}", "pass": b / a <= TARGET_RSS_GROWTH},
              {"name": "peak RSS MiB at 5x rows", "value": b, "target": f"<= {TARGET_RSS_MIB}", "pass": b <= TARGET_RSS_MIB}]
        print("targets:")
        print(fmt_targets(ts, markdown=False))
    info["loadavg_end"] = list(os.getloadavg())
    save({"kind": "rss-scaling", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": info,
          "versions": versions(uri), "workers": args.workers, "ours_filters": args.ours_filters, "runs": results, "targets": ts},
         args.out)
    return 0 if ok else 1


def _with_db(uri: str, db: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    p = urlsplit(uri)
    return urlunsplit((p.scheme, p.netloc, "/" + db, p.query, p.fragment))


def save(result: dict, out: str | None) -> None:
    path = Path(out) if out else HERE / "results" / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nsaved {path}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the image table (default 1,000,000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per tool; best and median are reported (default 3)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="streams/partitions/workers for copyN, connectorx and ours (default: cores)")
    p.add_argument("--source", help="postgresql:// URI of the database holding (or to seed) the image table; "
                                    "default: the embedded Postgres in .local/bench-pg, database 'bench'")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    p.add_argument("--out", help="where to save the JSON results (default bench/results/<timestamp>.json)")
    p.add_argument("--markdown", action="store_true", help="also print the table as markdown, ready for bench/README.md")
    p.add_argument("--reseed", action="store_true", help="rebuild the table even if it holds --rows rows already")
    p.add_argument("--rss-scaling", action="store_true", help="run only ours at --rows and at 5x --rows (database bench_5x) and compare peak RSS")
    p.add_argument("--profile", action="store_true", help="profile one run of ours instead (bench/profile_ours.py: where the time goes)")
    p.add_argument("--ours-filters", action="store_true", help="export with the project's table configuration (leaves out removed and "
                                                                "tombstoned rows); by default ours exports every row like the other tools")
    p.add_argument("--shared-buffers", help="shared_buffers of the benchmark's own embedded server, e.g. 256MB (default: 25%% of "
                   f"RAM, here {default_shared_buffers()}; the server restarts once when it changes). Ignored with --source")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one tool run may take (default 3600)")
    p.add_argument("--one", choices=TOOLS, help=argparse.SUPPRESS)
    p.add_argument("--outdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rows < 1 or args.repeat < 1 or args.workers < 1:
        p.error("--rows, --repeat and --workers must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        return run_one(args)
    if args.profile:
        import profile_ours  # bench/ is on sys.path when this file runs as a script

        argv = ["--rows", str(args.rows), "--workers", str(args.workers)]
        argv += ["--source", args.source] if args.source else []
        argv += ["--out", args.out] if args.out else []
        argv += ["--reseed"] if args.reseed else []
        argv += ["--ours-filters"] if args.ours_filters else []
        return profile_ours.main(argv)
    if args.rss_scaling:
        return main_rss_scaling(args)
    return main_bench(args)


if __name__ == "__main__":
    sys.exit(main())
