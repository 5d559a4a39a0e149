"""The change sensor: notices changed upstream rows per table and requests that
table's snapshot for today.

Each tick reads one cheap change signal per table (dataset_assets/engine/changes.py:
statistics counters, indexed maxima, relation identity; two queries, cost
independent of table size) and compares it with the signal of the table's
last snapshot.

Cursor (JSON, ``{"version": 2, "tables": {<table>: entry}}``), per table:

- ``committed``: the signal read when the last completed snapshot was
  requested. A snapshot reads the table after its request, so it contains at
  least what the signal saw; a change that lands between the request and the
  snapshot's read makes the next tick request once more (one snapshot too
  many, never one too few). Statistics counters lag by up to ~10 s, which
  has the same effect.
- ``pending``: the request in flight: date, signal and its hash, attempt,
  run key ``<table>/<date>/<signal hash>/<attempt>``, and the newest
  materialisation storage id of the table at request time.
- ``gave_up``: ``{date, hash}`` of a change whose runs failed
  ``DATASET_ASSETS_SENSOR_MAX_ATTEMPTS`` times (default 3); that change is not
  requested again for that date; a further change or the next date is.

A pending request is done when a run with its run key succeeded, or, if no
such run exists, when the table's partition was materialised after the
request (a run started by hand; also how tests complete requests). If every
run with its key failed, it is retried with attempt + 1 (a new run key) on
the next tick, unless its date is published, has passed, or the attempts are
used up. A request with neither run nor materialisation after an hour is
re-issued. While a table's request is pending, the table is not requested
again; the change is picked up when the request completes.

Run keys make a repeated tick or a restarted daemon harmless: the daemon never
launches two runs with one key, and before issuing a key the sensor checks
that no run holds it yet.

Published snapshot dates are never requested; with
``DATASET_ASSETS_SAME_DAY_UPDATES=false`` a change waits for the next date
once today's snapshot of the table exists.
"""


import datetime as dt
import hashlib
import json
import os
import time

import dagster as dg

from dataset_assets.tables import load_tables
from dataset_assets.settings import env_int
from dataset_assets.source.signals import ChangeSignal, read_signals
from dataset_assets.storage.layout import table_prefix
from dataset_assets.storage.release_state import is_published
from dataset_assets.errors import UserError
from dataset_assets.partitions import snapshots
from dataset_assets.resources import SnapshotStore, SourceDatabase

ENV_INTERVAL = "DATASET_ASSETS_SENSOR_INTERVAL"
ENV_SAME_DAY = "DATASET_ASSETS_SAME_DAY_UPDATES"
ENV_MAX_ATTEMPTS = "DATASET_ASSETS_SENSOR_MAX_ATTEMPTS"
CURSOR_VERSION = 2
RUN_KEY_TAG = "dagster/run_key"
REASON_TAG = "dataset_assets/change"
LOST_AFTER_SECONDS = 3600
FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def signal_hash(sig: ChangeSignal) -> str:
    return hashlib.sha256(json.dumps(sig.as_dict(), sort_keys=True).encode()).hexdigest()[:12]


def run_key(table: str, date: str, sig_hash: str, attempt: int) -> str:
    return f"{table}/{date}/{sig_hash}/{attempt}"


def load_state(cursor: str | None) -> dict:
    """The per-table cursor state; an unreadable or older cursor starts afresh."""
    if cursor:
        try:
            raw = json.loads(cursor)
            if isinstance(raw, dict) and raw.get("version") == CURSOR_VERSION and isinstance(raw.get("tables"), dict):
                return raw["tables"]
        except ValueError:
            pass
    return {}


def dump_state(tables: dict) -> str:
    return json.dumps({"version": CURSOR_VERSION, "tables": tables}, sort_keys=True)


def _signal(d: dict | None) -> ChangeSignal | None:
    if not d:
        return None
    try:
        return ChangeSignal.from_dict(d)
    except (KeyError, TypeError, ValueError):
        return None  # written by an older version: treated as "never snapshotted"


