"""The Dagster graph, written out as text and compared with ``definitions_snapshot.txt`` beside
this file, so that a Dagster upgrade or a refactor cannot change it silently: asset keys and
their dependencies, partitions, pools, required resources, asset checks and whether they block,
automation conditions (as a tree, with Dagster's id of the condition), sensors (kind, default
status, minimum interval, target), jobs and resources.

After an intended change, regenerate the file and commit it with the change:

    UPDATE_DEFINITIONS_SNAPSHOT=1 .venv/bin/python -m pytest tests/unit/test_definitions_snapshot.py

The definitions are built by ``dataset_assets.definitions.build_definitions`` (the function that
builds the module's ``defs``) under a pinned environment, so the text depends on no variable of
the machine that runs the test.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.txt")
UPDATE = "UPDATE_DEFINITIONS_SNAPSHOT"

# What the definitions read from the environment (settings.py, assets/__init__.py, sensors/,
# resources/): every DATASET_ASSETS_* variable is removed, then these are set. A configured Hub
# repo turns on the push's automation condition, so the snapshot shows the production graph.
PINNED_ENV = {
    "DATASET_ASSETS_MODE": "local",
    "DATASET_ASSETS_HF_REPO": "example-org/media-catalogue",
    "DATASET_ASSETS_SENSORS": "running",
    "DATASET_ASSETS_SENSOR_INTERVAL": "60",
    "DATASET_ASSETS_AUTOMATION_INTERVAL": "30",
}
UNSET = ("HF_TOKEN", "HF_ENDPOINT")


def _keys(keys) -> str:
    return ", ".join(sorted(k.to_user_string() for k in keys)) or "-"


def _condition(condition, indent: str) -> list[str]:
    label = condition.get_label()
    lines = [f"{indent}{condition.name}" + (f"  [{label}]" if label else "")]
    for child in condition.children:
        lines += _condition(child, indent + "  ")
    return lines


def _automation(condition, indent: str) -> list[str]:
    if condition is None:
        return [f"{indent}automation condition: -"]
    uid = condition.get_unique_id(parent_node_unique_id=None, index=None)
    return [f"{indent}automation condition (id {uid}):", *_condition(condition, indent + "  ")]


def describe(defs: dg.Definitions) -> str:
    graph = defs.resolve_asset_graph()
    out = ["assets"]
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        out.append(f"  {key.to_user_string()}")
        out.append(f"    group: {node.group_name}")
        out.append(f"    deps: {_keys(node.parent_keys)}")
        if node.partition_mappings:
            for dep, mapping in sorted(node.partition_mappings.items(), key=lambda kv: kv[0].to_user_string()):
                out.append(f"    partition mapping from {dep.to_user_string()}: {type(mapping).__name__}")
        out.append(f"    partitions: {node.partitions_def if node.partitions_def else '-'}")
        out.append(f"    execution: {node.execution_type.value}")
        out.append(f"    pools: {', '.join(sorted(node.pools)) or '-'}")
        out.append(f"    kinds: {', '.join(sorted(node.kinds)) or '-'}")
        other_tags = {k: v for k, v in node.tags.items() if not k.startswith("dagster/kind/")}
        if other_tags:
            out.append(f"    tags: {', '.join(f'{k}={v}' for k, v in sorted(other_tags.items()))}")
        if node.owners:
            out.append(f"    owners: {', '.join(sorted(node.owners))}")
        if node.code_version:
            out.append(f"    code version: {node.code_version}")
        if node.backfill_policy:
            out.append(f"    backfill policy: {node.backfill_policy}")
        out.append(f"    resources: {', '.join(sorted(node.assets_def.required_resource_keys)) or '-'}")
        out += _automation(node.automation_condition, "    ")
        checks = sorted(node.check_keys, key=lambda c: c.name)
        out.append("    checks:" + ("" if checks else " -"))
        for check_key in checks:
            spec = graph.get_check_spec(check_key)
            extra = f", also depends on {_keys(d.asset_key for d in spec.additional_deps)}" if spec.additional_deps else ""
            out.append(f"      {spec.name} ({'blocking' if spec.blocking else 'not blocking'}{extra})")
            if spec.automation_condition is not None:
                out += _automation(spec.automation_condition, "        ")

    out.append("sensors")
    for sensor in sorted(defs.sensors or [], key=lambda s: s.name):
        out.append(f"  {sensor.name}")
        out.append(f"    kind: {sensor.sensor_type.value}")
        out.append(f"    default status: {sensor.default_status.value}")
        out.append(f"    minimum interval: {sensor.minimum_interval_seconds} s")
        if sensor.asset_selection is not None:
            out.append(f"    target: {sensor.asset_selection}")
        for target in sensor.targets:
            out.append(f"    target job: {target.job_name}")
        out.append(f"    resources: {', '.join(sorted(sensor.required_resource_keys)) or '-'}")

    out.append("schedules" + ("" if defs.schedules else " -"))
    for schedule in sorted(defs.schedules or [], key=lambda s: s.name):
        out.append(f"  {schedule.name}: {schedule.cron_schedule} ({schedule.default_status.value})")

    out.append("jobs")
    repo = defs.get_repository_def()
    for job in sorted(repo.get_all_jobs(), key=lambda j: j.name):
        out.append(f"  {job.name}: {_keys(job.asset_layer.selected_asset_keys)}; "
                   f"partitions: {job.partitions_def if job.partitions_def else '-'}")

    out.append("resources")
    for name, resource in sorted((defs.resources or {}).items()):
        out.append(f"  {name}: {type(resource).__name__}")
    return "\n".join(out) + "\n"


def test_definitions_match_the_snapshot(monkeypatch):
    for name in list(os.environ):
        if name.startswith("DATASET_ASSETS_") or name in UNSET:
            monkeypatch.delenv(name)
    for name, value in PINNED_ENV.items():
        monkeypatch.setenv(name, value)
    from dataset_assets.definitions import build_definitions

    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    text = describe(defs)
    assert describe(build_definitions()) == text, "two builds of the definitions describe differently"

    if os.environ.get(UPDATE):
        SNAPSHOT.write_text(text)
        return
    expected = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), text.splitlines(keepends=True),
                                            f"{SNAPSHOT.name} (committed)", f"{SNAPSHOT.name} (now)"))
        raise AssertionError(
            f"The Dagster definitions differ from tests/unit/{SNAPSHOT.name}:\n{diff}\n"
            f"If the change is intended, regenerate the file and commit it with the change:\n"
            f"  {UPDATE}=1 .venv/bin/python -m pytest tests/unit/test_definitions_snapshot.py"
        )
