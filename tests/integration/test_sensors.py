"""The change sensor on a real instance and a real (freshly seeded) database.

Ticks are evaluated with ``dg.build_sensor_context(instance_ref=..., definitions=...,
resources=...)``; runs the sensor requests are played by ``dg.materialize`` (tagged
with the request's run key where a test needs the run to count as the request's run).
As in the daemon-less setting of these tests nothing adds dynamic partitions, the
helpers add the requested dates themselves. "Today" is pinned to a fixed date.
"""

from __future__ import annotations

import json
import time

import dagster as dg
import psycopg
import pytest

from platform_helpers import materialize, resources

DATE = "2026-11-22"
NEXT = "2026-11-23"


class Today:
    """The one clock the sensor reads: DATASET_ASSETS_TODAY."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self["date"] = DATE

    def __setitem__(self, key, value):
        self.monkeypatch.setenv("DATASET_ASSETS_TODAY", value)


@pytest.fixture
def today(monkeypatch):
    return Today(monkeypatch)


class Ticker:
    """Evaluates ticks of upstream_changes, threading the cursor like the daemon does."""

    def __init__(self, defs_module, instance, uri, store_dir):
        self.defs_module, self.instance, self.uri, self.store_dir = defs_module, instance, uri, store_dir
        self.sensor = defs_module.defs.resolve_sensor_def("upstream_changes")
        self.cursor: str | None = None

    def tick(self, cursor: str | None = "keep", uri: str | None = None):
        cur = self.cursor if cursor == "keep" else cursor
        with dg.build_sensor_context(instance_ref=self.instance.get_ref(), definitions=self.defs_module.defs, cursor=cur,
                                     resources=resources(uri or self.uri, self.store_dir)) as ctx:
            result = self.sensor.evaluate_tick(ctx)
        if result.cursor is not None:
            self.cursor = result.cursor
        for req in result.dynamic_partitions_requests or []:  # what the daemon would do
            self.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        return result

    def requested(self, result) -> str | None:
        """The run key of a tick's one run request (which must select every table), or None."""
        if not result.run_requests:
            return None
        [req] = result.run_requests
        assert sorted(k.to_user_string() for k in req.asset_selection) == ["audio", "image"]
        return req.run_key

    def run(self, date=DATE, run_key=None, uri=None):
        """Play the run of a request: materialise every table of ``date`` (checks included)."""
        selection = dg.AssetSelection.assets("image", "audio")
        if run_key is None:
            return materialize(self.defs_module, self.instance, date, uri or self.uri, self.store_dir, selection=selection)
        if not self.instance.has_dynamic_partition("snapshots", date):
            self.instance.add_dynamic_partitions("snapshots", [date])
        return dg.materialize(
            [*self.defs_module.assets, *self.defs_module.asset_checks], instance=self.instance, partition_key=date,
            resources=resources(uri or self.uri, self.store_dir), selection=selection,
            tags={"dagster/run_key": run_key}, raise_on_error=False,
        )

    def state(self) -> dict:
        return json.loads(self.cursor)

    def settle(self):
        """Request, snapshot and commit every table: the steady state after the first snapshots."""
        first = self.tick()
        assert self.requested(first), first.skip_message
        assert self.run().success
        done = self.tick()
        assert not done.run_requests, self.requested(done)
        assert self.state()["pending"] is None and set(self.state()["committed"]) == {"image", "audio"}
        return first


@pytest.fixture
def ticker(defs_module, instance, mutable_uri, tmp_path, today):
    return Ticker(defs_module, instance, mutable_uri, tmp_path / "store")


def sql(uri: str, statement: str) -> None:
    # the connection is closed right away, so its statistics are flushed (backend exit)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(statement)


def reason(result) -> str:
    return result.run_requests[0].tags["dataset_assets/change"]