def _latest_storage_id(instance, key: dg.AssetKey) -> int:
    records = instance.fetch_materializations(key, limit=1).records
    return records[0].storage_id if records else 0


def _materialised_since(instance, key: dg.AssetKey, partition: str, storage_id: int) -> bool:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition], after_storage_id=storage_id), limit=1
    ).records
    return bool(records)


def _runs_with_key(instance, key: str) -> list:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: key}), limit=10))


def _pending_outcome(instance, key: dg.AssetKey, pending: dict) -> str:
    """'done', 'failed', 'lost' or 'running'."""
    runs = _runs_with_key(instance, pending["run_key"])
    materialised = _materialised_since(instance, key, pending["date"], int(pending.get("after_storage_id") or 0))
    if runs:
        if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs):
            return "done"
        if all(r.status in FAILED for r in runs):
            # a run that wrote the snapshot but failed afterwards (a blocking check):
            # the data is there, a retry would write the same again
            return "done" if materialised else "failed"
        return "running"
    if materialised:
        return "done"
    if time.time() - float(pending.get("requested_at") or 0) > LOST_AFTER_SECONDS:
        return "lost"
    return "running"


def _free_run_key(instance, table: str, date: str, sig_hash: str, attempt: int) -> tuple[int, str]:
    """The first attempt number from ``attempt`` on whose run key no run holds yet."""
    for a in range(attempt, attempt + 100):
        key = run_key(table, date, sig_hash, a)
        if not _runs_with_key(instance, key):
            return a, key
    raise dg.DagsterInvariantViolationError(f"no free run key for {table}/{date}/{sig_hash}")


def build_change_sensor(table_keys: list[dg.AssetKey]) -> dg.SensorDefinition:
    from dataset_assets.sensors import default_status

    interval = env_int(ENV_INTERVAL, 60, minimum=1)

    @dg.sensor(
        name="upstream_changes",
        target=dg.AssetSelection.assets(*table_keys),
        minimum_interval_seconds=interval,
        default_status=default_status(),
        description="Reads cheap change signals per table (statistics counters, indexed maxima, relation identity) "
                    "and requests a snapshot of each changed table for today.",
    )
    def upstream_changes(context: dg.SensorEvaluationContext, source_db: SourceDatabase,
                         snapshot_store: SnapshotStore) -> dg.SensorResult | dg.SkipReason:
        return evaluate(context, source_db, snapshot_store, table_keys)

    return upstream_changes


