"""Postgres -> parquet benchmark: our export against the COPY limit and the usual peers.

``make bench`` (or ``python bench/run.py``) seeds the ``image`` table (cached:
reseeded only when its row count differs from ``--rows``), warms the cache with
one untimed read, then runs every tool ``--repeat`` times, round-robin, each run
in its OWN subprocess so that peak memory is per tool and nothing is shared.
Two ways of measuring (``--measure``, default ``in-process``; ``--whole-process``
is ``--measure both``):

in-process     ``bench/run.py --one TOOL ...``: the child imports the tool's modules,
               then measures wall time around the work only (no interpreter start,
               no imports) and its VmHWM, and reports JSON on stdout.
whole-process  the tool as a user runs it, from a fresh interpreter: ours as the CLI
               ``dataset-assets export --full``, every other tool as
               ``python bench/exporters.py SPEC`` (its imports included), spawned by
               ``bench/launch.py``, which times spawn to exit and takes the peak RSS
               and CPU from ``wait4``.

Tools (see bench/README.md; the peers' code is in bench/exporters.py):

copy1        psycopg ``COPY (SELECT * FROM image) TO STDOUT (FORMAT binary)`` into /dev/null, one stream
copyN        the same over N connections, each copying one ctid range (the limit with N backends)
naive_adbc   ADBC cursor -> fetch_record_batch -> one pyarrow ParquetWriter
polars_adbc  pl.read_database_uri(engine="adbc") -> DataFrame.write_parquet
connectorx   cx.read_sql(partition_on=..., partition_num=N, return_type="arrow") -> pq.write_table
duckdb       DuckDB + postgres extension (from its PyPI package): ATTACH ... READ_ONLY, COPY ... TO parquet
dlt_cx       dlt sql_table(backend="connectorx") -> filesystem destination, parquet
dlt_pa       dlt sql_table(backend="pyarrow") -> filesystem destination, parquet
ours         dataset_assets.export.run.export_snapshot(workers=N) (whole process: the CLI)
ours_clustered  the same in ``layout: clustered`` (cluster_by provider, default shard size): the first
             export of the refresh layout (export/refresh.py), the base later refreshes build on

Every parquet writer uses zstd level 1. naive_adbc, polars_adbc and connectorx also use
the row-group target of ``ParquetOptions().row_group_bytes`` (in-memory Arrow bytes,
converted to rows from the data's average row width) and the page index; DuckDB and dlt
write their default row groups (the page index: dlt yes, DuckDB no).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
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

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere than bench/
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import exporters  # noqa: E402  (bench/exporters.py: the peers)
from exporters import CX_PARTITION_COL, CX_PARTITION_EXPR, RESULT_TAG  # noqa: E402

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
TABLE = "image"
TOOLS = ("copy1", "copyN", "naive_adbc", "polars_adbc", "connectorx", "duckdb", "dlt_cx", "dlt_pa", "ours", "ours_clustered")
OURS = ("ours", "ours_clustered")  # the same CLI and engine; the tables file sets the layout
VOLATILE = ["updated_on", "last_synced_with_source"]  # volatile_columns of the clustered layout in every benchmark
LIMIT_TOOLS = ("copy1", "copyN")
PEERS = ("naive_adbc", "polars_adbc", "connectorx")  # of the "fastest peer" target (set before DuckDB and dlt were added)
DEFAULT_DATA_DIR = PROJECT / ".local" / "bench-pg"
WORK_DIR = PROJECT / ".local" / "bench-tmp"
MiB = 1 << 20
MEASURES = ("in-process", "whole-process")

TARGET_COPY_RATIO = 1.1     # ours / copy1 (best vs best)
TARGET_PEER_RATIO = 0.8     # ours / fastest peer
TARGET_RSS_MIB = 512
TARGET_RSS_GROWTH = 1.2     # "flat": peak RSS at 5x rows at most this times the peak at 1x
TARGET_DUCKDB_RATIO = 0.9   # issue 17: ours / duckdb, whole process (best vs best)


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


def ours_tables_file(outdir: Path, table: str, filters: bool, clustered: bool = False) -> Path | None:
    """Without ``filters`` ours exports every row, like the other tools; ``clustered``: in the
    refresh layout, clustered by provider then key, with the volatile columns of ``tables.yaml``."""
    if filters and not clustered:
        return None
    text = f"tables:\n  {table}:\n    primary_key: identifier\n"
    if not filters:
        text += "    exclude_removed: false\n    exclude_tombstoned: false\n"
    if clustered:
        text += ("    layout: clustered\n    cluster_by: [provider]\n"
                 f"    volatile_columns: [{', '.join(VOLATILE)}]\n")
        if filters:
            text += f"    tombstone_table: deleted_{table}\n"
    p = outdir / "bench-tables.yaml"
    p.write_text(text)
    return p


def tool_ours(uri: str, table: str, workers: int, outdir: Path, filters: bool = False, clustered: bool = False) -> dict:
    tables_file = ours_tables_file(outdir, table, filters, clustered)
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
    """Child mode (in process): run one tool once and print its result as JSON."""
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # the parent passes the settings, so that a peer's child does not import the engine for them
    settings = json.loads(args.settings) if args.settings else parquet_settings()
    # imports happen before the clock starts
    # ours: dataset_assets first, which chooses Arrow's allocator before pyarrow loads (dataset_assets/allocator.py)
    preload = (["dataset_assets", "adbc_driver_postgresql.dbapi", "pyarrow.parquet", "dataset_assets.export.run"]
               + (["dataset_assets.export.refresh"] if args.one == "ours_clustered" else [])) if args.one in OURS \
        else exporters.TOOL_MODULES[args.one]
    for module in preload:
        importlib.import_module(module)
    base = vm_status()
    cpu0 = cpu_seconds()
    if args.one in OURS:
        out = tool_ours(args.source, TABLE, args.workers, outdir, filters=args.ours_filters, clustered=args.one == "ours_clustered")
    else:
        out = exporters.run_tool(args.one, args.source, TABLE, args.workers, outdir, settings)
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


def skip_reason(tool: str) -> str | None:
    """Why ``tool`` cannot run on this machine (a package missing or not for this platform), or None."""
    from importlib.metadata import PackageNotFoundError, version

    modules = exporters.TOOL_MODULES.get(tool, [])
    for module in modules:
        top = module.split(".")[0]
        try:
            found = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            pkg = exporters.MODULE_PACKAGES.get(top, top)
            return (f"{pkg} is not installed (not available for this platform/Python, or `make install` not run: "
                    f"it is in the bench extra of pyproject.toml)")
    if tool == "duckdb":
        try:
            core, ext = version("duckdb"), version("duckdb-extension-postgres-scanner")
        except PackageNotFoundError as exc:
            return f"{exc} is not installed"
        if core != ext:
            return f"duckdb {core} and duckdb-extension-postgres-scanner {ext} differ; the extension must match DuckDB's version"
        root = Path(importlib.util.find_spec("duckdb_extension_postgres_scanner").origin).parent
        if not (root / "extensions" / f"v{core}" / "postgres_scanner.duckdb_extension").is_file():
            return f"duckdb-extension-postgres-scanner {ext} holds no postgres_scanner.duckdb_extension for v{core} on this platform"
    return None


def tool_env(tool: str, outdir: Path, ours_filters: bool) -> dict[str, str]:
    """Environment a tool's process gets on top of ours (the same in process and whole process)."""
    if tool in exporters.DLT_BACKENDS:
        return exporters.dlt_env(outdir)
    if tool in OURS:
        tables_file = ours_tables_file(outdir, TABLE, ours_filters, clustered=tool == "ours_clustered")
        return {"DATASET_ASSETS_TABLES": str(tables_file)} if tables_file is not None else {}
    return {}


