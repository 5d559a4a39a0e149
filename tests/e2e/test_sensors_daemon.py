"""End to end with a real daemon: `dagster-daemon run -w workspace.yaml` runs the
change sensor and the automation sensor against a seeded database.

First the daemon snapshots both tables and then the card for today on its own;
then rows of `audio` change, and within a few ticks a new `audio`
materialisation and a new `dataset_card` materialisation of today appear,
while `image` is left alone.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import dagster as dg

from platform_helpers import ROOT, dagster_process

TIMEOUT_FIRST = 150   # daemon start, two table runs, the card run
TIMEOUT_CHANGE = 120  # a sensor tick, the audio run, an automation tick, the card run


def _latest(instance, asset: str, date: str):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[date]), limit=1
    ).records
    return records[0].storage_id if records else None


def _diagnose(instance, log: Path) -> str:
    runs = instance.get_runs(limit=20)
    lines = [f"{r.run_id[:8]} {r.status.value} {r.tags.get('dagster/run_key') or ''} {sorted(r.asset_selection or [])}" for r in runs]
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    return "runs:\n" + "\n".join(lines) + "\ndaemon log tail:\n" + tail


def _wait(instance, log: Path, proc, timeout: float, what: str, done) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the daemon exited ({proc.returncode})\n" + _diagnose(instance, log)
        if done():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n" + _diagnose(instance, log))


def test_daemon_snapshots_changed_table_and_refreshes_the_card(mutable_uri, tmp_path):
    from dataset_assets.local.seed import change_rows

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    store_dir = tmp_path / "store"
    log = tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if k != "DATASET_ASSETS_SENSORS"}
    env.update(DAGSTER_HOME=str(home), DATASET_ASSETS_SOURCE_URI=mutable_uri, DATASET_ASSETS_STORE_URL=str(store_dir),
               DATASET_ASSETS_SENSOR_INTERVAL="5", DATASET_ASSETS_AUTOMATION_INTERVAL="5", DATASET_ASSETS_WORKERS="1")
    # create the instance's sqlite storages before the daemon starts: two processes migrating
    # fresh storages at once can trip over each other (alembic revision errors)
    instance = dg.DagsterInstance.from_config(str(home))
    instance.get_runs(limit=1)
    instance.all_instigator_state()
    instance.fetch_materializations(dg.AssetKey("image"), limit=1)
    with dagster_process("dagster-daemon", ["run", "-w", str(ROOT / "workspace.yaml")], env, log) as proc, instance:
        today = dt.datetime.now(dt.timezone.utc).date().isoformat()
        t0 = time.time()

        def first_release():
            image, audio, card = (_latest(instance, a, today) for a in ("image", "audio", "dataset_card"))
            return image and audio and card and card > max(image, audio)

        _wait(instance, log, proc, TIMEOUT_FIRST, "the first snapshots and their card", first_release)
        assert (store_dir / "snapshots" / today / "README.md").exists()
        t1 = time.time()
        image0, audio0, card0 = (_latest(instance, a, today) for a in ("image", "audio", "dataset_card"))
        # (whether or not the sensor has seen the first runs finish yet: a change made while a
        # request is pending is requested once that request completes)
        changed = change_rows(mutable_uri, "audio", 0.02, seed=21, kinds=("update", "delete"))
        assert changed["update"] > 0

        def second_release():
            audio, card = _latest(instance, "audio", today), _latest(instance, "dataset_card", today)
            return audio > audio0 and card > audio

        _wait(instance, log, proc, TIMEOUT_CHANGE, "the audio snapshot and a new card", second_release)
        t2 = time.time()
        assert _latest(instance, "image", today) == image0, "image was snapshotted again"
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "upstream_changes"}))
        keys = sorted(r.tags["dagster/run_key"] for r in runs)
        tables = [k.split("/")[0] for k in keys]
        # audio: the first snapshot and the change (a third request is possible, not more: if the
        # change's statistics were published just after the tick that saw max(updated_on) move)
        assert tables.count("image") == 1 and 2 <= tables.count("audio") <= 3, keys
        assert _latest(instance, "dataset_card", today) > card0
        print(f"first release {t1 - t0:.0f}s, change to new card {t2 - t1:.0f}s")
