"""The `dataset-assets` command line: seed, export, verify, card, publish, release, register, apply-changes.

``release`` does the whole job on the code the Dagster assets run: the export of every table in one
Postgres snapshot, the blocking checks (``release/checks.py``), the card, the push. User errors print
one sentence and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys

from dataset_assets.settings import ENV_HF_REPO, ENV_SOURCE, ENV_STORE, ENV_WEBHOOK, required_in_production
from dataset_assets.errors import UserError

DESTROY_FLAG = "--replace-tables-destroying-data"  # dataset_assets.local.seed.DESTROY_FLAG names it in its refusal


def _source(args) -> str:
    uri = getattr(args, "source", None) or os.environ.get(ENV_SOURCE)
    if required_in_production(ENV_SOURCE, uri, "embedded Postgres"):
        return uri
    from dataset_assets.local.env import default_source_uri  # local mode only

    return default_source_uri()  # the database `make demo` and `make dev` use


def _store(args):
    from dataset_assets.storage.stores import open_store

    return open_store(getattr(args, "store", None) or os.environ.get(ENV_STORE))


def _tables(values: list[str] | None, default: list[str]) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(t.strip() for t in v.split(",") if t.strip())
    return out or default


def cmd_seed(args) -> int:
    """Seeds the embedded demo database (no --source and no DATASET_ASSETS_SOURCE_URI), or a
    database seed made before; any other only with --replace-tables-destroying-data."""
    from dataset_assets.tables import load_tables
    from dataset_assets.local.seed import seed

    named = bool(getattr(args, "source", None) or os.environ.get(ENV_SOURCE))
    uri = _source(args)
    tables = _tables(args.tables, list(load_tables()))
    rows: int | dict = args.rows
    counts = seed(uri, tables=tables, rows=rows, seed=args.seed, replace=True,
                  only_seeded_database=named and not args.replace_tables_destroying_data)
    for t, n in counts.items():
        print(f"seeded {t}: {n:,} rows", file=sys.stderr)
    print(uri)
    return 0


def cmd_export(args) -> int:
    from dataset_assets.tables import load_tables
    from dataset_assets.export.run import ExportOptions, default_workers, export_snapshot
    from dataset_assets.export.progress import TerminalProgress
    from dataset_assets.export.shards import MiB, ParquetOptions
    from dataset_assets.storage.layout import parse_snapshot_date
    from dataset_assets.storage.release_state import ensure_draft

    tables = _tables(args.table, list(load_tables()))
    store = _store(args)
    ensure_draft(store, parse_snapshot_date(args.snapshot))  # a published date is never rewritten, --force or not
    options = ExportOptions(
        workers=args.workers if args.workers is not None else default_workers(),
        parquet=ParquetOptions(shard_bytes=int(args.shard_mib * MiB), compression_level=args.zstd_level),
        force=args.force,
        skip_existing=args.skip_existing,
        incremental=False if args.full else None,
    )
    results = export_snapshot(_source(args), tables, args.snapshot, store, options,
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
    from dataset_assets.storage.layout import parse_snapshot_date
    from dataset_assets.storage.verify import verify_snapshot

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


def cmd_apply_changes(args) -> int:
    from pathlib import Path

    from dataset_assets.export.feed import apply_changes
    from dataset_assets.storage.layout import MANIFEST

    new = Path(args.new)
    manifest = new / MANIFEST if new.is_dir() else new
    report = apply_changes(Path(args.previous), manifest, manifest.parent, Path(args.out))
    for p in report.problems:
        print(f"BAD {p}")
    if not report.ok:
        print(f"The feed did not rebuild the release ({len(report.problems)} problem(s) above); download the release whole.",
              file=sys.stderr)
        return 1
    print(f"ok  {args.out}: {report.files_kept} files kept, {report.files_rebuilt} rebuilt from the feed, {report.rows:,} rows; "
          f"root hash {report.root_hash} = the new manifest's")
    return 0


def _repo(args) -> str:
    repo_id = (args.repo or os.environ.get(ENV_HF_REPO) or "").strip()
    if not repo_id:
        raise UserError(f"No Hugging Face dataset repo given; pass --repo ORG/NAME or set {ENV_HF_REPO}.")
    return repo_id


def _hub(args) -> dict:
    return {"token": os.environ.get("HF_TOKEN") or None, "endpoint": args.endpoint or os.environ.get("HF_ENDPOINT") or None,
            "private": not args.public, "gated": False if args.no_gate else "auto", "apply_settings": args.apply_settings}


def _step(name: str, text: str) -> None:
    """One progress line of ``card`` / ``release`` (stderr; stdout holds the result)."""
    print(f"{name:<7} {text}", file=sys.stderr)


def _card_step(store, date: str, force: bool) -> None:
    """Render and store the card of ``date`` (every table of the date, as the dataset_card asset), unless the
    stored card already describes the stored tables (``--force`` renders it anyway)."""
    from dataset_assets.release.card import write_card
    from dataset_assets.release.checks import card_is_current

    why = "--force" if force else card_is_current(store, date)
    if why is None:
        _step("card", "skipped: the stored card describes the stored tables (their root hashes)")
        return
    card = write_card(store, date)
    for problem in card.problems:
        print(f"warning: {problem}", file=sys.stderr)
    _step("card", f"rendered ({why}): {len(card.text.encode()):,} bytes, {len(card.problems)} problem(s)")


def cmd_card(args) -> int:
    from dataset_assets.storage.layout import card_key, parse_snapshot_date
    from dataset_assets.storage.release_state import ensure_draft

    date = parse_snapshot_date(args.snapshot)
    store = _store(args)
    ensure_draft(store, date)  # a released card is part of an immutable snapshot
    _card_step(store, date, args.force)
    print(store.location(card_key(date)))
    return 0


def cmd_publish(args) -> int:
    from dataset_assets.storage.layout import parse_snapshot_date
    from dataset_assets.release import publish_snapshot
    from dataset_assets.release.notify import load_snippet
    from dataset_assets.release.release import release_snapshot

    date = parse_snapshot_date(args.snapshot)
    repo_id = _repo(args)
    store = _store(args)
    hub = _hub(args)
    if args.dry_run:  # the plan is the command's output, so it goes to stdout
        publish_snapshot(store, date, repo_id, dry_run=True, log=print, **hub)
        return 0
    result, manifests = release_snapshot(store, date, repo_id, webhook_url=os.environ.get(ENV_WEBHOOK), **hub,
                                         log=lambda m: print(m, file=sys.stderr),
                                         warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    print(f"commit {result.commit_sha}")
    print(f"tag    {result.tag}")
    print(f"url    {result.repo_url}/tree/{result.tag}")
    print(f"upload {result.upload_summary()}")
    for m in manifests:
        print(f"load   {load_snippet(result.repo_id, result.tag, m.table)}")
    return 0


def cmd_release(args) -> int:
    """export -> blocking checks -> card -> push (tag, verify, mark released, notify); each step skipped
    when done and valid, a released date only has its tag verified."""
    from dataset_assets.export.progress import TerminalProgress
    from dataset_assets.export.run import ExportOptions, default_workers, export_snapshot
    from dataset_assets.release import checks
    from dataset_assets.release.release import release_snapshot
    from dataset_assets.release.hub import verify_release
    from dataset_assets.storage.layout import date_tables, parse_snapshot_date, table_prefix
    from dataset_assets.storage.manifest import load_manifest
    from dataset_assets.storage.release_state import ensure_draft, is_releasing, publication
    from dataset_assets.tables import in_table_order, load_tables

    date = parse_snapshot_date(args.snapshot)
    hub = _hub(args)
    store = _store(args)
    tables = list(load_tables())

    info = publication(store, date)
    if info is not None:  # released: immutable; only its tag is checked
        released_to = info.get("repo_id") or _repo(args)
        repo_id = (args.repo or os.environ.get(ENV_HF_REPO) or "").strip() or released_to
        if released_to != repo_id:
            raise UserError(f"Snapshot {date} was released to {released_to}, not {repo_id}, and is immutable; "
                            f"release a new snapshot date to publish to {repo_id}.")
        for name in ("export", "checks", "card"):
            _step(name, f"skipped: snapshot {date} is released")
        found = verify_release(store, date, repo_id, token=hub["token"], endpoint=hub["endpoint"])
        _step("push", f"skipped: snapshot {date} is released as {found.tag} at {found.commit[:12]}, "
                      f"which holds exactly the stored snapshot (verified)")
        manifests = [load_manifest(store, table_prefix(date, t), t, date) for t in in_table_order(date_tables(store, date))]
        _release_summary(date, manifests, repo_id, found.tag, found.commit, found.url, "nothing sent (already released)")
        return 0

    repo_id = _repo(args)
    interrupted = is_releasing(store, date)  # a crashed push: its files must stay as they are; the push is finished below
    if interrupted:
        _step("export", f"skipped: a push of snapshot {date} was interrupted; it is finished with the stored files")
    else:
        ensure_draft(store, date)
        why = checks.tables_ready(store, date, tables)
        if why is None:
            _step("export", f"skipped: {', '.join(tables)} complete, read in one Postgres snapshot")
        else:
            _step("export", f"{', '.join(tables)} in one Postgres snapshot ({why}) ...")
            options = ExportOptions(workers=args.workers if args.workers is not None else default_workers(),
                                    force=True)  # a draft date is re-exported whole, as the tables asset does
            results = export_snapshot(_source(args), tables, date, store, options, progress=TerminalProgress(),
                                      log=lambda m: print(f"  {m}", file=sys.stderr))
            for r in results:
                _step("export", f"{r.table}: {r.rows:,} rows, {len(r.manifest.files)} files, {r.manifest.total_bytes:,} bytes")

    passed = 0
    for result in checks.blocking_checks(store, date, tables):
        if not result.passed:
            raise UserError(f"{result.sentence(date)[:-1]}; nothing was pushed.")
        passed += 1
    _step("checks", f"{passed} blocking checks passed ({', '.join(checks.TABLE_CHECKS)} for each of "
                    f"{', '.join(tables)}; {', '.join(checks.DATE_CHECKS)})")

    if interrupted:
        _step("card", "skipped: the interrupted push keeps the stored card")
    else:
        _card_step(store, date, force=False)

    _step("push", f"to {repo_id}: commit, verify, tag snapshot-{date}, mark released, notify ...")
    result, manifests = release_snapshot(store, date, repo_id, webhook_url=os.environ.get(ENV_WEBHOOK), **hub,
                                         log=lambda m: print(f"  {m}", file=sys.stderr),
                                         warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    _release_summary(date, manifests, result.repo_id, result.tag, result.commit_sha or "", result.repo_url,
                     result.upload_summary())
    return 0


def _release_summary(date: str, manifests, repo_id: str, tag: str, commit: str, repo_url: str, upload: str) -> None:
    from dataset_assets.release.notify import load_snippet

    print(f"snapshot {date} released as {tag}")
    for m in manifests:
        print(f"  {m.table:<10} {m.row_count:>12,} rows {len(m.files):>5} files {m.total_bytes:>15,} bytes")
    print(f"  {'total':<10} {sum(m.row_count for m in manifests):>12,} rows {sum(len(m.files) for m in manifests):>5} files "
          f"{sum(m.total_bytes for m in manifests):>15,} bytes")
    print(f"commit {commit}")
    print(f"tag    {tag}")
    print(f"url    {repo_url}/tree/{tag}")
    print(f"upload {upload}")
    for m in manifests:
        print(f"load   from datasets import load_dataset; {m.table} = {load_snippet(repo_id, tag, m.table)}")


def cmd_register(args) -> int:
    """Add a snapshot date to the Dagster instance's partitions, so the Dagster CLI and UI can materialise it."""
    from pathlib import Path

    from dataset_assets.settings import is_production
    from dataset_assets.storage.layout import parse_snapshot_date
    from dataset_assets.tables import load_tables

    date = parse_snapshot_date(args.snapshot)
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        if is_production():
            raise UserError("DAGSTER_HOME is not set; set it to the folder of the Dagster instance the daemon and "
                            "the webserver use, then register the date again.")
        from dataset_assets.local.env import dagster_home  # local mode: the instance of make demo / make dev

        home = os.environ["DAGSTER_HOME"] = str(dagster_home())
    elif not Path(home).is_dir():
        raise UserError(f"DAGSTER_HOME is {home}, which is not a folder; set it to the folder of the Dagster instance "
                        f"(holding dagster.yaml).")
    from dataset_assets.definitions import register_snapshot_dates  # the Dagster layer

    new = register_snapshot_dates([date])
    print(f"{'registered' if new else 'already registered:'} snapshot date {date} in the Dagster instance {home}; "
          f"materialise it with: dagster asset materialize -m dataset_assets.definitions "
          f"--select {','.join(load_tables())} --partition {date}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dataset-assets", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def source_arg(sp):
        sp.add_argument("--source", help=f"postgresql:// URI (default: ${ENV_SOURCE}, else the embedded Postgres)")

    def snapshot_arg(sp):
        sp.add_argument("--snapshot", required=True, help="snapshot date, YYYY-MM-DD")

    def store_arg(sp):
        sp.add_argument("--store", help=f"folder, file:///path or s3://bucket/prefix (default: ${ENV_STORE}, else .local/store)")

    sp = sub.add_parser("seed", help="create the media tables and fill them with realistic sample rows "
                                     "(the embedded demo database, or one seed made before)")
    sp.add_argument("--rows", type=int, default=100_000, help="rows per table (default 100000)")
    sp.add_argument("--tables", action="append", help="comma-separated tables (default: all configured)")
    sp.add_argument("--seed", type=int, default=42, help="seed value; the same value gives the same rows")
    sp.add_argument(DESTROY_FLAG, dest="replace_tables_destroying_data", action="store_true",
                    help="also seed a database that seed did not make (given by --source or $DATASET_ASSETS_SOURCE_URI): "
                         "its tables of these names and their deleted_ tables are DROPPED and recreated")
    source_arg(sp)
    sp.set_defaults(func=cmd_seed)

    sp = sub.add_parser("export", help="export tables at one point in time into a snapshot")
    sp.add_argument("--table", action="append", help="table to export (repeatable; default: all configured)")
    snapshot_arg(sp)
    sp.add_argument("--workers", type=int, default=None, help="parallel readers (default: number of cores)")
    sp.add_argument("--shard-mib", type=float, default=512, help="roll shards at this size (MiB, up to 2048)")
    sp.add_argument("--zstd-level", type=int, default=1, help="zstd compression level (default 1)")
    sp.add_argument("--force", action="store_true", help="replace an existing complete snapshot")
    sp.add_argument("--skip-existing", action="store_true", help="leave existing complete snapshots alone")
    sp.add_argument("--full", action="store_true",
                    help="read the whole table in physical order (ctid ranges) instead of reusing unchanged chunks of the previous snapshot")
    source_arg(sp)
    store_arg(sp)
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("verify", help="re-hash a stored snapshot against its manifests")
    snapshot_arg(sp)
    sp.add_argument("--table", action="append")
    store_arg(sp)
    sp.set_defaults(func=cmd_verify)

    sp = sub.add_parser("apply-changes", help="rebuild a table's new release from its previous release and the new "
                                              "release's change feed, checked against the new manifest's root hash")
    sp.add_argument("--previous", required=True, help="the previous release's table folder (its shards and _manifest.json)")
    sp.add_argument("--new", required=True, help="the new release's table folder holding _manifest.json and changes/ "
                                                 "(or its _manifest.json)")
    sp.add_argument("--out", required=True, help="folder to write the new release's shards into")
    sp.set_defaults(func=cmd_apply_changes)

    def hub_args(sp):
        sp.add_argument("--repo", help=f"dataset repo ORG/NAME (default: ${ENV_HF_REPO}); the token comes from $HF_TOKEN")
        sp.add_argument("--public", action="store_true", help="create the repo public (default: private)")
        sp.add_argument("--no-gate", action="store_true", help="create the repo without access gating (default: gated, auto-approved)")
        sp.add_argument("--apply-settings", action="store_true",
                        help="change an existing repo's visibility and gating to these (default: refuse to push when they differ)")
        sp.add_argument("--endpoint", help="Hub URL (default: $HF_ENDPOINT, else https://huggingface.co)")

    sp = sub.add_parser("card", help="render and store the dataset card (README.md) of a snapshot date")
    snapshot_arg(sp)
    sp.add_argument("--force", action="store_true",
                    help="render it even when the stored card describes the stored tables (e.g. after editing dataset_docs/)")
    store_arg(sp)
    sp.set_defaults(func=cmd_card)

    sp = sub.add_parser("publish", help="push a snapshot to a Hugging Face dataset repo and tag it snapshot-<date>")
    snapshot_arg(sp)
    sp.add_argument("--dry-run", action="store_true", help="print the files to add, delete and keep; change nothing")
    hub_args(sp)
    store_arg(sp)
    sp.set_defaults(func=cmd_publish)

    sp = sub.add_parser("release", help="the whole job: export every table in one Postgres snapshot, run the blocking "
                                        "checks, render the card, push, tag, verify, notify (done steps are skipped)")
    snapshot_arg(sp)
    sp.add_argument("--workers", type=int, default=None, help="parallel readers of the export (default: number of cores)")
    hub_args(sp)
    source_arg(sp)
    store_arg(sp)
    sp.set_defaults(func=cmd_release)

    sp = sub.add_parser("register", help="add a snapshot date to the Dagster instance ($DAGSTER_HOME, else .local/dagster), "
                                         "so `dagster asset materialize --partition <date>` accepts it")
    snapshot_arg(sp)
    sp.set_defaults(func=cmd_register)

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
        print("interrupted: nothing incomplete was committed; rerun to finish.", file=sys.stderr)
        return 130


# Commands whose own process never needs pandas: pyarrow and ADBC import it (0.3 s of start-up and
# exit, about 5 % of a 1M-row export) only to ask whether an input is a DataFrame. `release` builds
# the card with `datasets`, which needs pandas, so it is not one of them.
WITHOUT_PANDAS = frozenset({"export"})


def run() -> int:
    """The console script `dataset-assets` (and `python -m dataset_assets.cli`): :func:`main` in a
    process of its own, which may drop what its command does not use (``dataset_assets.startup``)."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command in WITHOUT_PANDAS:
        from dataset_assets.startup import refuse

        refuse("pandas", f"`dataset-assets {command}` runs without pandas: dataset_assets.cli.WITHOUT_PANDAS")
    try:
        return main()
    finally:
        # The interpreter's last collection walks every object the imports made (0.14 s of exit
        # here, measured in bench/README.md); frozen, they are simply left to the process's end.
        gc.freeze()


if __name__ == "__main__":
    sys.exit(run())
