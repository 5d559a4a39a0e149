"""The release loop's parts on a real Postgres, a real Dagster instance and the local Hub: a date is
read in one Postgres snapshot and recorded so; the store's snapshot is the sensor's baseline; a push
in progress or done blocks writers of its date; releases move forward; stalls are visible.
(The loop itself, with a real daemon over three days: tests/e2e/test_release_loop.py.)"""

from __future__ import annotations

import time

import dagster as dg
import pytest

from platform_helpers import check_results, materialize, resources

from dataset_assets.errors import UserError
from dataset_assets.release.card import write_card
from dataset_assets.release.hub import publish_snapshot
from dataset_assets.storage.layout import table_prefix
from dataset_assets.storage.manifest import load_manifest
from dataset_assets.storage.release_state import begin_release, end_release, mark_published
from dataset_assets.storage.stores import LocalStore

REPO = "test-org/release-loop"
D0, D1, D2 = "2026-05-01", "2026-05-02", "2026-05-03"


def test_every_table_of_a_date_is_read_in_one_postgres_snapshot(defs_module, instance, seeded_uri, tmp_path):
    store_dir = tmp_path / "store"
    result = materialize(defs_module, instance, D1, seeded_uri, store_dir)
    assert result.success
    assert check_results(result)[("dataset_card", "one_postgres_snapshot")]
    store = LocalStore(store_dir)
    image, audio = (load_manifest(store, table_prefix(D1, t), t, D1) for t in ("image", "audio"))
    assert image.source_snapshot == audio.source_snapshot and image.source_snapshot["snapshot_id"]
    # the change signal each table had when it was read: the baseline a starting sensor adopts
    assert image.change_signal and audio.change_signal and image.change_signal != audio.change_signal
    # one run materialised both tables (the multi-asset cannot be split)
    runs = {instance.get_latest_materialization_event(dg.AssetKey(t)).run_id for t in ("image", "audio")}
    assert len(runs) == 1


def test_tables_read_in_different_postgres_snapshots_fail_the_card_check(defs_module, instance, seeded_uri, tmp_path):
    from dataset_assets.cli import main

    store_dir = tmp_path / "store"
    # two CLI exports, one table each: two Postgres snapshots for one date
    assert main(["export", "--table", "image", "--snapshot", D1, "--source", seeded_uri, "--store", str(store_dir)]) == 0
    assert main(["export", "--table", "audio", "--snapshot", D1, "--source", seeded_uri, "--store", str(store_dir)]) == 0
    result = materialize(defs_module, instance, D1, seeded_uri, store_dir,
                         selection=dg.AssetSelection.assets("dataset_card"))
    assert not check_results(result)[("dataset_card", "one_postgres_snapshot")]


def test_a_push_in_progress_or_done_blocks_the_writers_of_its_date(defs_module, instance, seeded_uri, tmp_path):
    store_dir = tmp_path / "store"
    store = LocalStore(store_dir)
    assert materialize(defs_module, instance, D1, seeded_uri, store_dir).success
    begin_release(store, D1, {"repo_id": REPO})
    again = materialize(defs_module, instance, D1, seeded_uri, store_dir,
                        selection=dg.AssetSelection.assets("image", "audio").without_checks())
    assert not again.success
    [failure] = [e.event_specific_data.error.message for e in again.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"The push of snapshot {D1} to the Hub is running or was interrupted" in failure
    end_release(store, D1)
    mark_published(store, D1, {"repo_id": REPO})
    again = materialize(defs_module, instance, D1, seeded_uri, store_dir,
                        selection=dg.AssetSelection.assets("dataset_card"))
    assert not again.success


def _release(store, date, hub_server, uri, tables=("image", "audio")):
    from dataset_assets.export.run import export_snapshot

    export_snapshot(uri, list(tables), date, store)
    write_card(store, date, list(tables))
    return publish_snapshot(store, date, REPO, token=hub_server.token, endpoint=hub_server.endpoint)


def test_releases_move_forward(hub_server, seeded_uri, tmp_path):
    store = LocalStore(tmp_path / "store")
    first = _release(store, D1, hub_server, seeded_uri)
    second = _release(store, D2, hub_server, seeded_uri)
    head = hub_server.head(REPO)
    assert head == second.commit_sha != first.commit_sha
    # an older date that is already released (a retry, a backfill): verified, main stays
    again = publish_snapshot(store, D1, REPO, token=hub_server.token, endpoint=hub_server.endpoint)
    assert not again.committed and again.commit_sha == first.commit_sha
    assert hub_server.head(REPO) == head
    # an older date never released: refused in one sentence, main stays
    from dataset_assets.export.run import export_snapshot

    export_snapshot(seeded_uri, ["image", "audio"], D0, store)
    write_card(store, D0, ["image", "audio"])
    with pytest.raises(UserError, match=f"already holds the newer release snapshot-{D2}, and main only moves forward"):
        publish_snapshot(store, D0, REPO, token=hub_server.token, endpoint=hub_server.endpoint)
    assert hub_server.head(REPO) == head
    assert f"snapshot-{D0}" not in hub_server.state.repos[("dataset", REPO)].tags


def test_a_stalled_date_fails_released_in_time_with_the_reason(instance, seeded_uri, tmp_path, monkeypatch, defs_module):
    from dataset_assets.sensors.stalls import build_stall_sensor

    monkeypatch.setenv("DATASET_ASSETS_RELEASE_WITHIN", "1")
    store_dir = tmp_path / "store"
    selection = dg.AssetSelection.assets("image", "audio")  # the tables and their checks, no card
    assert materialize(defs_module, instance, D1, seeded_uri, store_dir, selection=selection).success
    sensor = build_stall_sensor(dg.AssetKey("hub_release"))

    def tick(cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor,
                                     resources=resources(seeded_uri, store_dir)) as ctx:
            return sensor.evaluate_tick(ctx)

    time.sleep(1.2)
    result = tick(None)
    [event] = result.asset_events
    assert isinstance(event, dg.AssetCheckEvaluation) and not event.passed and event.partition == D1
    assert event.check_name == "released_in_time"
    assert "the dataset card is missing" in event.description and "allowed 1 s" in event.description
    assert not tick(result.cursor).asset_events  # reported once, not on every tick
    mark_published(LocalStore(store_dir), D1, {"repo_id": REPO})
    [event] = tick(result.cursor).asset_events
    assert event.passed and "is released" in event.description
