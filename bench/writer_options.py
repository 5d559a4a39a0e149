"""What each parquet writer option costs: the encode side of "where the time goes".

    python bench/writer_options.py [--rows N] [--repeat N] [--source URI] [--markdown]
    make bench-writer                                  (the same, with its defaults)

Exports the benchmark's ``image`` table once with ours (full mode, every row), reads the
shards back into memory (the Arrow table our writer receives, in the same order), then
writes that table to one file per variant and reports the best of ``--repeat`` writes:
wall and CPU seconds (process CPU, so writer threads count), bytes, and each as a ratio to
our settings. Variants change one setting of ours at a time (content-defined chunking, page
index, statistics, dictionaries, compression level), so each line prices one option. Two
more lines price the client's other per-row work: sha256 of the written file (every shard
is hashed for the manifest) and the 128-bit row hash of the clustered layout's row index
(``export.refresh``). Decode (ADBC's binary COPY) and the server's COPY are measured by
``bench/run.py --profile``; together these are the client's whole CPU per row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: seeding, warm-up, shared helpers)

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def export_table(uri: str, workdir: Path) -> tuple[pa.Table, dict, list[str], list[str]]:
    """Ours' full export of every row, read back: the table, our writer settings, and the
    dictionary and statistics columns the engine chose for it."""
    from dataset_assets.export.run import ExportOptions, export_snapshot
    from dataset_assets.export.shards import ParquetOptions
    from dataset_assets.storage.stores.local import LocalStore

    tables_file = bench.ours_tables_file(workdir, bench.TABLE, filters=False)
    os.environ["DATASET_ASSETS_TABLES"] = str(tables_file)
    store = LocalStore(workdir / "store")
    (res,) = export_snapshot(uri, [bench.TABLE], dt.date.today().isoformat(), store,
                             ExportOptions(workers=2, force=True, incremental=False))
    paths = [store.local_path(f"{res.prefix}/{f.path}") for f in res.manifest.files]
    table = pa.concat_tables(pq.read_table(p) for p in paths)
    meta = pq.ParquetFile(paths[0]).metadata
    dictionary, statistics = set(), set()
    rg = meta.row_group(0)
    for i in range(rg.num_columns):
        col = rg.column(i)
        name = col.path_in_schema.split(".")[0]
        if "PLAIN_DICTIONARY" in col.encodings or "RLE_DICTIONARY" in col.encodings:
            dictionary.add(name)
        if col.is_stats_set:
            statistics.add(name)
    names = table.schema.names
    return (table, ParquetOptions().as_dict(), [n for n in names if n in dictionary],
            [n for n in names if n in statistics])


def variants(options: dict, dictionary: list[str], statistics: list[str]) -> list[tuple[str, dict]]:
    ours = {"compression": options["compression"], "compression_level": options["compression_level"],
            "use_dictionary": dictionary, "write_statistics": statistics,
            "write_page_index": options["page_index"],
            "use_content_defined_chunking": options["content_defined_chunking"], "store_schema": True}
    return [
        ("ours (zstd 1, CDC, page index, stats and dictionaries on chosen columns)", ours),
        ("content-defined chunking off", {**ours, "use_content_defined_chunking": False}),
        ("page index off", {**ours, "write_page_index": False}),
        ("statistics off", {**ours, "write_statistics": False}),
        ("statistics on every column", {**ours, "write_statistics": True}),
        ("dictionaries off", {**ours, "use_dictionary": False}),
        ("dictionaries on every column (pyarrow's default)", {**ours, "use_dictionary": True}),
        ("zstd level 3", {**ours, "compression_level": 3}),
        ("no compression", {**ours, "compression": "none", "compression_level": None}),
        ("CDC, page index, statistics off (DuckDB-like)", {**ours, "use_content_defined_chunking": False,
                                                            "write_page_index": False, "write_statistics": False}),
    ]


def write_once(table: pa.Table, path: Path, kwargs: dict, row_group_rows: int, keep: bool = False) -> tuple[float, float, int]:
    """(wall s, CPU s, bytes) of writing ``table`` to ``path`` (removed after unless ``keep``)."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    with pq.ParquetWriter(str(path), table.schema, **{k: v for k, v in kwargs.items() if v is not None}) as w:
        for start in range(0, table.num_rows, row_group_rows):
            w.write_table(table.slice(start, row_group_rows), row_group_size=row_group_rows)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    size = path.stat().st_size
    if not keep:
        path.unlink()
    return wall, cpu, size


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--source", help="a postgresql:// URI (default: the benchmark's embedded database)")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--out", help="JSON results (default bench/results/writer-<timestamp>.json)")
    args = p.parse_args(argv)

    uri, owned = bench.resolve_source(args.source, "bench", None)
    rows = bench.ensure_seeded(uri, args.rows, False, owned)
    bench.warm_up(uri)
    bench.WORK_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bench.WORK_DIR) as tmp:
        work = Path(tmp)
        table, options, dictionary, statistics = export_table(uri, work)
        # the engine's row groups: row_group_bytes of in-memory Arrow each
        row_group_rows = max(1, int(table.num_rows * options["row_group_bytes"] / max(1, table.nbytes)))
        bench.log(f"{table.num_rows:,} rows, {table.nbytes / 1e6:.0f} MB in memory, row groups of {row_group_rows:,} rows; "
                  f"dictionaries on {dictionary}, statistics on {len(statistics)} of {table.num_columns} columns")
        results = []
        for name, kwargs in variants(options, dictionary, statistics):
            runs = [write_once(table, work / "out.parquet", kwargs, row_group_rows) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r[1])
            results.append({"variant": name, "wall_s": round(best[0], 3), "cpu_s": round(best[1], 3), "bytes": best[2]})
            bench.log(f"  {name}: {best[1]:.2f} s CPU, {best[2] / 1e6:.1f} MB")
        # the other per-row client work, on the file ours writes
        path = work / "ours.parquet"
        write_once(table, path, variants(options, dictionary, statistics)[0][1], row_group_rows, keep=True)
        from dataset_assets.storage.manifest import sha256_file

        sha = min(_timed(lambda: sha256_file(path)) for _ in range(args.repeat))
        from dataset_assets.export.refresh import row_hashes

        hashed = [n for n in table.schema.names if n not in bench.VOLATILE]
        row_hashes(table, hashed)  # untimed: a first call in the process took 3.9 s of CPU here, the next ones 0.6 s
        rh = min(_timed(lambda: row_hashes(table, hashed)) for _ in range(args.repeat))
        extra = [{"variant": f"sha256 of the file ({path.stat().st_size / 1e6:.0f} MB)", "cpu_s": round(sha, 3)},
                 {"variant": "row hash of the clustered layout (2 x 64-bit, non-volatile columns)", "cpu_s": round(rh, 3)}]
    base = results[0]
    print()
    print(f"{rows:,} rows; best of {args.repeat}; ratios to ours")
    lines = ["| variant | CPU s | x ours | MB | x ours |", "|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['variant']} | {r['cpu_s']:.2f} | {r['cpu_s'] / base['cpu_s']:.2f} | "
                     f"{r['bytes'] / 1e6:.1f} | {r['bytes'] / base['bytes']:.3f} |")
    for r in extra:
        lines.append(f"| {r['variant']} | {r['cpu_s']:.2f} | {r['cpu_s'] / base['cpu_s']:.2f} | | |")
    print("\n".join(lines) if args.markdown else "\n".join(ln.replace("|", " ") for ln in lines if not ln.startswith("|---")))
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"writer-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"kind": "writer_options", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                               "machine": bench.machine_info(), "rows": rows, "repeat": args.repeat,
                               "results": results + extra}, indent=2))
    bench.log(f"results in {out}")
    return 0


def _timed(fn) -> float:
    cpu0 = time.process_time()
    fn()
    return time.process_time() - cpu0


if __name__ == "__main__":
    sys.exit(main())
