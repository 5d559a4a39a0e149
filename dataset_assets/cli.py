"""The `dataset-assets` command line: seed, export, verify, publish, demo, dev.

User errors print one sentence and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import UserError

SOURCE_ENV = "DATASET_ASSETS_SOURCE_URI"
STORE_ENV = "DATASET_ASSETS_STORE_URL"


def _source(args) -> str:
    uri = getattr(args, "source", None) or os.environ.get(SOURCE_ENV)
    if uri:
        return uri
    from .engine.embedded import embedded_uri

    return embedded_uri()


def _store(args):
    from .stores import open_store

    return open_store(getattr(args, "store", None) or os.environ.get(STORE_ENV))


def _tables(values: list[str] | None, default: list[str]) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(t.strip() for t in v.split(",") if t.strip())
    return out or default


def cmd_seed(args) -> int:
    from .config import load_tables
    from .engine.seed import seed

    uri = _source(args)
    tables = _tables(args.tables, list(load_tables()))
    rows: int | dict = args.rows
    counts = seed(uri, tables=tables, rows=rows, seed=args.seed, replace=True)
    for t, n in counts.items():
        print(f"seeded {t}: {n:,} rows", file=sys.stderr)
    print(uri)
    return 0


def cmd_export(args) -> int:
    from .config import load_tables
    from .engine.export import ExportOptions, export_snapshot
    from .engine.progress import TerminalProgress
    from .engine.writer import MiB, ParquetOptions

    tables = _tables(args.table, list(load_tables()))
    options = ExportOptions(
        workers=args.workers or (os.cpu_count() or 2),
        parquet=ParquetOptions(shard_bytes=int(args.shard_mib * MiB), compression_level=args.zstd_level),
        force=args.force,
        skip_existing=args.skip_existing,
    )
    results = export_snapshot(_source(args), tables, args.snapshot, _store(args), options,
                              progress=TerminalProgress(), log=lambda m: print(m, file=sys.stderr))
    summary = [
        {"table": r.table, "snapshot": r.snapshot, "rows": r.rows, "files": len(r.manifest.files),
         "bytes": r.manifest.total_bytes, "root_hash": r.manifest.root_hash, "location": f"{r.store_url}/{r.prefix}",
         "skipped": r.skipped, "seconds": r.manifest.timings.get("total_seconds")}
        for r in results
    ]
    print(json.dumps(summary, indent=2))
    return 0


def cmd_verify(args) -> int:
    from .engine.export import parse_snapshot_date
    from .engine.verify import verify_snapshot

    reports = verify_snapshot(_store(args), parse_snapshot_date(args.snapshot), _tables(args.table, []))
    bad = 0
    for r in reports:
        if r.ok:
            print(f"ok  {r.prefix}: {r.files_checked} files match the manifest")
        else:
            bad += 1
            for p in r.problems:
                print(f"BAD {p}")
    if bad:
        print(f"{bad} table(s) of snapshot {args.snapshot} do not match their manifests; re-export them with --force.", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dataset-assets", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def source_arg(sp):
        sp.add_argument("--source", help=f"postgresql:// URI (default: ${SOURCE_ENV}, else the embedded Postgres)")

    def store_arg(sp):
        sp.add_argument("--store", help=f"folder, file:///path or s3://bucket/prefix (default: ${STORE_ENV}, else .local/store)")

    sp = sub.add_parser("seed", help="create the media tables and fill them with realistic sample rows")
    sp.add_argument("--rows", type=int, default=100_000, help="rows per table (default 100000)")
    sp.add_argument("--tables", action="append", help="comma-separated tables (default: all configured)")
    sp.add_argument("--seed", type=int, default=42, help="seed value; the same value gives the same rows")
    source_arg(sp)
    sp.set_defaults(func=cmd_seed)

    sp = sub.add_parser("export", help="export tables at one point in time into a snapshot")
    sp.add_argument("--table", action="append", help="table to export (repeatable; default: all configured)")
    sp.add_argument("--snapshot", required=True, help="snapshot date, YYYY-MM-DD")
    sp.add_argument("--workers", type=int, default=None, help="parallel readers (default: number of cores)")
    sp.add_argument("--shard-mib", type=float, default=512, help="roll shards at this size (MiB, up to 2048)")
    sp.add_argument("--zstd-level", type=int, default=1, help="zstd compression level (default 1)")
    sp.add_argument("--force", action="store_true", help="replace an existing complete snapshot")
    sp.add_argument("--skip-existing", action="store_true", help="leave existing complete snapshots alone")
    source_arg(sp)
    store_arg(sp)
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("verify", help="re-hash a stored snapshot against its manifests")
    sp.add_argument("--snapshot", required=True)
    sp.add_argument("--table", action="append")
    store_arg(sp)
    sp.set_defaults(func=cmd_verify)

    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: nothing incomplete was published; rerun to finish.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
