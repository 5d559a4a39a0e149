"""The dataset card of a snapshot date: README.md at the root of the snapshot folder."""


import dagster as dg

from dataset_assets.tables import load_tables
from dataset_assets.release.card import card_key, write_card
from dataset_assets.storage.release_state import ensure_draft
from dataset_assets.partitions import snapshots
from dataset_assets.resources import SnapshotStore
from dataset_assets.assets.failures import user_errors_fail
from dataset_assets.assets.checks import check_result
from dataset_assets.release import checks as shared_checks
from dataset_assets.release.checks import snapshot_identity  # noqa: F401  (re-exported)


# The date's check runs in the card's own step (a check_spec of the asset), after the card is
# written: under Dagster's default executor a step is a process of its own, and as a step of
# its own the check added about 7 s to each card run for well under a second of checking
# (tests/e2e, 2026-12-02). It still blocks the push, and shows as a check of the card.
ONE_POSTGRES_SNAPSHOT = dg.AssetCheckSpec(
    "one_postgres_snapshot", asset=shared_checks.CARD, blocking=True,
    description="Every table of the date was read in one Postgres snapshot (its manifests record the same snapshot), "
                "so the release is consistent across tables.")


def build_card_asset(table_keys: list[dg.AssetKey], automation_condition=None) -> dg.AssetsDefinition:
    @dg.asset(
        name=shared_checks.CARD,
        partitions_def=snapshots,
        deps=table_keys,
        group_name="release",
        kinds={"huggingface", "markdown"},
        automation_condition=automation_condition,
        check_specs=[ONE_POSTGRES_SNAPSHOT],
        description="The snapshot's README.md: Hub front-matter (configs, features, license, gating), field docs, statistics.",
    )
    def dataset_card(context: dg.AssetExecutionContext, snapshot_store: SnapshotStore) -> dg.MaterializeResult:
        date = context.partition_key
        tables = list(load_tables())
        with user_errors_fail():
            store = snapshot_store.open()
            ensure_draft(store, date)  # a published card is part of an immutable snapshot
            # Shards that do not match their manifests never get here: the tables'
            # blocking checksums_verify checks (which re-hash every file) stop this step.
            card = write_card(store, date, tables)
            key = card_key(date)
            # the check is release/checks.py's, shared with `dataset-assets release`
            one_snapshot = check_result(shared_checks.one_postgres_snapshot(store, date))
        local = store.local_path(key)
        for problem in card.problems:
            context.log.warning(problem)
        return dg.MaterializeResult(metadata={
            "card": dg.MetadataValue.path(str(local)) if local else dg.MetadataValue.url(f"{store.url}/{key}"),
            "tables": ", ".join(tables),
            "statistics": dg.MetadataValue.json(card.stats),
            "problems": "\n".join(card.problems) or "none",
            "card_preview": dg.MetadataValue.md(card.text[:20000]),
        }, check_results=[one_snapshot])

    return dataset_card
