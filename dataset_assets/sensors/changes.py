"""The change sensor: notices changed upstream rows per table and requests that
table's snapshot for today.

Cursor (JSON): for each table, the change signal of its last successful
snapshot (``committed``) and the request in flight (``pending``). A request
is done when the table's partition has a materialisation newer than the
request; a failed run is retried on a later tick with a new attempt number.
Run keys are ``<table>/<date>/<signal hash>/<attempt>``, so a restarted
daemon or a repeated tick never launches the same snapshot twice.
"""


import datetime as dt
import hashlib
import json
import os
import time

import dagster as dg

from ..config import load_tables
from ..engine.changes import ChangeSignal, read_signals
from ..engine.export import snapshot_prefix
from ..engine.lifecycle import is_published
from ..errors import UserError
from ..partitions import snapshots
from ..resources import SnapshotStore, SourceDatabase

ENV_INTERVAL = "DATASET_ASSETS_SENSOR_INTERVAL"
ENV_SAME_DAY = "DATASET_ASSETS_SAME_DAY_UPDATES"
FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def _signal_hash(sig: ChangeSignal) -> str:
    return hashlib.sha256(json.dumps(sig.as_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _materialised_since(instance, key: dg.AssetKey, partition: str, since: float) -> bool:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition], after_timestamp=since), limit=1
    ).records
    return bool(records)


def _run_failed(instance, run_key: str) -> bool:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=5)
    return bool(runs) and all(r.status in FAILED for r in runs)


def build_change_sensor(table_keys: list[dg.AssetKey]) -> dg.SensorDefinition:
    from . import default_status

    interval = int(os.environ.get(ENV_INTERVAL, "60"))
    same_day = os.environ.get(ENV_SAME_DAY, "true").lower() not in ("0", "false", "no")

    @dg.sensor(
        name="upstream_changes",
        target=dg.AssetSelection.assets(*table_keys),
        minimum_interval_seconds=interval,
        default_status=default_status(),
        description="Reads cheap change signals per table (catalog statistics, indexed maxima) and requests a snapshot of each changed table for today.",
    )
    def upstream_changes(context: dg.SensorEvaluationContext, source_db: SourceDatabase,
                         snapshot_store: SnapshotStore) -> dg.SensorResult | dg.SkipReason:
        state = json.loads(context.cursor) if context.cursor else {}
        tables = list(load_tables().values())
        try:
            signals = read_signals(source_db.resolve_uri(), tables)
            store = snapshot_store.open()
        except UserError as exc:
            return dg.SkipReason(f"cannot read change signals: {exc}")
        today = _today()
        requests: list[dg.RunRequest] = []
        notes: list[str] = []
        known = set(context.instance.get_dynamic_partitions(snapshots.name))
        new_keys: set[str] = set()
        for cfg in tables:
            name = cfg.name
            key = dg.AssetKey(name)
            if name not in signals:
                notes.append(f"{name}: table not found")
                continue
            entry = state.setdefault(name, {"committed": None, "pending": None})
            pending = entry.get("pending")
            if pending:
                if _materialised_since(context.instance, key, pending["date"], pending["requested_at"]):
                    entry["committed"], entry["pending"] = pending["signal"], None
                elif _run_failed(context.instance, pending["run_key"]):
                    pending["attempt"] += 1
                    pending["run_key"] = f"{name}/{pending['date']}/{pending['hash']}/{pending['attempt']}"
                    requests.append(dg.RunRequest(run_key=pending["run_key"], partition_key=pending["date"], asset_selection=[key]))
                    notes.append(f"{name}: retrying {pending['date']} (attempt {pending['attempt']})")
                    continue
                else:
                    notes.append(f"{name}: snapshot {pending['date']} in progress")
                    continue
            current = signals[name]
            committed = ChangeSignal.from_dict(entry["committed"]) if entry.get("committed") else None
            if not current.differs_from(committed):
                continue
            if is_published(store, today):
                notes.append(f"{name}: changed, but {today} is published; waiting for the next date")
                continue
            if not same_day and store.is_complete(snapshot_prefix(today, name)):
                notes.append(f"{name}: changed; today's snapshot exists and same-day updates are off")
                continue
            h = _signal_hash(current)
            run_key = f"{name}/{today}/{h}/1"
            entry["pending"] = {"date": today, "hash": h, "attempt": 1, "run_key": run_key,
                                "signal": current.as_dict(), "requested_at": time.time()}
            requests.append(dg.RunRequest(run_key=run_key, partition_key=today, asset_selection=[key]))
            if today not in known:
                new_keys.add(today)
            notes.append(f"{name}: changed, requesting {today}")
        if notes:
            context.log.info("; ".join(notes))
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[snapshots.build_add_request(sorted(new_keys))] if new_keys else [],
            cursor=json.dumps(state),
        )

    return upstream_changes