def evaluate(context: dg.SensorEvaluationContext, source_db: SourceDatabase, snapshot_store: SnapshotStore,
             table_keys: list[dg.AssetKey]) -> dg.SensorResult | dg.SkipReason:
    instance = context.instance
    state = load_state(context.cursor)
    if context.cursor and not state:
        context.log.warning("upstream_changes: the cursor is unreadable or from an older version; starting afresh")
    targeted = {k.to_user_string() for k in table_keys}
    tables = [cfg for cfg in load_tables().values() if cfg.name in targeted]
    try:
        signals = read_signals(source_db.resolve_uri(), tables)
    except UserError as exc:
        return dg.SkipReason(f"cannot read change signals: {exc}")
    same_day = _env_flag(ENV_SAME_DAY, True)
    max_attempts = env_int(ENV_MAX_ATTEMPTS, 3, minimum=1)
    today = _today()
    store = None
    published: dict[str, bool] = {}

    def date_published(date: str) -> bool:
        nonlocal store
        if date not in published:
            if store is None:
                store = snapshot_store.open()
            published[date] = is_published(store, date)
        return published[date]

    requests: list[dg.RunRequest] = []
    notes: list[str] = []
    new_dates: set[str] = set()
    try:
        for cfg in tables:
            name = cfg.name
            key = dg.AssetKey(name)
            entry = state.setdefault(name, {})
            for field in ("committed", "pending", "gave_up"):
                entry.setdefault(field, None)

            pending = entry["pending"]
            if pending:
                outcome = _pending_outcome(instance, key, pending)
                if outcome == "running":
                    notes.append(f"{name}: snapshot {pending['date']} requested ({pending['run_key']}), waiting for it")
                    continue
                if outcome == "done":
                    entry["committed"], entry["pending"] = pending["signal"], None
                    notes.append(f"{name}: snapshot {pending['date']} done")
                else:
                    why = "failed" if outcome == "failed" else "never started"
                    if pending["date"] != today:
                        notes.append(f"{name}: run for {pending['date']} {why}; the date has passed, changes go to {today}")
                        entry["pending"] = None
                    elif date_published(pending["date"]):
                        notes.append(f"{name}: run for {pending['date']} {why}; the date is published now")
                        entry["pending"] = None
                    elif pending["attempt"] >= max_attempts:
                        notes.append(f"{name}: run for {pending['date']} {why} {pending['attempt']} times; "
                                     f"giving up on this change until the table changes again or the date changes")
                        entry["gave_up"] = {"date": pending["date"], "hash": pending["hash"]}
                        entry["pending"] = None
                        continue
                    else:
                        attempt, rk = _free_run_key(instance, name, pending["date"], pending["hash"], pending["attempt"] + 1)
                        pending.update(attempt=attempt, run_key=rk, requested_at=time.time())
                        requests.append(dg.RunRequest(run_key=rk, partition_key=pending["date"], asset_selection=[key],
                                                      tags={REASON_TAG: f"retry {attempt} after a {why} run"}))
                        notes.append(f"{name}: run for {pending['date']} {why}; retrying (attempt {attempt})")
                        continue

            current = signals.get(name)
            if current is None:
                notes.append(f"{name}: table not found in the source database")
                continue
            committed = _signal(entry["committed"])
            reason = current.changed_since(committed)
            if reason is None:
                if committed is not None and not current.same_state_as(committed):
                    # same data, different reading (a statistics reset, a restart): new baseline
                    if current.stats_were_reset(committed) or current.stats_reset != committed.stats_reset:
                        notes.append(f"{name}: statistics were reset; unchanged, new baseline")
                    entry["committed"] = current.as_dict()
                continue
            h = signal_hash(current)
            gave_up = entry.get("gave_up")
            if gave_up and gave_up.get("date") == today and gave_up.get("hash") == h:
                notes.append(f"{name}: changed ({reason}), but its runs for {today} failed {max_attempts} times")
                continue
            if date_published(today):
                notes.append(f"{name}: changed ({reason}), but {today} is published; waiting for the next date")
                continue
            if not same_day:
                if store is None:
                    store = snapshot_store.open()
                if store.is_complete(table_prefix(today, name)):
                    notes.append(f"{name}: changed ({reason}); today's snapshot exists and same-day updates are off")
                    continue
            attempt, rk = _free_run_key(instance, name, today, h, 1)
            entry["pending"] = {
                "date": today, "hash": h, "attempt": attempt, "run_key": rk, "signal": current.as_dict(),
                "requested_at": time.time(), "after_storage_id": _latest_storage_id(instance, key),
            }
            entry["gave_up"] = None
            requests.append(dg.RunRequest(run_key=rk, partition_key=today, asset_selection=[key],
                                          tags={REASON_TAG: reason[:200]}))
            if not instance.has_dynamic_partition(snapshots.name, today):
                new_dates.add(today)
            notes.append(f"{name}: changed ({reason}); requesting {today}")
    except UserError as exc:
        # the store could not be read: keep the cursor as it was, try again next tick
        return dg.SkipReason(f"cannot read the snapshot store: {exc}")
    if notes:
        context.log.info("; ".join(notes))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[snapshots.build_add_request(sorted(new_dates))] if new_dates else [],
        cursor=dump_state(state),
        skip_reason=None if requests else ("; ".join(notes) or "no table changed"),
    )
