"""Full export and next incremental snapshot at two shared_buffers sizes, alternating.

On a copy of the benchmark's table (database ``bench_inc``): one incremental base
snapshot, one 1 % clustered change, then ``--rounds`` times for each size in turn:
restart the benchmark's server with that ``shared_buffers``, warm the cache, and
twice a full export and the next incremental snapshot on the same change (each
removed again, so every round measures the same work). Prints the medians per size.
Usage: python bench/shared_buffers_ab.py [--sizes 256MB,6026MB] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (seeding and the embedded server)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=f"256MB,{bench.default_shared_buffers()}")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = p.parse_args(argv)
    sizes = [x.strip() for x in args.sizes.split(",") if x.strip()]

    from dataset_assets.local.embedded import drop_database, embedded_uri
    from dataset_assets.export.run import ExportOptions, export_snapshot
    from dataset_assets.local.seed import change_rows
    from dataset_assets.storage.stores import LocalStore

    src, owned = bench.resolve_source(None, "bench", sizes[0])
    bench.ensure_seeded(src, 1_000_000, False, owned)
    server = embedded_uri(bench.DEFAULT_DATA_DIR)
    drop_database(server, "bench_inc")
    with bench.connect_adbc(server) as conn, conn.cursor() as cur:
        cur.execute('CREATE DATABASE "bench_inc" TEMPLATE "bench"')
        cur.execute("CHECKPOINT")
    uri = bench._with_db(src, "bench_inc")
    cfg = bench.WORK_DIR / "inc-tables.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("tables:\n  image:\n    primary_key: identifier\n    tombstone_table: deleted_image\n")
    os.environ["DATASET_ASSETS_TABLES"] = str(cfg)
    root = bench.WORK_DIR / "sb-ab-store"
    shutil.rmtree(root, ignore_errors=True)
    store = LocalStore(root)
    export_snapshot(uri, ["image"], "2026-01-01", store, ExportOptions(workers=args.workers))
    change_rows(uri, "image", fraction=0.01, seed=1, mode="clustered")

    def timed(date, **kw) -> float:
        t0 = time.perf_counter()
        export_snapshot(uri, ["image"], date, store, ExportOptions(workers=args.workers, **kw))
        s = time.perf_counter() - t0
        shutil.rmtree(store.local_path(f"snapshots/{date}"))
        return s

    full = {s: [] for s in sizes}
    nxt = {s: [] for s in sizes}
    for _ in range(args.rounds):
        for size in sizes:
            bench.resolve_source(None, "bench", size)
            bench.warm_up(uri)
            for _ in range(2):
                full[size].append(timed("2026-02-01", incremental=False))
                nxt[size].append(timed("2026-01-02"))
            print(f"{size:>8}: full {full[size][-2]:.2f} {full[size][-1]:.2f} s, next {nxt[size][-2]:.3f} {nxt[size][-1]:.3f} s", flush=True)
    for size in sizes:
        f, n = statistics.median(full[size]), statistics.median(nxt[size])
        print(f"{size:>8}: full export median {f:.3f} s, next snapshot median {n:.3f} s, ratio {n / f:.3f}")
    drop_database(server, "bench_inc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
