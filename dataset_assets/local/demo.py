"""`make demo`: seed the embedded Postgres, register today's snapshot and
materialise every table, its checks and the dataset card through Dagster, on a
real instance in .local/dagster; then print where everything is."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

from dataset_assets.errors import UserError


def _table_rows(uri: str, table: str) -> int | None:
    from dataset_assets.source.connect import connect

    conn = connect(uri)
    try:
        cur = conn.cursor()
        cur.execute("SELECT to_regclass($1) IS NOT NULL", parameters=(table,))
        if not cur.fetchone()[0]:
            return None
        cur.execute(f'SELECT count(*) FROM "{table}"')
        return int(cur.fetchone()[0])
    finally:
        conn.close()


def _statistics_settled(uri: str, timeout: float = 15.0) -> None:
    """Wait until the seeder's row counts reach the statistics the change signals read (a backend
    reports them when it exits, a moment after it closed): the snapshot then records the signal a
    later `make dev` compares with, and the daemon re-exports nothing."""
    import time

    from dataset_assets.source.signals import read_signals
    from dataset_assets.tables import load_tables

    tables = list(load_tables().values())
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        current = read_signals(uri, tables)
        if current == last:
            return
        last = current
        time.sleep(1.0)


def run(image_rows: int, audio_rows: int, snapshot: str | None) -> int:
    from dataset_assets.local import env as local_env

    from dataset_assets.settings import ENV_SOURCE

    given = bool(os.environ.get(ENV_SOURCE))  # a database the user named: seeded only if seed made it
    env = local_env.prepare()
    uri = env[ENV_SOURCE]
    want = {"image": image_rows, "audio": audio_rows}
    if any(_table_rows(uri, t) != n for t, n in want.items()):
        from dataset_assets.local.seed import seed

        print(f"seeding the embedded Postgres: {image_rows:,} image and {audio_rows:,} audio rows ...", file=sys.stderr)
        seed(uri, tables=list(want), rows=want, seed=42, replace=True, only_seeded_database=given)
        _statistics_settled(uri)
    else:
        print("the embedded Postgres already holds the sample rows", file=sys.stderr)

    import dagster as dg

    from dataset_assets.definitions import asset_checks, assets, defs
    from dataset_assets.partitions import snapshots
    from dataset_assets.settings import ENV_HF_REPO, ENV_HF_TOKEN

    date = snapshot or dt.date.today().isoformat()
    instance = dg.DagsterInstance.get()
    if not instance.has_dynamic_partition(snapshots.name, date):
        instance.add_dynamic_partitions(snapshots.name, [date])
    print(f"materialising snapshot {date} through Dagster (instance {env['DAGSTER_HOME']}) ...", file=sys.stderr)
    selection = dg.AssetSelection.all() | dg.AssetSelection.all_asset_checks()
    if not os.environ.get(ENV_HF_REPO):  # without a repo there is nothing to push to
        selection = selection - dg.AssetSelection.assets("hub_release")
        print(f"(set {ENV_HF_REPO} and {ENV_HF_TOKEN} to also push the snapshot to the Hub)", file=sys.stderr)
    result = dg.materialize([*assets, *asset_checks], instance=instance, partition_key=date, selection=selection,
                            resources=defs.resources, raise_on_error=False,
                            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    failed = [c for c in checks if not c.passed]
    if not result.success or failed:
        for c in failed:
            print(f"check failed: {c.asset_key.to_user_string()} {c.check_name}", file=sys.stderr)
        for e in result.all_events:
            if e.is_failure:
                print(f"failed: {e.message}", file=sys.stderr)
        return 1
    return summarise(date, env, len(checks))


def summarise(date: str, env: dict, n_checks: int) -> int:
    from dataset_assets.tables import load_tables
    from dataset_assets.storage.layout import date_prefix, table_prefix
    from dataset_assets.storage.manifest import load_manifest
    from dataset_assets.storage.stores import open_store

    store = open_store(env["DATASET_ASSETS_STORE_URL"])
    folder = store.local_path(date_prefix(date))
    print()
    print(f"Snapshot {date}: {n_checks} checks passed")
    for t in load_tables():
        m = load_manifest(store, table_prefix(date, t), t, date)
        print(f"  {t:<8} {m.row_count:>10,} rows  {len(m.files):>3} files  {m.total_bytes / 1e6:8.1f} MB  root {m.root_hash[:16]}")
    where = folder if folder is not None else f"{store.url}/{date_prefix(date)}"  # a remote store has no local folder
    print(f"Files:  {where}")
    print(f"Card:   {where}/README.md")
    print()
    if folder is not None:
        print("Load it with datasets:")
        print("  import datasets")
        print(f'  ds = datasets.load_dataset("{folder}", "image", split="train")')
        print('  print(ds.num_rows, ds.features)')
        print()
    print("Explore and materialise the next partition in the UI:  make dev   (then open http://127.0.0.1:3000)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dataset_assets.local.demo")
    p.add_argument("--image-rows", type=int, default=100_000)
    p.add_argument("--audio-rows", type=int, default=20_000)
    p.add_argument("--snapshot", help="snapshot date (default: today)")
    args = p.parse_args(argv)
    try:
        return run(args.image_rows, args.audio_rows, args.snapshot)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
