"""The code location loads: assets, partitions, checks and sensors; bad numeric settings name
their variable."""

from __future__ import annotations

import dagster as dg
import pytest


def test_definitions_load(defs_module):
    defs = defs_module.defs
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"image", "audio", "dataset_card"} <= keys
    image = defs.resolve_assets_def("image")
    assert image.partitions_def.name == "snapshots"
    assert defs.resolve_assets_def("audio").partitions_def == image.partitions_def
    checks = {(c.asset_key.to_user_string(), c.name) for c in defs.resolve_asset_graph().asset_check_keys}
    for t in ("image", "audio"):
        for name in ("rows_match_source", "primary_key_unique", "checksums_verify", "columns_documented"):
            assert (t, name) in checks
    sensors = {s.name: s for s in defs.sensors}
    assert {"upstream_changes", "release_automation"} <= set(sensors)


def test_bad_numeric_settings_name_the_variable(monkeypatch):
    from dataset_assets.errors import UserError
    from dataset_assets.resources import default_resources
    from dataset_assets.sensors import build_sensors

    monkeypatch.setenv("DATASET_ASSETS_WORKERS", "two")
    with pytest.raises(UserError, match=r"DATASET_ASSETS_WORKERS='two' is not a whole number"):
        default_resources()
    monkeypatch.setenv("DATASET_ASSETS_WORKERS", "3")
    assert default_resources()["export_settings"].workers == 3
    monkeypatch.setenv("DATASET_ASSETS_AUTOMATION_INTERVAL", "0")
    with pytest.raises(UserError, match=r"DATASET_ASSETS_AUTOMATION_INTERVAL=0 is below 1"):
        build_sensors([dg.AssetKey("image")], [dg.AssetKey("dataset_card")])