def test_first_tick_requests_the_whole_date_and_a_settled_state_requests_nothing(ticker):
    first = ticker.tick()
    key = ticker.requested(first)
    date, h, attempt = key.split("/")
    assert (date, attempt) == (DATE, "1") and len(h) == 12
    assert {r.partition_key for r in first.run_requests} == {DATE}
    assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [[DATE]]
    assert reason(first) == "image: no committed snapshot yet; audio: no committed snapshot yet"
    # repeated ticks while the request is in flight: nothing new
    again = ticker.tick()
    assert not again.run_requests and "waiting" in again.skip_message
    assert ticker.run().success
    done = ticker.tick()
    assert not done.run_requests
    quiet = ticker.tick()
    assert not quiet.run_requests and "no table changed" in quiet.skip_message
    assert set(ticker.state()["committed"]) == {"image", "audio"} and not ticker.state()["pending"]


def test_a_sensor_starting_on_an_existing_store_adopts_its_snapshot_and_requests_nothing(ticker):
    """A first daemon start (or `make dev` after `make demo`): the newest snapshot in the store
    records the tables' change signals; nothing changed since, so nothing is re-exported."""
    assert ticker.run().success  # a snapshot made without the sensor (the demo, the CLI)
    result = ticker.tick(cursor=None)
    assert not result.run_requests, reason(result)
    assert not result.dynamic_partitions_requests
    assert "baseline adopted" in result.skip_message
    assert set(ticker.state()["committed"]) == {"image", "audio"}
    from dataset_assets.local.seed import change_rows

    change_rows(ticker.uri, "audio", 0.02, seed=12, kinds=("update",))
    assert reason(ticker.tick()).startswith("audio: ")


def test_repeated_tick_from_the_same_cursor_gives_the_same_run_key(ticker):
    """A daemon that crashed after evaluating a tick re-evaluates it from the old cursor:
    the run key is the same, so the daemon does not launch a second run."""
    ticker.settle()
    before = ticker.cursor
    from dataset_assets.local.seed import change_rows

    change_rows(ticker.uri, "audio", 0.02, seed=1, kinds=("update",))
    a = ticker.requested(ticker.tick(cursor=before))
    b = ticker.requested(ticker.tick(cursor=before))
    assert a == b and a is not None
    assert not ticker.tick().run_requests  # and from the new cursor: pending, nothing new


def test_update_in_audio_requests_the_whole_date_for_the_reason_of_audio(ticker):
    first = ticker.settle()
    from dataset_assets.local.seed import change_rows

    change_rows(ticker.uri, "audio", 0.02, seed=2, kinds=("update",))
    result = ticker.tick()
    key = ticker.requested(result)
    assert key != ticker.requested(first)
    assert key.startswith(f"{DATE}/") and key.endswith("/1")
    assert reason(result).startswith("audio: ") and "max(updated_on) moved" in reason(result)
    assert "image" not in reason(result)
    assert not result.dynamic_partitions_requests  # the date is known already
    assert ticker.run().success
    assert not ticker.tick().run_requests


def test_update_that_does_not_move_updated_on_is_noticed(ticker):
    """A late commit (or a fix that leaves updated_on alone) is seen by the counters."""
    ticker.settle()
    sql(ticker.uri, "UPDATE audio SET title = title || ' (fixed)' WHERE identifier IN (SELECT identifier FROM audio ORDER BY identifier LIMIT 3)")
    result = ticker.tick()
    assert ticker.requested(result)
    assert reason(result).startswith("audio: ") and "row writes counted" in reason(result)


def test_deletes_are_noticed_also_a_tombstone_alone(ticker):
    ticker.settle()
    from dataset_assets.local.seed import change_rows

    # a plain delete, no tombstone: max(updated_on) does not move, the counters do
    assert change_rows(ticker.uri, "audio", 0.01, seed=3, kinds=("delete",), tombstone=False)["delete"] > 0
    result = ticker.tick()
    assert ticker.requested(result) and reason(result).startswith("audio: ")
    assert ticker.run().success
    assert not ticker.tick().run_requests
    # a delete that lands only as a tombstone row (the row stays in audio; the export leaves it out)
    sql(ticker.uri, "INSERT INTO deleted_audio SELECT a.*, now(), 'takedown_request' FROM audio a "
                    "WHERE a.identifier NOT IN (SELECT identifier FROM deleted_audio) ORDER BY a.identifier LIMIT 1")
    result = ticker.tick()
    assert ticker.requested(result) and reason(result).startswith("audio: ")
    assert ticker.run().success
    assert not ticker.tick().run_requests


