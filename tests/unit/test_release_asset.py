"""The release asset without a Hub or a database: wired into the definitions, an unconfigured
repo is one sentence, and the card's automation condition follows a table update that lands in
the same tick as the card's own."""

from __future__ import annotations

import dagster as dg
from platform_helpers import materialize

from dataset_assets.resources import HubResource

FIRST = "2026-12-01"


def step_failures(result) -> list[str]:
    return [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]


def test_release_asset_is_wired_into_the_definitions(defs_module, monkeypatch):
    monkeypatch.setenv("DATASET_ASSETS_HF_REPO", "org/configured")
    from dataset_assets.definitions import build_definitions

    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    release = defs.resolve_assets_def("hub_release")
    assert release.partitions_def == defs.resolve_assets_def("image").partitions_def
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("hub_release")).parent_keys == {dg.AssetKey("dataset_card")}
    assert release.automation_conditions_by_key[dg.AssetKey("hub_release")] is not None
    assert "hub" in release.required_resource_keys
    sensors = {s.name: s for s in defs.sensors}
    automated = sensors["release_automation"].asset_selection.resolve(graph)
    assert automated == {dg.AssetKey("dataset_card"), dg.AssetKey("hub_release")}
    # the change sensor requests tables only; everything downstream follows through release_automation
    assert set(defs_module.table_keys) == {dg.AssetKey("image"), dg.AssetKey("audio")}
    assert set(defs_module.release_keys) == {dg.AssetKey("dataset_card"), dg.AssetKey("hub_release")}
    # without a configured repo the push does not follow by itself (it would only fail)
    monkeypatch.delenv("DATASET_ASSETS_HF_REPO")
    unconfigured = build_definitions().resolve_assets_def("hub_release")
    assert unconfigured.automation_conditions_by_key.get(dg.AssetKey("hub_release")) is None


def test_unconfigured_repo_is_one_clear_sentence(defs_module, instance, tmp_path):
    result = materialize(defs_module, instance, FIRST, "postgresql://unused", tmp_path / "store",
                         selection=["hub_release"], hub=HubResource())
    assert not result.success
    [message] = step_failures(result)
    assert "DATASET_ASSETS_HF_REPO" in message and message.count(". ") == 0, message


def test_card_follows_a_table_update_that_lands_in_the_same_tick_as_the_cards_own(instance):
    """The card's condition must see a table that materialised after the card, even when the
    card's materialisation and the table's land between the same two evaluations (Dagster's
    eager() lets the card's update reset the trigger there: dagster-io/dagster#33587). No
    request is repeated while one is pending, and nothing is requested once settled."""
    from dataset_assets.assets.conditions import FOLLOW_TABLES
    from dataset_assets.partitions import snapshots

    @dg.asset(partitions_def=snapshots)
    def table():
        return None

    @dg.asset(partitions_def=snapshots, deps=[table], automation_condition=FOLLOW_TABLES)
    def card():
        return None

    defs = dg.Definitions(assets=[table, card])
    instance.add_dynamic_partitions("snapshots", [FIRST])

    def run(*assets):
        assert dg.materialize(list(assets), instance=instance, partition_key=FIRST,
                              selection=[a.key for a in assets]).success

    def tick(cursor):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return result.get_requested_partitions(card.key), result.cursor

    requested, cursor = tick(None)
    assert not requested
    run(table)
    requested, cursor = tick(cursor)
    assert requested == {FIRST}  # the table updated: build the card
    requested, cursor = tick(cursor)
    assert not requested  # requested already; not again while that run is pending
    run(card)  # the requested card run completes...
    run(table)  # ...and the table changes again before the next evaluation
    requested, cursor = tick(cursor)
    assert requested == {FIRST}, "the table's update after the card's was lost"
    run(card)
    requested, cursor = tick(cursor)
    assert not requested
    requested, cursor = tick(cursor)
    assert not requested
