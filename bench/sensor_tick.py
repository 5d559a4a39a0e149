"""Cost of one change-sensor tick's signal read (``read_signals``) on a small and a big table.

    .venv/bin/python bench/sensor_tick.py                      # 100k vs 5M rows of image
    .venv/bin/python bench/sensor_tick.py --sizes 100000,1000000 --ticks 20

Each size gets its own database (``sensor_<rows>``) on the benchmark's embedded
Postgres (``.local/bench-pg``), seeded with ``dataset_assets.local.seed.seed``
(seed 42, ``image`` and its tombstone table ``deleted_image``). Seeding is
cached: a database whose ``image`` already holds exactly that many rows is
reused (``--reseed`` forces it). 5M rows take a few minutes and ~6 GB.

Per size: 3 untimed warm-up reads, then ``--ticks`` timed calls of
``read_signals`` (a new connection each, as in a tick), median reported, next
to the median cost of only opening and closing a connection, the plan of the
``max(updated_on)`` probe and the buffers it touched. Target: the medians are
the same within noise and well under 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT))

from dataset_assets.tables import TableConfig  # noqa: E402
from dataset_assets.source.signals import read_signals  # noqa: E402
from dataset_assets.local.embedded import embedded_uri, ensure_database  # noqa: E402
from dataset_assets.local.seed import seed  # noqa: E402
from dataset_assets.source.connect import connect  # noqa: E402

DATA_DIR = PROJECT / ".local" / "bench-pg"
TABLES = [TableConfig(name="image", tombstone_table="deleted_image")]


def _scalar(uri: str, sql: str):
    conn = connect(uri)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchone()[0]
    finally:
        conn.close()


def _lines(uri: str, sql: str) -> list[str]:
    import psycopg2  # ADBC runs queries inside COPY, which EXPLAIN cannot be; psycopg2 comes with dagster-postgres

    conn = psycopg2.connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def prepare(server: str, rows: int, reseed: bool) -> str:
    uri = ensure_database(server, f"sensor_{rows}")
    have = None
    if _scalar(uri, "SELECT to_regclass('public.image') IS NOT NULL"):
        have = int(_scalar(uri, "SELECT count(*) FROM image"))
    if reseed or have != rows:
        print(f"seeding {rows:,} rows into {uri} (had {have})...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        seed(uri, tables=["image"], rows=rows, seed=42, replace=True,
             progress=lambda t, d, n: print(f"  {t}: {d:,}/{n:,}", file=sys.stderr, flush=True))
        print(f"  seeded in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    return uri


def measure(uri: str, ticks: int) -> dict:
    for _ in range(3):
        read_signals(uri, TABLES)
    times = []
    for _ in range(ticks):
        t0 = time.perf_counter()
        sig = read_signals(uri, TABLES)["image"]
        times.append(time.perf_counter() - t0)
    conns = []
    for _ in range(ticks):
        t0 = time.perf_counter()
        connect(uri).close()
        conns.append(time.perf_counter() - t0)
    plan = _lines(uri, "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY OFF) SELECT (SELECT max(updated_on) FROM image)::text")
    return {
        "rows": int(_scalar(uri, "SELECT count(*) FROM image")),
        "tombstones": int(_scalar(uri, "SELECT count(*) FROM deleted_image")),
        "size_mb": int(_scalar(uri, "SELECT pg_total_relation_size('image')")) / 2**20,
        "median_ms": statistics.median(times) * 1000,
        "min_ms": min(times) * 1000,
        "max_ms": max(times) * 1000,
        "connect_ms": statistics.median(conns) * 1000,
        "plan": plan,
        "unindexed": sig.unindexed,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,5000000", help="comma-separated row counts of image (default 100000,5000000)")
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--reseed", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    server = embedded_uri(DATA_DIR)
    results = {}
    for rows in sizes:
        uri = prepare(server, rows, args.reseed)
        results[rows] = r = measure(uri, args.ticks)
        print(f"\n{r['rows']:>11,} rows ({r['size_mb']:,.0f} MB with indexes, {r['tombstones']:,} tombstones): "
              f"read_signals median {r['median_ms']:.1f} ms (min {r['min_ms']:.1f}, max {r['max_ms']:.1f}) over {args.ticks} ticks; "
              f"of which opening a connection ~{r['connect_ms']:.1f} ms")
        scan = next((i for i, line in enumerate(r["plan"]) if "Scan" in line), None)
        if scan is not None:
            probe = r["plan"][scan].strip().lstrip("-> ").split("  (")[0]
            buffers = next((line.strip() for line in r["plan"][scan + 1:] if "Buffers" in line), "")
            print(f"  max(updated_on) probe: {probe}; {buffers}")
        print(f"  not read (no index): {', '.join(r['unindexed']) or '-'}")
    if len(sizes) >= 2:
        small, big = results[sizes[0]], results[sizes[-1]]
        print(f"\nratio {sizes[-1]:,} / {sizes[0]:,} rows: {big['median_ms'] / small['median_ms']:.2f} "
              f"(median {big['median_ms']:.1f} ms vs {small['median_ms']:.1f} ms; "
              f"without the connection: {big['median_ms'] - big['connect_ms']:.1f} ms vs {small['median_ms'] - small['connect_ms']:.1f} ms)")
        ok = big["median_ms"] < 200 and big["median_ms"] / small["median_ms"] < 1.5
        print("target (same within noise, well under 200 ms):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
