"""Sensors: upstream changes request table snapshots; the automation sensor
makes the card (and the push) follow."""


import os

import dagster as dg

from dataset_assets.settings import ENV_HF_REPO, env_int
from dataset_assets.sensors.changes import build_change_sensor
from dataset_assets.sensors.stalls import build_stall_sensor

ENV_SENSORS = "DATASET_ASSETS_SENSORS"  # "running" (default) or "stopped"
ENV_AUTOMATION_INTERVAL = "DATASET_ASSETS_AUTOMATION_INTERVAL"  # seconds between automation ticks (default 30)


def default_status() -> dg.DefaultSensorStatus:
    if os.environ.get(ENV_SENSORS, "running").lower() == "stopped":
        return dg.DefaultSensorStatus.STOPPED
    return dg.DefaultSensorStatus.RUNNING


def build_sensors(table_keys: list[dg.AssetKey], downstream_keys: list[dg.AssetKey]) -> list:
    automation = dg.AutomationConditionSensorDefinition(
        "release_automation",
        target=dg.AssetSelection.assets(*downstream_keys),
        default_status=default_status(),
        minimum_interval_seconds=env_int(ENV_AUTOMATION_INTERVAL, 30, minimum=1),
        description="Materialises the dataset card (and the Hub push) of a date once every table of that date is fresh and its checks passed.",
    )
    sensors = [build_change_sensor(table_keys), automation]
    release = dg.AssetKey("hub_release")
    if release in downstream_keys and os.environ.get(ENV_HF_REPO):  # without a repo nothing is released
        sensors.append(build_stall_sensor(release))
    return sensors
