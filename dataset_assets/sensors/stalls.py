"""Stalls are visible: a snapshot date that has not become a release within
``DATASET_ASSETS_RELEASE_WITHIN`` seconds (default 6 hours) of its first run shows the
``released_in_time`` check of ``hub_release`` failing for that date, with the reason: which
tables are incomplete, whether the card is missing, a push that is running or crashed, the
checks that failed and the last run's status.

The ``release_stalls`` sensor evaluates every registered date that is not released and
records a check evaluation when a date's verdict changes (failing once the deadline passed;
passing once it is released, or superseded by a newer release: releases only move forward).
Materialising the check by hand evaluates one date the same way.
"""


import json
import time

import dagster as dg

from dataset_assets.partitions import snapshots
from dataset_assets.resources import SnapshotStore
from dataset_assets.settings import env_int
from dataset_assets.storage.layout import card_key, snapshot_dates, table_prefix
from dataset_assets.storage.release_state import is_published, is_releasing
from dataset_assets.tables import load_tables

ENV_RELEASE_WITHIN = "DATASET_ASSETS_RELEASE_WITHIN"
ENV_STALL_INTERVAL = "DATASET_ASSETS_STALL_INTERVAL"
CHECK = "released_in_time"
PARTITION_TAG = "dagster/partition"


def release_within() -> int:
    return env_int(ENV_RELEASE_WITHIN, 6 * 3600, minimum=1)


def _runs(instance, date: str, ascending: bool, limit: int = 1):
    return instance.get_run_records(filters=dg.RunsFilter(tags={PARTITION_TAG: date}), limit=limit, ascending=ascending)


def _failed_checks(instance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    out = []
    for r in records:
        ev = r.event_log_entry.dagster_event.event_specific_data
        if not ev.passed:
            out.append(f"{ev.asset_key.to_user_string()}.{ev.check_name}")
    return out


def missing(store, instance, date: str) -> list[str]:
    """What keeps ``date`` from being a release, in words (empty: nothing found missing)."""
    why = [f"table {t} has no complete snapshot" for t in load_tables() if not store.is_complete(table_prefix(date, t))]
    if not store.exists(card_key(date)):
        why.append("the dataset card is missing")
    if is_releasing(store, date):
        why.append("the push is running or was interrupted (rerun hub_release)")
    runs = _runs(instance, date, ascending=False, limit=5)
    for rec in runs:
        failed = _failed_checks(instance, rec.dagster_run.run_id)
        if failed:
            why.append(f"failed checks: {', '.join(sorted(set(failed)))}")
            break
    if runs:
        last = runs[0].dagster_run
        why.append(f"last run {last.run_id[:8]} is {last.status.value}")
    return why or ["the push has not run"]


def newest_release(store) -> str | None:
    """The newest released snapshot date: dates are read newest first and the first with ``_PUBLISHED``
    ends the search (one existence probe per tick in the steady state, not one per date ever made)."""
    return next((d for d in reversed(snapshot_dates(store)) if is_published(store, d)), None)


def verdict(store, instance, date: str, now: float, within: int, newest_release: str | None) -> tuple[bool | None, str]:
    """(passed, description); passed is None while the date is within its time."""
    if is_published(store, date):
        return True, f"{date} is released"
    if newest_release and newest_release > date:
        return True, f"{date} was superseded by the release of {newest_release} (releases only move forward)"
    first = _runs(instance, date, ascending=True)
    started = first[0].create_timestamp.timestamp() if first else None
    if started is None or now - started < within:
        return None, f"{date} is within its {within} s"
    late = int(now - started)
    return False, f"{date} is not released {late} s after its first run (allowed {within} s): " + "; ".join(missing(store, instance, date))


def build_stall_sensor(release_key: dg.AssetKey) -> dg.SensorDefinition:
    from dataset_assets.sensors import default_status

    @dg.sensor(
        name="release_stalls",
        minimum_interval_seconds=env_int(ENV_STALL_INTERVAL, 60, minimum=1),
        default_status=default_status(),
        description=f"Fails the {CHECK} check of a snapshot date that has not become a release within "
                    f"{ENV_RELEASE_WITHIN} seconds, and says what is missing.",
    )
    def release_stalls(context: dg.SensorEvaluationContext, snapshot_store: SnapshotStore):
        reported = json.loads(context.cursor) if context.cursor else {}
        store = snapshot_store.open()
        instance = context.instance
        registered = set(instance.get_dynamic_partitions(snapshots.name))
        newest = newest_release(store)
        now, within = time.time(), release_within()
        events = []
        for date in sorted(registered):
            if reported.get(date) == "passed":
                continue
            passed, description = verdict(store, instance, date, now, within, newest)
            if passed is None or (passed is False and reported.get(date) == "failed"):
                continue
            if passed is True and date not in reported:
                reported[date] = "passed"  # never failed: nothing to show
                continue
            reported[date] = "passed" if passed else "failed"
            events.append(dg.AssetCheckEvaluation(
                asset_key=release_key, check_name=CHECK, passed=passed, partition=date,
                description=description, severity=dg.AssetCheckSeverity.ERROR,
                metadata={"date": date, "allowed_seconds": within},
            ))
        return dg.SensorResult(asset_events=events, cursor=json.dumps(reported, sort_keys=True),
                               skip_reason=None if events else "no date changed its verdict")

    return release_stalls


def build_stall_check(release_key: dg.AssetKey) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=release_key, name=CHECK, blocking=False,
                    description=f"The snapshot date became a release within {ENV_RELEASE_WITHIN} seconds of its first "
                                f"run (default 6 h); failing says what is missing. Evaluated by the release_stalls sensor.")
    def released_in_time(context: dg.AssetCheckExecutionContext, snapshot_store: SnapshotStore) -> dg.AssetCheckResult:
        store = snapshot_store.open()
        passed, description = verdict(store, context.instance, context.partition_key, time.time(), release_within(),
                                      newest_release(store))
        return dg.AssetCheckResult(passed=passed is not False, description=description)

    return released_in_time
