"""The change sensor: notices changed upstream rows and requests a whole snapshot date.

Each tick reads one cheap change signal per table (``source/signals.py``: statistics
counters, indexed maxima, relation identity; two queries, cost independent of table size)
and compares it with the signal of the table's last snapshot: the ``committed`` signal in the
cursor, or, when the cursor has none (a daemon's first start, ``make dev`` after
``make demo``), the ``change_signal`` recorded in the manifest of the table's newest complete
snapshot in the store: that snapshot becomes the baseline and nothing is re-exported.

When any table changed, ONE run is requested for today's date with every table selected
(the tables are one multi-asset: all of them are read in one Postgres snapshot; a table that
did not change costs its change detection and reuses its shards). When nothing changed,
no date is registered and no run is started.

Cursor (JSON ``{"version": 3, "committed": {table: signal}, "pending": ..., "gave_up": ...}``):

- ``committed``: per table, the signal read when the last completed snapshot was requested.
  A snapshot reads the tables after its request, so it holds at least what the signals saw.
- ``pending``: the request in flight: date, the signals and their hash, attempt, run key
  ``<date>/<hash>/<attempt>``, and the newest materialisation storage id at request time.
- ``gave_up``: ``{date, hash}`` of a change whose runs failed
  ``DATASET_ASSETS_SENSOR_MAX_ATTEMPTS`` times (default 3); that change is not requested again
  for that date; a further change or the next date is.

A pending request is done when a run with its run key succeeded, or, if no such run exists,
when the tables' partition was materialised after the request (a run started by hand). If
every run with its key failed, it is retried with attempt + 1 (a new run key) on the next
tick, unless its date is published, has passed, or the attempts are used up. A request with
neither run nor materialisation after an hour is re-issued. While a request is pending,
nothing else is requested; changes are picked up when it completes.

Run keys make a repeated tick or a restarted daemon harmless. Published snapshot dates are
never requested; with ``DATASET_ASSETS_SAME_DAY_UPDATES=false`` a change waits for the next
date once today's snapshot exists. "Today" is ``settings.today()``
(``DATASET_ASSETS_TODAY`` moves it).
"""


import hashlib
import json
import os
import time

import dagster as dg

from dataset_assets.errors import UserError
from dataset_assets.partitions import snapshots
from dataset_assets.resources import SnapshotStore, SourceDatabase
from dataset_assets.settings import env_int, today as settings_today
from dataset_assets.source.signals import ChangeSignal, read_signals
from dataset_assets.storage.layout import snapshot_dates, table_prefix
from dataset_assets.storage.manifest import load_manifest
from dataset_assets.storage.release_state import is_published
from dataset_assets.tables import load_tables

ENV_INTERVAL = "DATASET_ASSETS_SENSOR_INTERVAL"
ENV_SAME_DAY = "DATASET_ASSETS_SAME_DAY_UPDATES"
ENV_MAX_ATTEMPTS = "DATASET_ASSETS_SENSOR_MAX_ATTEMPTS"
CURSOR_VERSION = 3
RUN_KEY_TAG = "dagster/run_key"
REASON_TAG = "dataset_assets/change"
LOST_AFTER_SECONDS = 3600
FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _today() -> str:
    return settings_today()


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def signals_hash(signals: dict[str, ChangeSignal]) -> str:
    body = {t: signals[t].as_dict() for t in sorted(signals)}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def run_key(date: str, sig_hash: str, attempt: int) -> str:
    return f"{date}/{sig_hash}/{attempt}"


def empty_state() -> dict:
    return {"version": CURSOR_VERSION, "committed": {}, "pending": None, "gave_up": None}


def load_state(cursor: str | None) -> dict | None:
    """The cursor state; None when the cursor is unreadable or from an older version."""
    if not cursor:
        return empty_state()
    try:
        raw = json.loads(cursor)
    except ValueError:
        return None
    if isinstance(raw, dict) and raw.get("version") == CURSOR_VERSION and isinstance(raw.get("committed"), dict):
        return raw
    return None


def dump_state(state: dict) -> str:
    return json.dumps(state, sort_keys=True)


def _signal(d: dict | None) -> ChangeSignal | None:
    if not d:
        return None
    try:
        return ChangeSignal.from_dict(d)
    except (KeyError, TypeError, ValueError):
        return None  # written by an older version: treated as "never snapshotted"