def test_failed_run_is_retried_with_a_new_run_key_then_given_up(ticker, monkeypatch):
    ticker.settle()
    from dataset_assets.local.seed import change_rows

    monkeypatch.setenv("DATASET_ASSETS_SENSOR_MAX_ATTEMPTS", "2")
    broken = ticker.uri.rsplit("/", 1)[0] + "/no_such_database"
    change_rows(ticker.uri, "audio", 0.02, seed=4, kinds=("update",))
    key1 = ticker.requested(ticker.tick())
    assert key1.endswith("/1")
    assert not ticker.run(run_key=key1, uri=broken).success
    retry = ticker.tick()
    key2 = ticker.requested(retry)
    assert key2 == key1[:-1] + "2"
    assert not ticker.tick().run_requests  # the retry is pending: no duplicate
    assert not ticker.run(run_key=key2, uri=broken).success
    gave_up = ticker.tick()
    assert not gave_up.run_requests and "giving up" in gave_up.skip_message
    assert not ticker.tick().run_requests  # the same change is not requested again that day
    # a further change is
    change_rows(ticker.uri, "audio", 0.02, seed=5, kinds=("update",))
    key3 = ticker.requested(ticker.tick())
    assert key3.endswith("/1") and key3.split("/")[1] != key1.split("/")[1]
    assert ticker.run(run_key=key3).success
    assert not ticker.tick().run_requests
    assert ticker.state()["pending"] is None


def test_failed_run_of_a_passed_date_moves_to_today(ticker, today):
    ticker.settle()
    from dataset_assets.local.seed import change_rows

    change_rows(ticker.uri, "audio", 0.02, seed=6, kinds=("update",))
    key1 = ticker.requested(ticker.tick())
    broken = ticker.uri.rsplit("/", 1)[0] + "/no_such_database"
    assert not ticker.run(run_key=key1, uri=broken).success
    today["date"] = NEXT
    result = ticker.tick()
    assert ticker.requested(result).startswith(f"{NEXT}/")
    assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [[NEXT]]


def test_published_date_is_not_re_requested(ticker, today):
    ticker.settle()
    from dataset_assets.storage.release_state import mark_published
    from dataset_assets.local.seed import change_rows
    from dataset_assets.storage.stores import LocalStore

    mark_published(LocalStore(ticker.store_dir), DATE, {"repo_id": "test/dataset"})
    change_rows(ticker.uri, "audio", 0.02, seed=7)
    result = ticker.tick()
    assert not result.run_requests and "published" in result.skip_message
    assert not ticker.tick().run_requests
    today["date"] = NEXT
    assert ticker.requested(ticker.tick()).startswith(f"{NEXT}/")


def test_same_day_updates_off_waits_for_the_next_date(ticker, today, monkeypatch):
    ticker.settle()
    from dataset_assets.local.seed import change_rows

    monkeypatch.setenv("DATASET_ASSETS_SAME_DAY_UPDATES", "false")
    change_rows(ticker.uri, "image", 0.02, seed=8, kinds=("update",))
    result = ticker.tick()
    assert not result.run_requests and "same-day updates are off" in result.skip_message
    today["date"] = NEXT
    result = ticker.tick()
    assert ticker.requested(result) and reason(result).startswith("image: ")


def test_stats_reset_alone_does_not_trigger_a_snapshot(ticker):
    ticker.settle()
    # resetting one table's counters moves the database's reset time: not a change of the other table
    sql(ticker.uri, "SELECT pg_stat_reset_single_table_counters('image'::regclass)")
    result = ticker.tick()
    assert not result.run_requests, ticker.requested(result)
    sql(ticker.uri, "SELECT pg_stat_reset()")
    result = ticker.tick()
    assert not result.run_requests, ticker.requested(result)
    assert "statistics were reset" in result.skip_message
    assert not ticker.tick().run_requests
    # after the reset, a change seen only by the counters is still noticed
    from dataset_assets.local.seed import change_rows

    change_rows(ticker.uri, "image", 0.01, seed=9, kinds=("delete",), tombstone=False)
    result = ticker.tick()
    assert ticker.requested(result) and reason(result).startswith("image: ")


