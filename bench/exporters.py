"""The exporters that ``bench/run.py`` compares, other than ours: one function per tool.

Used two ways:

* in process: ``bench/run.py --one TOOL`` imports the tool's modules first, then calls
  ``run_tool`` and times the work only;
* as a whole process: ``python bench/exporters.py SPEC.json`` (spawned through
  ``bench/launch.py``) runs one tool from a fresh interpreter, imports included, and
  prints one ``BENCH_RESULT {json}`` line. This module imports nothing heavy at the top
  (no pyarrow, no dataset_assets): each tool imports what it uses, as a user's script
  would, so a whole-process run pays for its own imports only.

Each function returns ``{"seconds", "rows", "bytes", "paths", ...}``: ``seconds`` is wall
time around the work (connecting to the database until the last parquet byte is written
and closed), ``rows`` what the tool says it wrote (None for the COPY tools; the parent
counts the rows of the parquet written, and checks them against the table).

``settings`` (from the engine's ``ParquetOptions``, computed by the parent):
``{"compression", "compression_level", "row_group_bytes", "page_index"}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

MiB = 1 << 20
RESULT_TAG = "BENCH_RESULT "

# connectorx partitions on a numeric column by equal value ranges between its
# min and max and silently drops rows where the column is NULL. The image
# table's primary key is a uuid and its integer columns (width, height,
# filesize) are all nullable, so we partition on coalesce(width, 0), exposed as
# an extra column that is dropped before writing. width is the best spread of
# the three (filesize is log-distributed, height has a long tail), but ranges
# of equal width are still unbalanced (about 3:1 for two partitions).
CX_PARTITION_EXPR = "coalesce(width, 0)"
CX_PARTITION_COL = "cx_part"

# modules each tool needs: imported before the clock starts in process (bench/run.py --one),
# and checked by the parent before a run, so a tool whose packages are missing is skipped
TOOL_MODULES = {
    "copy1": ["psycopg"],
    "copyN": ["psycopg"],
    "naive_adbc": ["adbc_driver_postgresql.dbapi", "pyarrow.parquet"],
    "polars_adbc": ["adbc_driver_postgresql.dbapi", "polars"],
    "connectorx": ["connectorx", "pyarrow.parquet"],
    "duckdb": ["duckdb", "duckdb_extension_postgres_scanner"],
    "dlt_cx": ["dlt", "dlt.sources.sql_database", "sqlalchemy", "psycopg2", "connectorx", "pyarrow.parquet"],
    "dlt_pa": ["dlt", "dlt.sources.sql_database", "sqlalchemy", "psycopg2", "pyarrow.parquet"],
}
# the PyPI package behind each module, for the skip message
MODULE_PACKAGES = {
    "psycopg": "psycopg", "adbc_driver_postgresql": "adbc-driver-postgresql", "pyarrow": "pyarrow",
    "polars": "polars", "connectorx": "connectorx", "duckdb": "duckdb",
    "duckdb_extension_postgres_scanner": "duckdb-extension-postgres-scanner", "dlt": "dlt",
    "sqlalchemy": "sqlalchemy", "psycopg2": "psycopg2-binary",
}
DLT_BACKENDS = {"dlt_cx": "connectorx", "dlt_pa": "pyarrow"}


# --------------------------------------------------------------------------- helpers

def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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


def rows_per_group(nbytes: int, rows: int, target_bytes: int) -> int:
    """Rows per row group for the shared target of in-memory Arrow bytes per row group."""
    if rows <= 0 or nbytes <= 0:
        return 1 << 20
    return max(1, int(target_bytes // (nbytes / rows)))


def libpq_conninfo(uri: str) -> str:
    """A postgresql:// URI as a libpq key=value connection string (what DuckDB's ATTACH takes)."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    p = urlsplit(uri)
    if p.scheme not in ("postgresql", "postgres"):
        return uri  # already a conninfo string
    kv: dict[str, str] = {}
    if p.hostname:
        kv["host"] = p.hostname
    if p.port:
        kv["port"] = str(p.port)
    if p.username:
        kv["user"] = unquote(p.username)
    if p.password:
        kv["password"] = unquote(p.password)
    if p.path.strip("/"):
        kv["dbname"] = unquote(p.path.lstrip("/"))
    kv.update(parse_qsl(p.query))

    def q(v: str) -> str:
        return v if v and not any(c in v for c in " '\\") else "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={q(v)}" for k, v in kv.items())


def sqlalchemy_url(uri: str) -> str:
    """SQLAlchemy 2 knows the dialect as ``postgresql`` (psycopg2 is its default driver)."""
    return "postgresql://" + uri[len("postgres://"):] if uri.startswith("postgres://") else uri


