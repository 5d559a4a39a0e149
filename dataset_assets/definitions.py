"""The single Dagster code location: `dagster dev -w workspace.yaml` loads `defs`."""

import dagster as dg

from .assets import build_assets
from .resources import default_resources
from .sensors import build_sensors


def build_definitions() -> dg.Definitions:
    """Everything from configuration and the environment (tests rebuild it under other settings)."""
    assets, asset_checks = build_assets()
    table_keys = [a.key for a in assets if a.group_names_by_key[a.key] == "snapshots"]
    release_keys = [a.key for a in assets if a.key not in table_keys]
    return dg.Definitions(
        assets=assets,
        asset_checks=asset_checks,
        sensors=build_sensors(table_keys, release_keys),
        resources=default_resources(),
    )


defs = build_definitions()
assets = list(defs.assets)
asset_checks = list(defs.asset_checks)
table_keys = [a.key for a in assets if a.group_names_by_key[a.key] == "snapshots"]
release_keys = [a.key for a in assets if a.key not in table_keys]