def error_from(stderr: str, returncode) -> dict:
    err = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    exc_lines = [ln for ln in err if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln)]
    msg = exc_lines[-1] if exc_lines else (err[-1] if err else f"exit code {returncode}")
    return {"error": msg[:300], "stderr_tail": err[-15:]}


def check_rows(res: dict, expected: int, ours_filters: bool) -> dict:
    """Rows: those of the parquet written (footers), which must equal the table's count(*).
    The COPY tools write no parquet: their rows are the table's count."""
    tool = res.get("tool")
    if "error" in res:
        return res
    if tool in LIMIT_TOOLS:
        res["rows"], res["rows_check"] = expected, "binary COPY stream: rows = the table's count(*), not counted"
        return res
    written = (res.get("parquet") or {}).get("rows")
    if written is None:
        res["error"] = "no parquet file was written"
        return res
    res["rows"] = written
    if tool in OURS and ours_filters:
        res["rows_check"] = "not compared with count(*): --ours-filters leaves rows out (the engine checks its own count)"
    elif written != expected:
        res["error"] = f"{written:,} rows in the parquet written, but the table holds {expected:,}"
    else:
        res["rows_check"] = f"parquet rows = count(*) = {expected:,}"
    return res


def run_child(tool: str, uri: str, workers: int, ours_filters: bool, timeout: float,
              settings: dict | None = None, expected_rows: int | None = None) -> dict:
    """One in-process measurement: ``bench/run.py --one TOOL`` in its own subprocess."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    outdir = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=WORK_DIR))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", tool, "--source", uri,
           "--workers", str(workers), "--outdir", str(outdir), "--settings", json.dumps(settings or parquet_settings())]
    if ours_filters:
        cmd.append("--ours-filters")
    env = {**os.environ, **tool_env(tool, outdir, ours_filters)}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=PROJECT, env=env)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "error": f"timed out after {timeout:.0f}s"}
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            res = json.loads(line[len(RESULT_TAG):])
            return check_rows(res, expected_rows, ours_filters) if expected_rows is not None else res
    return {"tool": tool, **error_from(p.stderr, p.returncode)}


def ours_cli(uri: str, workers: int, outdir: Path) -> list[str]:
    """Ours as a user runs it: the CLI, full mode (ctid ranges, like the in-process run), a fresh store."""
    script = Path(sys.executable).parent / "dataset-assets"
    base = [str(script)] if script.is_file() else [sys.executable, "-m", "dataset_assets.cli"]
    return base + ["export", "--full", "--force", "--table", TABLE, "--snapshot", dt.date.today().isoformat(),
                   "--workers", str(workers), "--source", uri, "--store", str(outdir / "store")]


def run_whole(tool: str, uri: str, workers: int, ours_filters: bool, timeout: float, settings: dict,
              expected_rows: int) -> dict:
    """One whole-process measurement: the tool from a fresh interpreter, imports and start-up
    included, spawned by bench/launch.py (wall time spawn to exit; peak RSS and CPU from wait4)."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    outdir = Path(tempfile.mkdtemp(prefix=f"whole-{tool}-", dir=WORK_DIR))
    try:
        if tool in OURS:
            cmd = ours_cli(uri, workers, outdir)
        else:
            spec_file = outdir / "spec.json"
            spec_file.write_text(json.dumps({"tool": tool, "source": uri, "table": TABLE, "workers": workers,
                                             "outdir": str(outdir), "settings": settings}))
            cmd = [sys.executable, str(HERE / "exporters.py"), str(spec_file)]
        launch = outdir / "launch.json"
        launch.write_text(json.dumps({"cmd": cmd, "env": {**os.environ, **tool_env(tool, outdir, ours_filters)},
                                      "cwd": str(PROJECT), "stdout": str(outdir / "stdout.txt"),
                                      "stderr": str(outdir / "stderr.txt"), "timeout": timeout}))
        try:
            p = subprocess.run([sys.executable, "-I", "-S", str(HERE / "launch.py"), str(launch)],
                               capture_output=True, text=True, timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            return {"tool": tool, "error": f"timed out after {timeout:.0f}s"}
        if p.returncode != 0:
            return {"tool": tool, **error_from(p.stderr, p.returncode)}
        m = json.loads(p.stdout.strip().splitlines()[-1])
        stdout = (outdir / "stdout.txt").read_text(errors="replace")
        stderr = (outdir / "stderr.txt").read_text(errors="replace")
        shown = " ".join(redact(uri) if c == uri else c for c in cmd)
        if m["timed_out"]:
            return {"tool": tool, "error": f"timed out after {timeout:.0f}s", "cmd": shown}
        if m["returncode"] != 0:
            return {"tool": tool, "cmd": shown, **error_from(stderr, m["returncode"])}
        if tool in OURS:
            (summary,) = json.loads(stdout[stdout.index("["):])  # the CLI prints its summary as JSON
            # the release's data files, as its manifest lists them (not the clustered layout's row index)
            (manifest,) = (outdir / "store").rglob("_manifest.json")
            paths = [manifest.parent / f["path"] for f in json.loads(manifest.read_text())["files"]]
            out = {"rows": summary["rows"], "work_seconds": summary["seconds"],
                   "work_is": "the engine's total_seconds of the table (manifest timings)"}
        else:
            line = next(ln for ln in reversed(stdout.splitlines()) if ln.startswith(RESULT_TAG))
            child = json.loads(line[len(RESULT_TAG):])
            paths = [Path(x) for x in child.pop("paths", [])]
            out = {k: v for k, v in child.items() if k not in ("seconds", "tool")}
            out["work_seconds"] = child["seconds"]
            out["work_is"] = "the tool's own timing of the work, as in process"
        res = {"tool": tool, "seconds": m["seconds"], "peak_rss_mib": round(m["maxrss_kib"] / 1024, 1),
               "cpu_seconds": m["utime"] + m["stime"], **out, "cmd": shown}
        if paths:
            res["bytes"] = sum(pth.stat().st_size for pth in paths)
            res["parquet"] = parquet_summary(paths)
        if res.get("work_seconds") is not None:
            res["outside_work_seconds"] = res["seconds"] - res["work_seconds"]
        return check_rows(res, expected_rows, ours_filters)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def summarize(tool: str, runs: list[dict], rows: int, skipped: str | None = None) -> dict:
    ok = [r for r in runs if "error" not in r]
    s: dict = {"tool": tool, "runs": runs}
    if skipped:
        s["skipped"] = skipped
        return s
    if not ok:
        s["error"] = runs[0].get("error") if runs else "not run"
        return s
    times = [r["seconds"] for r in ok]
    best = min(ok, key=lambda r: r["seconds"])
    n = best.get("rows") or rows
    s.update(best=min(times), median=statistics.median(times), rows=n, rows_per_s=n / best["seconds"],
             bytes=best["bytes"], peak_rss_mib=max(r["peak_rss_mib"] for r in ok), cpu_seconds=best["cpu_seconds"],
             parquet=best.get("parquet") or None, failed_runs=len(runs) - len(ok))
    if all("base_rss_mib" in r for r in ok):
        s["base_rss_mib"] = min(r["base_rss_mib"] for r in ok)
    if best.get("outside_work_seconds") is not None:
        s["outside_work_seconds"] = best["outside_work_seconds"]
    return s


def fmt_table(summaries: list[dict], markdown: bool, whole: bool = False) -> str:
    ref = {t: next((s for s in summaries if s["tool"] == t and "best" in s), None) for t in ("copy1", "duckdb")}
    head = ["tool", "best s", "median s", "rows/s", "x copy1", "x duckdb", "output MB", "peak RSS MiB", "client CPU s"]
    if whole:
        head.append("outside work s")
    lines = []
    for s in summaries:
        if "best" not in s:
            why = f"SKIPPED: {s['skipped']}" if s.get("skipped") else f"FAILED: {s.get('error')}"
            lines.append([s["tool"], why[:200]] + [""] * (len(head) - 2))
            continue
        ratios = [f"{s['best'] / ref[t]['best']:.2f}" if ref[t] else "-" for t in ("copy1", "duckdb")]
        kind = " (stream)" if s["tool"] in LIMIT_TOOLS else ""
        row = [s["tool"], f"{s['best']:.2f}", f"{s['median']:.2f}", f"{s['rows_per_s']:,.0f}", *ratios,
               f"{s['bytes'] / 1e6:.1f}{kind}", f"{s['peak_rss_mib']:.0f}", f"{s['cpu_seconds']:.2f}"]
        if whole:
            row.append(f"{s['outside_work_seconds']:.2f}" if s.get("outside_work_seconds") is not None else "-")
        lines.append(row)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in lines]
        return "\n".join(out)
    full = [r for r in lines if r[2] != "" or len(head) <= 2]
    widths = [max(len(str(r[i])) for r in [head] + (lines if i == 0 else full)) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    # a skipped or failed tool: its reason after the name, outside the columns
    text = lambda r: fmt(r) if r in full else f"{r[0].ljust(widths[0])}  {r[1]}"  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [text(r) for r in lines])