def _latest_storage_id(instance, keys: list[dg.AssetKey]) -> int:
    ids = [r.storage_id for k in keys for r in instance.fetch_materializations(k, limit=1).records]
    return max(ids, default=0)


def _materialised_since(instance, keys: list[dg.AssetKey], partition: str, storage_id: int) -> bool:
    """Every table of ``partition`` materialised after ``storage_id``."""
    return all(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=k, asset_partitions=[partition], after_storage_id=storage_id), limit=1
    ).records for k in keys)


def _runs_with_key(instance, key: str) -> list:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: key}), limit=10))


def _pending_outcome(instance, keys: list[dg.AssetKey], pending: dict) -> str:
    """'done', 'failed', 'lost' or 'running'."""
    runs = _runs_with_key(instance, pending["run_key"])
    materialised = _materialised_since(instance, keys, pending["date"], int(pending.get("after_storage_id") or 0))
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


def _free_run_key(instance, date: str, sig_hash: str, attempt: int) -> tuple[int, str]:
    """The first attempt number from ``attempt`` on whose run key no run holds yet."""
    for a in range(attempt, attempt + 100):
        key = run_key(date, sig_hash, a)
        if not _runs_with_key(instance, key):
            return a, key
    raise dg.DagsterInvariantViolationError(f"no free run key for {date}/{sig_hash}")


def store_baseline(store, table: str, before: str) -> ChangeSignal | None:
    """The change signal recorded by the newest complete snapshot of ``table`` up to ``before``."""
    for date in reversed(snapshot_dates(store)):
        if date > before or not store.is_complete(table_prefix(date, table)):
            continue
        try:
            return _signal(load_manifest(store, table_prefix(date, table), table, date).change_signal)
        except UserError:
            continue  # a damaged manifest is no baseline; an older one may be
    return None


def build_change_sensor(table_keys: list[dg.AssetKey]) -> dg.SensorDefinition:
    from dataset_assets.sensors import default_status

    interval = env_int(ENV_INTERVAL, 60, minimum=1)

    @dg.sensor(
        name="upstream_changes",
        target=dg.AssetSelection.assets(*table_keys),
        minimum_interval_seconds=interval,
        default_status=default_status(),
        description="Reads cheap change signals per table (statistics counters, indexed maxima, relation identity) "
                    "and, when any table changed, requests today's snapshot date with every table "
                    "(one run, one Postgres snapshot).",
    )
    def upstream_changes(context: dg.SensorEvaluationContext, source_db: SourceDatabase,
                         snapshot_store: SnapshotStore) -> dg.SensorResult | dg.SkipReason:
        return evaluate(context, source_db, snapshot_store, table_keys)

    return upstream_changes


