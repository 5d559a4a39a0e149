"""The single Dagster code location: `dagster dev -w workspace.yaml` loads `defs`."""

import dagster as dg

from dataset_assets.assets import build_assets
from dataset_assets.partitions import snapshots
from dataset_assets.resources import default_resources
from dataset_assets.sensors import build_sensors


def split_keys(assets) -> tuple[list[dg.AssetKey], list[dg.AssetKey]]:
    """(table snapshots, everything downstream of them: card and push)."""
    keys = [k for a in assets for k in a.keys]
    tables = [k for a in assets for k in a.keys if a.group_names_by_key[k] == "snapshots"]
    return tables, [k for k in keys if k not in tables]


def build_definitions() -> dg.Definitions:
    """Everything from configuration and the environment (tests rebuild it under other settings)."""
    assets, asset_checks = build_assets()
    tables, release = split_keys(assets)
    return dg.Definitions(
        assets=assets,
        asset_checks=asset_checks,
        sensors=build_sensors(tables, release),
        resources=default_resources(),
    )


def register_snapshot_dates(dates: list[str]) -> list[str]:
    """Add ``dates`` to the instance's (``DAGSTER_HOME``) dynamic partitions ``snapshots``, so that
    ``dagster asset materialize --partition <date>`` (which refuses an unknown key) accepts them;
    returns the dates that were new. The change sensor registers today's date itself."""
    with dg.DagsterInstance.get() as instance:
        new = [d for d in dict.fromkeys(dates) if not instance.has_dynamic_partition(snapshots.name, d)]
        if new:
            instance.add_dynamic_partitions(snapshots.name, new)
    return new


defs = build_definitions()
assets = list(defs.assets)
asset_checks = list(defs.asset_checks)
table_keys, release_keys = split_keys(assets)