def targets(summaries: list[dict]) -> list[dict]:
    """The targets of the in-process table (set before DuckDB and dlt were added), plus ours / duckdb for reading."""
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
    if "duckdb" in by:
        out.append({"name": "ours / duckdb time (in process; the target is on the whole-process table)",
                    "value": round(ours["best"] / by["duckdb"]["best"], 3), "target": None, "pass": None})
    return out


def whole_targets(summaries: list[dict]) -> list[dict]:
    """Issue 17's targets, on the whole-process table (best vs best)."""
    by = {s["tool"]: s for s in summaries if "best" in s}
    ours = by.get("ours")
    if ours is None:
        return []
    out = []
    if "duckdb" in by:
        r = ours["best"] / by["duckdb"]["best"]
        out.append({"name": "ours / duckdb time, whole process", "value": round(r, 3), "target": f"<= {TARGET_DUCKDB_RATIO}",
                    "pass": r <= TARGET_DUCKDB_RATIO})
    out.append({"name": "ours peak RSS MiB, whole process", "value": ours["peak_rss_mib"], "target": f"<= {TARGET_RSS_MIB}",
                "pass": ours["peak_rss_mib"] <= TARGET_RSS_MIB})
    clustered = by.get("ours_clustered")
    if clustered is not None:
        if "duckdb" in by:
            r = clustered["best"] / by["duckdb"]["best"]
            out.append({"name": "ours_clustered (first export, refresh layout) / duckdb time, whole process",
                        "value": round(r, 3), "target": f"<= {TARGET_DUCKDB_RATIO}", "pass": r <= TARGET_DUCKDB_RATIO})
        out.append({"name": "ours_clustered peak RSS MiB, whole process", "value": clustered["peak_rss_mib"],
                    "target": f"<= {TARGET_RSS_MIB}", "pass": clustered["peak_rss_mib"] <= TARGET_RSS_MIB})
    return out


