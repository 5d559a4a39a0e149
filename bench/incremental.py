"""Incremental snapshots: how long the next snapshot takes after 1% of the rows changed.

In ONE run, on a copy of the benchmark's `image` table (database `bench_inc`,
made from `bench` with CREATE DATABASE ... TEMPLATE, so `bench` stays intact;
a CHECKPOINT after the copy so its writes do not land inside the timings):

1. first incremental snapshot (chooses chunks, reads all)        -> the base
2. --repeat rounds of:
   a. full export (physical order, ctid ranges)                  -> the reference time
   b. change 1% of the rows (`change_rows`: 60% updates, 30% inserts, 10% deletes;
      clustered in key space, 10 runs, or uniformly random with --mode random)
   c. the next incremental snapshot                              -> reads changed chunks only
   (alternating, so both times sample the same phases of a machine whose speed drifts)

Prints each time and the ratio median(next incremental) / median(full export), the
median of the rounds' own ratios, and the ratio of the best times; the target is
<= 0.15 for the clustered case.
Usage: python bench/incremental.py [--rows 1000000] [--mode clustered|random] [--repeat 5] [--shared-buffers 256MB]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (the main benchmark: seeding and the embedded server)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--mode", choices=["clustered", "random"], default="clustered")
    p.add_argument("--fraction", type=float, default=0.01)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--chunk-rows", type=int, default=None, help="override tables.yaml chunk_rows")
    p.add_argument("--repeat", type=int, default=5, help="rounds of full export, change, next snapshot (medians compared)")
    p.add_argument("--shared-buffers", help="shared_buffers of the benchmark's embedded server (default: 25%% of RAM, as bench/run.py)")
    args = p.parse_args(argv)

    import os

    from dataset_assets.local.embedded import drop_database, embedded_uri
    from dataset_assets.export.run import ExportOptions, export_snapshot
    from dataset_assets.local.seed import change_rows
    from dataset_assets.storage.stores import LocalStore

    workers = args.workers or (os.cpu_count() or 2)
    src, owned = bench.resolve_source(None, "bench", args.shared_buffers)
    bench.ensure_seeded(src, args.rows, False, owned)
    server = embedded_uri(bench.DEFAULT_DATA_DIR)
    drop_database(server, "bench_inc")
    with bench.connect_adbc(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'bench' AND pid <> pg_backend_pid()")
        cur.execute('CREATE DATABASE "bench_inc" TEMPLATE "bench"')
        cur.execute("CHECKPOINT")  # the copy's gigabyte of writes is flushed before anything is timed
    uri = bench._with_db(src, "bench_inc")
    bench.warm_up(uri)
    shared_buffers = bench.scalar(uri, "SELECT current_setting('shared_buffers')")

    cfg = bench.WORK_DIR / "inc-tables.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    chunk = f"\n    chunk_rows: {args.chunk_rows}" if args.chunk_rows else ""
    cfg.write_text(f"tables:\n  image:\n    primary_key: identifier\n    tombstone_table: deleted_image{chunk}\n")
    os.environ["DATASET_ASSETS_TABLES"] = str(cfg)
    root = bench.WORK_DIR / "inc-store"
    shutil.rmtree(root, ignore_errors=True)
    store = LocalStore(root)

    def timed(label, date, **kw):
        t0 = time.perf_counter()
        [r] = export_snapshot(uri, ["image"], date, store, ExportOptions(workers=workers, **kw),
                              log=lambda m: print(f"    {m}", flush=True))
        s = time.perf_counter() - t0
        ch = r.manifest.chunking or {}
        print(f"{label:<34} {s:7.2f}s  rows exported {r.manifest.timings['rows_exported']:>9,}  "
              f"files {len(r.manifest.files):>4}  changed chunks {ch.get('changed_chunks', '-')}/{len(ch.get('fingerprints', {})) or '-'}",
              flush=True)
        return s, r

    # Full exports and next snapshots alternate, so both sample the same phases of the machine
    # (its speed drifts by a third over minutes, bench/README.md); the first incremental
    # snapshot, which reads every chunk, makes the base.
    day = dt.date(2026, 1, 1)
    base_s, base = timed("first incremental (all chunks)", day.isoformat())
    fulls, nexts, changes, changed_chunks = [], [], [], []
    for i in range(max(1, args.repeat)):
        day += dt.timedelta(days=1)
        s, _ = timed("full export (ctid ranges)", day.isoformat(), incremental=False)
        fulls.append(s)
        t0 = time.perf_counter()
        changed = change_rows(uri, "image", fraction=args.fraction, seed=1 + i, mode=args.mode)
        print(f"changed rows ({args.mode}): {changed} in {time.perf_counter() - t0:.1f}s", flush=True)
        day += dt.timedelta(days=1)
        s, nxt = timed("next incremental (after the change)", day.isoformat())
        nexts.append(s)
        changes.append(changed)
        changed_chunks.append(nxt.manifest.chunking["changed_chunks"])
        print(f"  round {i + 1}: next / full = {nexts[-1] / fulls[-1]:.3f}", flush=True)
    ratio = statistics.median(nexts) / statistics.median(fulls)
    pair_ratio = statistics.median(n / f for n, f in zip(nexts, fulls))
    best_ratio = min(nexts) / min(fulls)
    print(f"full export: best {min(fulls):.2f}s median {statistics.median(fulls):.2f}s; "
          f"next incremental: best {min(nexts):.2f}s median {statistics.median(nexts):.2f}s")
    print(f"next incremental / full export: median {ratio:.3f}, median of the rounds' ratios {pair_ratio:.3f}, "
          f"best {best_ratio:.3f} (target <= 0.15) {'PASS' if ratio <= 0.15 else 'FAIL'}; server shared_buffers {shared_buffers}")
    out = {"rows": args.rows, "mode": args.mode, "fraction": args.fraction, "workers": workers, "repeat": args.repeat,
           "full_s": fulls, "first_incremental_s": base_s, "next_incremental_s": nexts, "ratio_median": ratio,
           "ratio_best": best_ratio, "ratio_median_of_rounds": pair_ratio, "changed": changes, "changed_chunks": changed_chunks,
           "chunks": len(nxt.manifest.chunking["fingerprints"]), "shared_buffers": shared_buffers,
           "machine": bench.machine_info()}
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"incremental-{args.mode}-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(out, indent=2))
    drop_database(server, "bench_inc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
