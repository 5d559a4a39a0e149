"""Software-defined assets, built from configuration (dataset_assets/tables.yaml)."""


import os

import dagster as dg

from ..config import ENV_HF_REPO, load_tables
from .card import build_card_asset
from .checks import build_table_checks
from .conditions import FOLLOW_TABLES
from .release import build_release_asset
from .tables import build_table_asset

__all__ = ["FOLLOW_TABLES", "build_assets"]


def build_assets() -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    tables = list(load_tables().values())
    table_assets = [build_table_asset(cfg) for cfg in tables]
    checks = [c for cfg in tables for c in build_table_checks(cfg)]
    card = build_card_asset([a.key for a in table_assets], automation_condition=FOLLOW_TABLES)
    # The push follows the card only where a repo is configured; elsewhere (the demo)
    # materialising it by hand says which variable to set.
    release = build_release_asset(card.key, automation_condition=FOLLOW_TABLES if os.environ.get(ENV_HF_REPO) else None)
    return [*table_assets, card, release], checks