def test_changes_while_pending_are_picked_up_by_the_next_request(ticker):
    ticker.settle()
    from dataset_assets.local.seed import change_rows

    change_rows(ticker.uri, "audio", 0.02, seed=10, kinds=("update",))
    key1 = ticker.requested(ticker.tick())
    change_rows(ticker.uri, "audio", 0.02, seed=11, kinds=("insert",))
    waiting = ticker.tick()
    assert not waiting.run_requests and "waiting" in waiting.skip_message
    assert ticker.run(run_key=key1).success
    after = ticker.requested(ticker.tick())
    assert after and after != key1
    assert ticker.run(run_key=after).success
    assert not ticker.tick().run_requests


def test_schema_change_and_truncate_are_noticed(ticker):
    ticker.settle()
    sql(ticker.uri, "ALTER TABLE image ADD COLUMN note text")  # no row is written
    result = ticker.tick()
    assert ticker.requested(result)
    assert reason(result).startswith("image: ") and "columns changed" in reason(result)
    # the undocumented column fails a blocking check: the run fails after writing the
    # snapshot; the sensor counts it as done instead of rewriting the same data again
    run = ticker.run(run_key=ticker.requested(result))
    assert not run.success
    assert ticker.instance.get_latest_materialization_event(dg.AssetKey("image")).dagster_event.partition == DATE
    assert not ticker.tick().run_requests
    assert ticker.state()["pending"] is None
    sql(ticker.uri, "TRUNCATE deleted_audio")  # TRUNCATE counts no deleted rows
    result = ticker.tick()
    assert ticker.requested(result) and reason(result).startswith("audio: ")


def test_unreachable_source_skips_and_keeps_the_cursor(ticker):
    ticker.settle()
    before = ticker.cursor
    result = ticker.tick(uri=ticker.uri.rsplit("/", 1)[0] + "/no_such_database")
    assert not result.run_requests and "cannot read change signals" in result.skip_message
    assert result.cursor in (None, before) and ticker.cursor == before


def test_unreadable_cursor_starts_afresh(ticker):
    result = ticker.tick(cursor='{"image": {"committed": {"epoch": "old"}}}')
    assert ticker.requested(result)
    assert reason(result) == "image: no committed snapshot yet; audio: no committed snapshot yet"


def _scan_counts(uri: str) -> dict[str, tuple[int, int]]:
    with psycopg.connect(uri, autocommit=True) as conn:
        rows = conn.execute("SELECT relname::text, seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_signal_reads_no_table_only_indexes(seeded_uri):
    """max(updated_on) is an index probe; the unindexed deleted_on is not read at all."""
    from dataset_assets.tables import load_tables
    from dataset_assets.source.signals import read_signals

    with psycopg.connect(seeded_uri, autocommit=True) as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT (SELECT max(updated_on) FROM image)::text"))
    assert "Index Only Scan Backward using image_updated_on_idx" in plan and "Seq Scan" not in plan
    before = _scan_counts(seeded_uri)
    signals = read_signals(seeded_uri, list(load_tables().values()))
    assert set(signals) == {"image", "audio"}
    assert signals["image"].unindexed == ("deleted_image.deleted_on",)
    assert dict(signals["image"].maxima)["updated_on"]
    deadline = time.time() + 15  # the reading backend publishes its statistics when it exits
    while time.time() < deadline:
        after = _scan_counts(seeded_uri)
        if after["image"][1] > before["image"][1] and after["audio"][1] > before["audio"][1]:
            break
        time.sleep(0.2)
    for rel in ("image", "audio", "deleted_image", "deleted_audio"):
        assert after[rel][0] == before[rel][0], f"{rel} was scanned"
    assert after["image"][1] > before["image"][1] and after["audio"][1] > before["audio"][1]