def duckdb_extension_path() -> Path:
    """The postgres extension shipped in the duckdb-extension-postgres-scanner package, for the
    running DuckDB's version (``extensions/v<version>/postgres_scanner.duckdb_extension``)."""
    import duckdb
    import duckdb_extension_postgres_scanner as pkg

    root = Path(pkg.__file__).parent
    exact = root / "extensions" / f"v{duckdb.__version__}" / "postgres_scanner.duckdb_extension"
    if exact.is_file():
        return exact
    found = sorted(root.rglob("*.duckdb_extension"))
    raise RuntimeError(f"duckdb-extension-postgres-scanner has no extension for DuckDB {duckdb.__version__} "
                       f"(found: {', '.join(str(f.relative_to(root)) for f in found) or 'none'}); "
                       "install the package of the same version as duckdb")


def dlt_env(outdir: Path) -> dict[str, str]:
    """dlt's configuration for the dlt tools (environment variables, read when the pipeline runs).

    dlt's parquet writer takes a codec but no level: it calls pyarrow's ParquetWriter without
    compression_level, so zstd is written at Arrow's default zstd level, which is 1 (the same
    bytes as compression_level=1)."""
    return {
        "RUNTIME__DLTHUB_TELEMETRY": "false",           # no network here; nothing sent anyway
        "DLT_DATA_DIR": str(outdir / "dlt-data"),       # nothing in ~/.local/share/dlt
        "DATA_WRITER__COMPRESSION": "zstd",
        "DATA_WRITER__WRITE_PAGE_INDEX": "true",
    }


# --------------------------------------------------------------------------- the tools

def tool_copy(uri: str, table: str, streams: int, outdir: Path, settings: dict) -> dict:
    """Binary COPY into /dev/null over ``streams`` connections (ctid ranges when > 1)."""
    import threading

    import psycopg

    with psycopg.connect(uri, autocommit=True) as c:
        pages = c.execute(f"SELECT pg_relation_size({sql_literal(table)}) / current_setting('block_size')::int").fetchone()[0]
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


def tool_copy1(uri: str, table: str, workers: int, outdir: Path, settings: dict) -> dict:
    return tool_copy(uri, table, 1, outdir, settings)


def tool_copyN(uri: str, table: str, workers: int, outdir: Path, settings: dict) -> dict:  # noqa: N802
    return tool_copy(uri, table, workers, outdir, settings)


def tool_naive_adbc(uri: str, table: str, workers: int, outdir: Path, settings: dict) -> dict:
    import adbc_driver_postgresql.dbapi as pg
    import pyarrow as pa
    import pyarrow.parquet as pq

    s = settings
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
    return {"seconds": seconds, "rows": rows, "bytes": path.stat().st_size, "paths": [str(path)]}


def tool_polars_adbc(uri: str, table: str, workers: int, outdir: Path, settings: dict) -> dict:
    import polars as pl

    s = settings
    path = outdir / "polars_adbc.parquet"
    t0 = time.perf_counter()
    # uuid arrives as Binary (16 bytes) and jsonb as a string; polars 2.1 writes
    # both without casts (uuid as plain 16-byte binary).
    df = pl.read_database_uri(f"SELECT * FROM {quote_ident(table)}", uri, engine="adbc")
    rg = rows_per_group(df.estimated_size(), df.height, s["row_group_bytes"])
    df.write_parquet(path, compression=s["compression"], compression_level=s["compression_level"], row_group_size=rg)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": df.height, "bytes": path.stat().st_size, "paths": [str(path)]}


def tool_connectorx(uri: str, table: str, workers: int, outdir: Path, settings: dict) -> dict:
    import connectorx as cx
    import pyarrow.parquet as pq

    s = settings
    path = outdir / "connectorx.parquet"
    query = f"SELECT *, {CX_PARTITION_EXPR} AS {CX_PARTITION_COL} FROM {quote_ident(table)}"
    t0 = time.perf_counter()
    # connectorx reads uuid and jsonb as strings: no casts needed.
    tbl = cx.read_sql(uri, query, partition_on=CX_PARTITION_COL, partition_num=workers, return_type="arrow")
    tbl = tbl.drop_columns([CX_PARTITION_COL])
    pq.write_table(tbl, path, row_group_size=rows_per_group(tbl.nbytes, tbl.num_rows, s["row_group_bytes"]),
                   compression=s["compression"], compression_level=s["compression_level"], write_page_index=s["page_index"])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": tbl.num_rows, "bytes": path.stat().st_size, "paths": [str(path)]}


