"""Software-defined assets, built from configuration (dataset_assets/tables.yaml)."""


import os

import dagster as dg

from dataset_assets.tables import load_tables
from dataset_assets.settings import ENV_HF_REPO
from dataset_assets.assets.card import build_card_asset
from dataset_assets.assets.checks import build_table_checks
from dataset_assets.assets.conditions import FOLLOW_TABLES
from dataset_assets.assets.release import build_release_asset
from dataset_assets.assets.tables import build_tables_asset
from dataset_assets.sensors.stalls import build_stall_check

__all__ = ["FOLLOW_TABLES", "build_assets"]


def build_assets() -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    tables = list(load_tables().values())
    tables_asset = build_tables_asset(tables)
    card = build_card_asset(list(tables_asset.keys), automation_condition=FOLLOW_TABLES)
    # The push follows the card only where a repo is configured; elsewhere (the demo)
    # materialising it by hand says which variable to set.
    release = build_release_asset(card.key, automation_condition=FOLLOW_TABLES if os.environ.get(ENV_HF_REPO) else None)
    stall = [build_stall_check(release.key)] if os.environ.get(ENV_HF_REPO) else []
    return [tables_asset, card, release], [build_table_checks(tables), *stall]