def fmt_targets(ts: list[dict], markdown: bool) -> str:
    bullet = "- " if markdown else "  "
    return "\n".join(f"{bullet}{t['name']}: {t['value']}" + (f" (target {t['target']}) {'PASS' if t['pass'] else 'FAIL'}"
                                                             if t["target"] is not None else "") for t in ts)


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
    for pkg in ("pyarrow", "polars", "connectorx", "adbc-driver-postgresql", "psycopg", "duckdb",
                "duckdb-extension-postgres-scanner", "dlt", "sqlalchemy", "psycopg2-binary", "dataset-assets"):
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


def measures_of(args) -> list[str]:
    if args.whole_process:
        return list(MEASURES)
    return list(MEASURES) if args.measure == "both" else [args.measure]


def main_bench(args) -> int:
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    bad = [t for t in tools if t not in TOOLS]
    if bad:
        log(f"unknown tool(s) {', '.join(bad)}; choose from {','.join(TOOLS)}")
        return 2
    measures = measures_of(args)
    skipped = {t: why for t in tools if (why := skip_reason(t))}
    for t, why in skipped.items():
        log(f"skipping {t}: {why}")
    uri, owned = resolve_source(args.source, "bench", args.shared_buffers)
    rows = ensure_seeded(uri, args.rows, args.reseed, owned)
    warm_up(uri)
    info = machine_info()
    settings = parquet_settings()
    log(f"{rows:,} {TABLE} rows, workers={args.workers}, repeat={args.repeat}, tools={','.join(tools)}, "
        f"measured {' and '.join(measures)}; load average at start {info['loadavg_start'][0]:.2f} "
        f"(other work on the machine distorts timings)")
    runs: dict[str, dict[str, list[dict]]] = {m: {t: [] for t in tools} for m in measures}
    for r in range(args.repeat):  # round-robin so drift in machine load hits every tool alike
        for t in tools:
            if t in skipped:
                continue
            for m in measures:  # a tool's in-process and whole-process runs back to back
                if m == "in-process":
                    res = run_child(t, uri, args.workers, args.ours_filters, args.timeout, settings, rows)
                else:
                    res = run_whole(t, uri, args.workers, args.ours_filters, args.timeout, settings, rows)
                runs[m][t].append(res)
                label = f"  run {r + 1} {t} ({m})"
                if "error" in res:
                    log(f"{label}: FAILED: {res['error']}")
                else:
                    extra = (f", {res['outside_work_seconds']:.2f}s outside the work"
                             if res.get("outside_work_seconds") is not None else "")
                    log(f"{label}: {res['seconds']:.2f}s{extra}, {res['rows']:,} rows, {res['bytes'] / 1e6:.1f} MB, "
                        f"peak RSS {res['peak_rss_mib']:.0f} MiB")
    summaries = {m: [summarize(t, runs[m][t], rows, skipped.get(t)) for t in tools] for m in measures}
    ts = {"in-process": targets(summaries["in-process"]) if "in-process" in summaries else [],
          "whole-process": whole_targets(summaries["whole-process"]) if "whole-process" in summaries else []}
    info["loadavg_end"] = list(os.getloadavg())
    facts = source_facts(uri)
    print()
    print(f"{rows:,} {TABLE} rows, {args.workers} workers/streams/threads, best and median of {args.repeat}; "
          f"parquet: zstd 1 for every tool; {settings['row_group_bytes'] // MiB} MiB row groups and the page index for "
          f"naive_adbc, polars_adbc, connectorx and ours; server shared_buffers {facts['shared_buffers']}")
    titles = {"in-process": "in process: wall time of the work only (imports and start-up excluded), peak RSS = VmHWM",
              "whole-process": "whole process: spawn to exit (interpreter, imports, start-up, work, exit), "
                               "peak RSS and CPU from wait4; outside work s = whole - the tool's own work time"}
    for m in measures:
        print()
        print(titles[m])
        print(fmt_table(summaries[m], markdown=False, whole=m == "whole-process"))
        if ts[m]:
            print("targets:" if m == "in-process" else "targets (issue 17):")
            print(fmt_targets(ts[m], markdown=False))
    if args.markdown:
        for m in measures:
            print()
            print(f"**{titles[m]}**")
            print()
            print(fmt_table(summaries[m], markdown=True, whole=m == "whole-process"))
            if ts[m]:
                print()
                print(fmt_targets(ts[m], markdown=True))
    result = {
        "kind": "bench", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info, "versions": versions(uri), "source": redact(uri), "table": TABLE, "rows": rows,
        "source_facts": facts, "workers": args.workers, "repeat": args.repeat, "tools": tools, "measures": measures,
        "skipped": skipped, "parquet_settings": settings, "ours_filters": args.ours_filters,
        "connectorx_partition": f"{CX_PARTITION_EXPR} AS {CX_PARTITION_COL}, partition_num={args.workers}",
        # the in-process table under the keys it always had; the whole-process one beside it
        "summaries": summaries.get("in-process", []), "targets": ts["in-process"],
        "whole_process": {"summaries": summaries.get("whole-process", []), "targets": ts["whole-process"]},
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
    p.add_argument("--measure", choices=("in-process", "whole-process", "both"), default="in-process",
                   help="in-process: time the work inside a warm child (imports excluded); whole-process: time each tool "
                        "as a fresh process from spawn to exit (ours: the CLI); both: both tables (default in-process)")
    p.add_argument("--whole-process", action="store_true", help="same as --measure both: every tool in process and as a whole process")
    p.add_argument("--one", choices=TOOLS, help=argparse.SUPPRESS)
    p.add_argument("--outdir", help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
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
