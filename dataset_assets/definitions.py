"""The single Dagster code location: `dagster dev -w workspace.yaml` loads `defs`."""

import dagster as dg

from .assets import build_assets
from .resources import default_resources
from .sensors import build_sensors

assets, asset_checks = build_assets()
table_keys = [a.key for a in assets if a.key.to_user_string() != "dataset_card"]
release_keys = [a.key for a in assets if a.key not in table_keys]

defs = dg.Definitions(
    assets=assets,
    asset_checks=asset_checks,
    sensors=build_sensors(table_keys, release_keys),
    resources=default_resources(),
)