def evaluate(context: dg.SensorEvaluationContext, source_db: SourceDatabase, snapshot_store: SnapshotStore,
             table_keys: list[dg.AssetKey]) -> dg.SensorResult | dg.SkipReason:
    instance = context.instance
    state = load_state(context.cursor)
    if state is None:
        context.log.warning("upstream_changes: the cursor is unreadable or from an older version; starting afresh")
        state = empty_state()
    targeted = {k.to_user_string() for k in table_keys}
    tables = [cfg for cfg in load_tables().values() if cfg.name in targeted]
    keys = [dg.AssetKey(cfg.name) for cfg in tables]
    try:
        signals = read_signals(source_db.resolve_uri(), tables)
    except UserError as exc:
        return dg.SkipReason(f"cannot read change signals: {exc}")
    same_day = _env_flag(ENV_SAME_DAY, True)
    max_attempts = env_int(ENV_MAX_ATTEMPTS, 3, minimum=1)
    today = _today()
    store = None
    published: dict[str, bool] = {}

    def opened():
        nonlocal store
        if store is None:
            store = snapshot_store.open()
        return store

    def date_published(date: str) -> bool:
        if date not in published:
            published[date] = is_published(opened(), date)
        return published[date]

    def result(requests=(), notes=(), new_date=None):
        if notes:
            context.log.info("; ".join(notes))
        return dg.SensorResult(
            run_requests=list(requests),
            dynamic_partitions_requests=[snapshots.build_add_request([new_date])] if new_date else [],
            cursor=dump_state(state),
            skip_reason=None if requests else ("; ".join(notes) or "no table changed"),
        )

    notes: list[str] = []
    committed: dict = state["committed"]
    try:
        pending = state["pending"]
        if pending:
            outcome = _pending_outcome(instance, keys, pending)
            if outcome == "running":
                return result(notes=[f"snapshot {pending['date']} requested ({pending['run_key']}), waiting for it"])
            if outcome == "done":
                committed.update(pending["signals"])
                state["pending"] = None
                notes.append(f"snapshot {pending['date']} done")
            else:
                why = "failed" if outcome == "failed" else "never started"
                if pending["date"] != today:
                    notes.append(f"the run for {pending['date']} {why}; the date has passed, changes go to {today}")
                    state["pending"] = None
                elif date_published(pending["date"]):
                    notes.append(f"the run for {pending['date']} {why}; the date is published now")
                    state["pending"] = None
                elif pending["attempt"] >= max_attempts:
                    state["gave_up"] = {"date": pending["date"], "hash": pending["hash"]}
                    state["pending"] = None
                    return result(notes=[f"the run for {pending['date']} {why} {pending['attempt']} times; giving up "
                                         f"on this change until a table changes again or the date changes"])
                else:
                    attempt, rk = _free_run_key(instance, pending["date"], pending["hash"], pending["attempt"] + 1)
                    pending.update(attempt=attempt, run_key=rk, requested_at=time.time())
                    request = dg.RunRequest(run_key=rk, partition_key=pending["date"], asset_selection=keys,
                                            tags={REASON_TAG: f"retry {attempt} after a {why} run"})
                    return result([request], [f"the run for {pending['date']} {why}; retrying (attempt {attempt})"])

        reasons: dict[str, str] = {}
        for cfg in tables:
            name = cfg.name
            current = signals.get(name)
            if current is None:
                notes.append(f"{name}: table not found in the source database")
                continue
            baseline = _signal(committed.get(name))
            if baseline is None:
                baseline = store_baseline(opened(), name, today)
                if baseline is not None:
                    committed[name] = baseline.as_dict()
                    notes.append(f"{name}: baseline adopted from the newest snapshot in the store")
            reason = current.changed_since(baseline)
            if reason is None:
                if baseline is not None and not current.same_state_as(baseline):
                    # same data, different reading (a statistics reset, a restart): new baseline
                    if current.stats_were_reset(baseline) or current.stats_reset != baseline.stats_reset:
                        notes.append(f"{name}: statistics were reset; unchanged, new baseline")
                    committed[name] = current.as_dict()
                continue
            reasons[name] = reason
        if not reasons:
            return result(notes=notes or ["no table changed"])
        why = "; ".join(f"{t}: {r}" for t, r in reasons.items())
        h = signals_hash(signals)
        gave_up = state.get("gave_up")
        if gave_up and gave_up.get("date") == today and gave_up.get("hash") == h:
            return result(notes=[f"changed ({why}), but the runs for {today} failed {max_attempts} times"])
        if date_published(today):
            return result(notes=[f"changed ({why}), but {today} is published; waiting for the next date"])
        if not same_day and all(opened().is_complete(table_prefix(today, cfg.name)) for cfg in tables):
            return result(notes=[f"changed ({why}); today's snapshot exists and same-day updates are off"])
        attempt, rk = _free_run_key(instance, today, h, 1)
        state["pending"] = {
            "date": today, "hash": h, "attempt": attempt, "run_key": rk,
            "signals": {t: sig.as_dict() for t, sig in signals.items()},
            "requested_at": time.time(), "after_storage_id": _latest_storage_id(instance, keys),
        }
        state["gave_up"] = None
        request = dg.RunRequest(run_key=rk, partition_key=today, asset_selection=keys, tags={REASON_TAG: why[:200]})
        new_date = None if instance.has_dynamic_partition(snapshots.name, today) else today
        return result([request], [*notes, f"changed ({why}); requesting {today}"], new_date)
    except UserError as exc:
        # the store could not be read: keep the cursor as it was, try again next tick
        return dg.SkipReason(f"cannot read the snapshot store: {exc}")
