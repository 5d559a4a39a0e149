"""The release loop with a real daemon, over three snapshot dates moved by DATASET_ASSETS_TODAY.

Day 1: an empty store; the daemon snapshots both tables, the card and the push follow: release 1.
Day 2: a NEW Dagster instance (a first daemon start) on the same store: the sensor adopts the
store's newest snapshot as its baseline and requests nothing; then rows of `image` change:
release 2, the whole date, read in one Postgres snapshot.
Day 3: `dagster dev` (webserver + daemon) on that instance; rows of `audio` change and, at the
same moment, a second run for day 3 is submitted by hand: the runs of the date never overlap
and there is one release 3, whose `audio` holds the change and whose `image` is day 2's, file
for file. Releasing day 1 again afterwards verifies its tag and leaves `main` at day 3.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from hub_server import start_hub_server
from platform_helpers import ROOT, dagster_process, run_cli

from dataset_assets.local.env import DAGSTER_YAML
from dataset_assets.storage.layout import table_prefix
from dataset_assets.storage.manifest import load_manifest
from dataset_assets.storage.release_state import is_published
from dataset_assets.storage.stores import LocalStore

REPO = "test-org/release-loop"
D1, D2, D3 = "2026-06-01", "2026-06-02", "2026-06-03"
TIMEOUT = 300  # one release: a sensor tick, the tables run, an automation tick, card and push runs


def _home(path: Path) -> dg.DagsterInstance:
    path.mkdir()
    (path / "dagster.yaml").write_text(DAGSTER_YAML)
    instance = dg.DagsterInstance.from_config(str(path))
    # create the sqlite storages before the daemon: two processes migrating at once trip over each other
    instance.get_runs(limit=1)
    instance.all_instigator_state()
    instance.fetch_materializations(dg.AssetKey("image"), limit=1)
    return instance


def _diagnose(instance, log: Path) -> str:
    runs = instance.get_runs(limit=30)
    lines = [f"{r.run_id[:8]} {r.status.value} {r.tags.get('dagster/partition')} {r.tags.get('dagster/run_key') or ''} "
             f"{sorted(k.to_user_string() for k in (r.asset_selection or []))}" for r in runs]
    return "runs:\n" + "\n".join(lines) + "\nlog tail:\n" + (log.read_text(errors="replace")[-4000:] if log.exists() else "")


def _wait(instance, log, proc, what, done, timeout=TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the daemon exited ({proc.returncode})\n" + _diagnose(instance, log)
        if done():
            return time.time()
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n" + _diagnose(instance, log))


def _ticks(instance, sensor: str) -> list:
    for state in instance.all_instigator_state():
        if state.instigator_name == sensor:
            return list(instance.get_ticks(state.instigator_origin_id, state.selector_id))
    return []


def _released(store, hub, date):
    def done():
        return is_published(store, date) and f"snapshot-{date}" in hub.state.repos[("dataset", REPO)].tags
    return done


def _settled(instance):
    def done():
        return all(r.is_finished for r in instance.get_runs())
    return done


def _files(store, date, table) -> list[tuple[str, str]]:
    return sorted((f.path, f.sha256) for f in load_manifest(store, table_prefix(date, table), table, date).files)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_three_days_of_the_release_loop(mutable_uri, tmp_path):
    from dataset_assets.local.seed import change_rows

    token = "hf_local_" + secrets.token_hex(16)
    hub = start_hub_server(tmp_path / "hub", token=token)
    store_dir = tmp_path / "store"
    store = LocalStore(store_dir)
    base = {k: v for k, v in os.environ.items() if k != "DATASET_ASSETS_SENSORS"}
    base.update(DATASET_ASSETS_SOURCE_URI=mutable_uri, DATASET_ASSETS_STORE_URL=str(store_dir),
                DATASET_ASSETS_SENSOR_INTERVAL="1", DATASET_ASSETS_AUTOMATION_INTERVAL="1",
                DATASET_ASSETS_WORKERS="1", DATASET_ASSETS_HF_REPO=REPO, HF_TOKEN=token, HF_ENDPOINT=hub.endpoint,
                HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    timeline = []
    try:
        # --- day 1: an empty store --------------------------------------------------------------
        home_a = tmp_path / "home-a"
        instance = _home(home_a)
        log = tmp_path / "daemon-1.log"
        env = dict(base, DAGSTER_HOME=str(home_a), DATASET_ASSETS_TODAY=D1)
        with dagster_process("dagster-daemon", ["run", "-w", str(ROOT / "workspace.yaml")], env, log) as proc, instance:
            t0 = time.time()
            t1 = _wait(instance, log, proc, "release 1", _released(store, hub, D1))
            _wait(instance, log, proc, "the runs of day 1 to end", _settled(instance))
            assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs()), _diagnose(instance, log)
            timeline.append(f"day 1: release {t1 - t0:.0f}s after the daemon started, "
                            f"{len(instance.get_runs())} runs")

        # --- day 2: a first daemon start on an existing store requests nothing ------------------
        home_b = tmp_path / "home-b"
        instance = _home(home_b)
        log = tmp_path / "daemon-2.log"
        env = dict(base, DAGSTER_HOME=str(home_b), DATASET_ASSETS_TODAY=D2)
        with dagster_process("dagster-daemon", ["run", "-w", str(ROOT / "workspace.yaml")], env, log) as proc, instance:
            t0 = time.time()
            _wait(instance, log, proc, "three change-sensor ticks",
                  lambda: len([t for t in _ticks(instance, "upstream_changes") if t.status.value != "STARTED"]) >= 3,
                  timeout=120)
            ticks = _ticks(instance, "upstream_changes")
            assert not instance.get_runs(), _diagnose(instance, log)
            assert not instance.get_dynamic_partitions("snapshots")
            reasons = " | ".join(t.skip_reason or "" for t in ticks)
            assert "baseline adopted" in reasons and "no table changed" in reasons, reasons
            timeline.append(f"day 2: {len(ticks)} ticks in {time.time() - t0:.0f}s, no run, no date registered")
            changed = change_rows(mutable_uri, "image", 0.02, seed=31, kinds=("update",))
            assert changed["update"] > 0
            t0 = time.time()
            t1 = _wait(instance, log, proc, "release 2", _released(store, hub, D2))
            _wait(instance, log, proc, "the runs of day 2 to end", _settled(instance))
            assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs()), _diagnose(instance, log)
            timeline.append(f"day 2: image changed -> release 2 in {t1 - t0:.0f}s")
        day1_image, day2_image = _files(store, D1, "image"), _files(store, D2, "image")
        assert day2_image != day1_image
        assert _files(store, D2, "audio") == _files(store, D1, "audio")  # unchanged: its shards reused

        # --- day 3: a change and a second, overlapping request for the same date ----------------
        log = tmp_path / "dev-3.log"
        port = _free_port()
        env = dict(base, DAGSTER_HOME=str(home_b), DATASET_ASSETS_TODAY=D3)
        with dagster_process("dagster", ["dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                             env, log) as proc, instance:
            from dagster_graphql import DagsterGraphQLClient

            client = DagsterGraphQLClient("127.0.0.1", port_number=port)
            _wait(instance, log, proc, "the webserver", lambda: _answers(port), timeout=180)
            changed = change_rows(mutable_uri, "audio", 0.02, seed=32, kinds=("update", "delete"))
            assert changed["update"] > 0
            t0 = time.time()
            _wait(instance, log, proc, "the sensor's request for day 3",
                  lambda: instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": D3})), timeout=120)
            instance.add_dynamic_partitions("snapshots", [D3])
            by_hand = _submit(client, D3)
            t1 = _wait(instance, log, proc, "release 3", _released(store, hub, D3))
            _wait(instance, log, proc, "every run of day 3 to end", lambda: all(
                r.is_finished for r in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": D3}))))
            records = sorted(instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/partition": D3})),
                             key=lambda r: r.start_time or 0)
            timeline.append(f"day 3: audio changed -> release 3 in {t1 - t0:.0f}s; runs of the date: " + ", ".join(
                f"{r.dagster_run.run_id[:8]} {r.dagster_run.status.value} "
                f"{sorted(k.to_user_string() for k in (r.dagster_run.asset_selection or []))}" for r in records))
            assert any(r.dagster_run.run_id == by_hand for r in records)
            for a, b in zip(records, records[1:]):  # one writer per date: never two runs at once
                assert a.end_time <= b.start_time, _diagnose(instance, log)
        tags = hub.state.repos[("dataset", REPO)].tags
        assert hub.head(REPO) == tags[f"snapshot-{D3}"]
        assert sorted(t for t in tags if t.startswith("snapshot-")) == [f"snapshot-{d}" for d in (D1, D2, D3)]
        assert _files(store, D3, "image") == day2_image  # image did not change: day 2's files, reused
        assert _files(store, D3, "audio") != _files(store, D2, "audio")
        d3_audio = {r["identifier"]: r for f in sorted((store_dir / "snapshots" / D3 / "audio").glob("*.parquet"))
                    for r in pq.read_table(f, columns=["identifier", "title"]).to_pylist()}
        assert len(d3_audio) == _source_rows(mutable_uri)  # the change: deletes gone, updates in

        # --- an older date never moves main ------------------------------------------------------
        head = hub.head(REPO)
        again = run_cli("publish", "--snapshot", D1, "--store", str(store_dir), env=env)
        assert again.returncode == 0, again.stderr
        assert hub.head(REPO) == head
        print("\n".join(timeline))
    finally:
        hub.stop()


def _answers(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _submit(client, date: str, timeout: float = 120) -> str:
    """A run of every table of ``date``, submitted by hand (retried while the code location loads)."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            return client.submit_job_execution(
                "__ASSET_JOB", repository_location_name="dataset_assets", repository_name="__repository__",
                asset_selection=[["image"], ["audio"]], tags={"dagster/partition": date})
        except Exception as exc:  # noqa: BLE001 - the code location may still be loading
            last = exc
            time.sleep(2)
    raise AssertionError(f"the webserver never accepted the run: {last!r}")


def _source_rows(uri: str) -> int:
    import psycopg

    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT count(*) FROM audio a WHERE NOT coalesce(removed_from_source, false) "
                            "AND NOT EXISTS (SELECT 1 FROM deleted_audio d WHERE d.identifier = a.identifier)").fetchone()[0]