def tool_duckdb(uri: str, table: str, workers: int, outdir: Path, settings: dict) -> dict:
    """DuckDB with its postgres extension loaded by path from the duckdb-extension-postgres-scanner
    package (no extension is installed or downloaded at run time): ATTACH read-only, then one COPY
    into one parquet file. The extension reads the table over several connections in one
    snapshot, with binary COPY of ctid ranges (its defaults: pg_use_ctid_scan, pg_use_binary_copy,
    pg_pages_per_task 1000). Row groups: DuckDB's default (122,880 rows)."""
    import duckdb

    s = settings
    path = outdir / "duckdb.parquet"
    con = duckdb.connect(config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "temp_directory": str(outdir / "duckdb-tmp"),  # not .tmp/ in the working directory, should it spill
    })
    con.execute(f"LOAD {sql_literal(str(duckdb_extension_path()))}")  # start-up: outside the timed part in process
    t0 = time.perf_counter()
    con.execute(f"SET threads={int(workers)}")
    con.execute(f"ATTACH {sql_literal(libpq_conninfo(uri))} AS pg (TYPE postgres, READ_ONLY)")
    con.execute(f"COPY (SELECT * FROM pg.public.{quote_ident(table)}) TO {sql_literal(str(path))} "
                f"(FORMAT parquet, COMPRESSION {s['compression']}, COMPRESSION_LEVEL {int(s['compression_level'])})")
    (rows,) = con.fetchone()  # COPY returns the number of rows written
    seconds = time.perf_counter() - t0
    pg_settings = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN "
                                   "('threads', 'pg_use_ctid_scan', 'pg_use_binary_copy', 'pg_pages_per_task', "
                                   "'pg_connection_limit', 'memory_limit')").fetchall())
    con.close()
    return {"seconds": seconds, "rows": rows, "bytes": path.stat().st_size, "paths": [str(path)],
            "duckdb": duckdb.__version__, "duckdb_settings": pg_settings}


def tool_dlt(uri: str, table: str, workers: int, outdir: Path, settings: dict, backend: str) -> dict:
    """dlt's ``sql_table`` with ``backend`` into a local ``filesystem`` destination, parquet files.

    Defaults otherwise: the connectorx backend reads the table in one query on one connection
    (connectorx can only partition on a non-null numeric column of the table, which image lacks),
    the pyarrow backend in chunks of 50,000 rows through SQLAlchemy + psycopg2. The configuration
    (zstd, page index, no telemetry) comes from ``dlt_env`` in the environment."""
    import dlt
    from dlt.sources.sql_database import sql_table

    dest = outdir / "dlt-dest"
    t0 = time.perf_counter()
    source = sql_table(credentials=sqlalchemy_url(uri), table=table, backend=backend)
    pipeline = dlt.pipeline(pipeline_name=f"bench_{backend}", destination=dlt.destinations.filesystem(bucket_url=dest.as_uri()),
                            dataset_name="bench", pipelines_dir=str(outdir / "dlt-pipelines"))
    info = pipeline.run(source, loader_file_format="parquet")
    seconds = time.perf_counter() - t0
    if info.has_failed_jobs:
        raise RuntimeError(f"dlt load has failed jobs: {info}")
    paths = sorted(str(p) for p in (dest / "bench" / table).rglob("*.parquet"))
    norm = pipeline.last_trace.last_normalize_info if pipeline.last_trace else None
    rows = None
    if norm is not None:
        rows = sum(n for t, n in norm.row_counts.items() if t == table)
    return {"seconds": seconds, "rows": rows, "bytes": sum(os.path.getsize(p) for p in paths), "paths": paths,
            "dlt_backend": backend}


def tool_dlt_cx(uri: str, table: str, workers: int, outdir: Path, settings: dict) -> dict:
    return tool_dlt(uri, table, workers, outdir, settings, "connectorx")


def tool_dlt_pa(uri: str, table: str, workers: int, outdir: Path, settings: dict) -> dict:
    return tool_dlt(uri, table, workers, outdir, settings, "pyarrow")


def run_tool(tool: str, uri: str, table: str, workers: int, outdir: Path, settings: dict) -> dict:
    fn = globals().get(f"tool_{tool}")
    if fn is None or tool not in TOOL_MODULES:
        raise SystemExit(f"unknown tool {tool!r}")
    return fn(uri, table, workers, outdir, settings)


def main(argv: list[str]) -> int:
    """Whole-process mode: ``python bench/exporters.py SPEC.json``; SPEC holds tool, source, table,
    workers, outdir, settings. Prints one result line; the parent times the process."""
    spec = json.loads(Path(argv[0]).read_text())
    outdir = Path(spec["outdir"])
    out = run_tool(spec["tool"], spec["source"], spec["table"], spec["workers"], outdir, spec["settings"])
    out["tool"] = spec["tool"]
    print(RESULT_TAG + json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
