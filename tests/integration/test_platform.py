"""The Dagster platform on a real instance: a partition with its metadata and checks,
blocking checks stopping the card, the card as a dataset (the definitions alone:
tests/unit/test_definitions.py)."""

from __future__ import annotations

import json

import dagster as dg

from platform_helpers import check_results, materialization_metadata, materialize

DATE = "2026-11-20"


def test_partition_materialises_with_metadata_and_checks(defs_module, instance, seeded_uri, tmp_path):
    store_dir = tmp_path / "store"
    result = materialize(defs_module, instance, DATE, seeded_uri, store_dir)
    assert result.success
    checks = check_results(result)
    assert len(checks) == 11 and all(checks.values()), checks  # 5 per table, one on the card
    md = materialization_metadata(result, "image")
    manifest = json.loads((store_dir / "snapshots" / DATE / "image" / "_manifest.json").read_text())
    assert md["dagster/row_count"].value == manifest["row_count"] > 0
    cols = md["dagster/column_schema"].schema.columns
    assert [c.name for c in cols] == [c["name"] for c in manifest["schema"]]
    assert all(c.description for c in cols)
    assert md["root_hash"].value == manifest["root_hash"]
    assert md["files"].value == len(manifest["files"])
    assert md["bytes"].value == sum(f["bytes"] for f in manifest["files"])
    assert "identifier" in md["preview"].value
    assert (store_dir / "snapshots" / DATE / "README.md").exists()
    # the materialisation is recorded on the instance, for the partition
    ev = instance.get_latest_materialization_event(dg.AssetKey("image"))
    assert ev.dagster_event.partition == DATE


def test_tampered_shard_fails_the_check_and_stops_the_card(defs_module, instance, seeded_uri, tmp_path):
    store_dir = tmp_path / "store"
    assert materialize(defs_module, instance, DATE, seeded_uri, store_dir).success
    card = store_dir / "snapshots" / DATE / "README.md"
    card.unlink()
    shard = sorted((store_dir / "snapshots" / DATE / "audio").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x40
    shard.write_bytes(bytes(data))
    selection = dg.AssetSelection.checks_for_assets(dg.AssetKey("audio")) | dg.AssetSelection.assets("dataset_card")
    result = materialize(defs_module, instance, DATE, seeded_uri, store_dir, selection=selection)
    checks = check_results(result)
    assert checks[("audio", "checksums_verify")] is False
    assert not result.success
    assert not card.exists()



def test_a_check_that_cannot_run_fails_the_step_with_its_sentence_and_the_others_report(defs_module, instance, seeded_uri,
                                                                                       tmp_path):
    """Every table's checks run in one step: one that cannot run (audio's manifest damaged after the export)
    fails that step with the error's sentence, after image's checks reported their results; the card stays
    stopped."""
    from dataset_assets.release.checks import TABLE_CHECKS

    store_dir = tmp_path / "store"
    assert materialize(defs_module, instance, DATE, seeded_uri, store_dir).success
    card = store_dir / "snapshots" / DATE / "README.md"
    card.unlink()
    (store_dir / "snapshots" / DATE / "audio" / "_manifest.json").write_text('{"table": "audio"}')
    selection = (dg.AssetSelection.checks_for_assets(dg.AssetKey("audio"), dg.AssetKey("image"))
                 | dg.AssetSelection.assets("dataset_card"))
    result = materialize(defs_module, instance, DATE, seeded_uri, store_dir, selection=selection)
    assert not result.success
    checks = check_results(result)
    assert all(checks[("image", name)] for name in TABLE_CHECKS), checks
    [failure] = [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "audio: rows_match_source, primary_key_unique, columns_documented, rows_not_collapsed could not run: " in failure
    assert failure.count("is damaged") == 1, failure
    assert "Traceback" not in failure
    assert not card.exists()

def test_card_loads_with_datasets(defs_module, instance, seeded_uri, tmp_path, offline_datasets):
    store_dir = tmp_path / "store"
    assert materialize(defs_module, instance, DATE, seeded_uri, store_dir).success
    import datasets
    from huggingface_hub import DatasetCard

    folder = store_dir / "snapshots" / DATE
    card = DatasetCard.load(folder / "README.md")
    assert {c["config_name"] for c in card.data.configs} == {"image", "audio"}
    for table in ("image", "audio"):
        manifest = json.loads((folder / table / "_manifest.json").read_text())
        ds = datasets.load_dataset(str(folder), table, split="train")
        assert ds.num_rows == manifest["row_count"]
        info = next(i for i in card.data.dataset_info if i["config_name"] == table)
        assert [f["name"] for f in info["features"]] == list(ds.features)
        assert ds.features == datasets.Features._from_yaml_list(info["features"])


def test_a_date_materialises_with_its_checks_on_an_s3_store(defs_module, instance, seeded_uri, s3_store):
    """The tables, every check (the table checks share one step, in threads, each opening the store) and the
    card, with the store on the S3 server."""
    result = materialize(defs_module, instance, DATE, seeded_uri, s3_store.url)
    assert result.success
    checks = check_results(result)
    assert len(checks) == 11 and all(checks.values()), checks
    assert s3_store.is_complete(f"snapshots/{DATE}/image") and s3_store.exists(f"snapshots/{DATE}/README.md")


def test_one_check_runs_alone(defs_module, instance, seeded_uri, tmp_path):
    """The table checks share a step but not their fate: one of them, selected alone (as the UI's "execute
    check" does, a subset of the asset job), runs alone and reports alone."""
    from platform_helpers import resources

    store_dir = tmp_path / "store"
    assert materialize(defs_module, instance, DATE, seeded_uri, store_dir).success
    one = dg.AssetCheckKey(dg.AssetKey("audio"), "primary_key_unique")
    defs = dg.Definitions(assets=defs_module.assets, asset_checks=defs_module.asset_checks,
                          resources=resources(seeded_uri, store_dir))
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(), asset_check_selection={one})
    result = job.execute_in_process(instance=instance, partition_key=DATE)
    assert result.success
    assert check_results(result) == {("audio", "primary_key_unique"): True}
