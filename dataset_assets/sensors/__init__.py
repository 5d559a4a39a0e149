"""Sensors: upstream changes request table snapshots; the automation sensor
makes the card (and the push) follow."""


import os

import dagster as dg

from .changes import build_change_sensor

ENV_SENSORS = "DATASET_ASSETS_SENSORS"  # "running" (default) or "stopped"


def default_status() -> dg.DefaultSensorStatus:
    if os.environ.get(ENV_SENSORS, "running").lower() == "stopped":
        return dg.DefaultSensorStatus.STOPPED
    return dg.DefaultSensorStatus.RUNNING


def build_sensors(table_keys: list[dg.AssetKey], downstream_keys: list[dg.AssetKey]) -> list:
    automation = dg.AutomationConditionSensorDefinition(
        "release_automation",
        target=dg.AssetSelection.assets(*downstream_keys),
        default_status=default_status(),
        minimum_interval_seconds=30,
        description="Materialises the dataset card (and the Hub push) of a date once every table of that date is fresh and its checks passed.",
    )
    return [build_change_sensor(table_keys), automation]
