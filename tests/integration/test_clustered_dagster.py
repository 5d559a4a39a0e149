"""The Dagster layer on a table in layout clustered: the same assets and checks as the chunk layout,
a first export on one date, a refresh on the next (after rows changed), with the refresh's facts
in the UI's metadata and every check passing. (Engine-level tests: test_refresh.py.)"""

from __future__ import annotations

import pytest
import yaml
from platform_helpers import check_results, materialization_metadata, materialize

from dataset_assets import tables as config
from dataset_assets.local.seed import change_rows, seed
from dataset_assets.storage.layout import table_prefix
from dataset_assets.storage.manifest import feed_files, load_manifest
from dataset_assets.storage.stores import LocalStore

D1, D2 = "2026-06-01", "2026-06-02"


@pytest.fixture
def clustered_image(tmp_path, monkeypatch):
    """``image`` in layout clustered (small shards, so a change touches a few), ``audio`` as it is."""
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump({"tables": {
        "image": {"primary_key": "identifier", "tombstone_table": "deleted_image", "layout": "clustered",
                  "cluster_by": ["provider"], "shard_bytes": 1 << 20,
                  "volatile_columns": ["updated_on", "last_synced_with_source"]},
        "audio": {"primary_key": "identifier", "tombstone_table": "deleted_audio"}}}))
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(path))
    config._load.cache_clear()
    yield
    config._load.cache_clear()


def test_first_export_then_refresh_through_the_assets(clustered_image, defs_module, instance, fresh_db, tmp_path):
    uri = fresh_db("clustered_dg")
    seed(uri, tables=["image", "audio"], rows={"image": 20_000, "audio": 2_000}, seed=11)
    store_dir = tmp_path / "store"

    first = materialize(defs_module, instance, D1, uri, store_dir)
    assert first.success
    meta1 = materialization_metadata(first, "image")
    assert meta1["refresh"].value["mode"] == "first export"
    assert set(meta1["stages_seconds"].value) == {"read", "finish"}
    checks1 = check_results(first)
    assert checks1 and all(checks1.values()), {k: v for k, v in checks1.items() if not v}

    changed = change_rows(uri, "image", 0.02, mode="random", seed=5)
    second = materialize(defs_module, instance, D2, uri, store_dir)
    assert second.success
    r = materialization_metadata(second, "image")["refresh"].value
    assert r["mode"] != "first export" and r["base_snapshot"] == D1
    assert r["inserted"] >= 1 and r["updated"] + r.get("moved", 0) >= 1 and r["deleted"] >= 1, (r, changed)
    assert 0 < r["shards_rewritten"] and r["files_written"] >= 1 and "shards_merged" in r
    stages = materialization_metadata(second, "image")["stages_seconds"].value
    assert list(stages) == ["read", "classify", "rewrite", "index", "feed"] and all(v >= 0 for v in stages.values()), stages
    checks2 = check_results(second)
    assert checks2 and all(checks2.values()), {k: v for k, v in checks2.items() if not v}

    store = LocalStore(store_dir)
    m = load_manifest(store, table_prefix(D2, "image"), "image", D2)
    assert m.layout["kind"] == "clustered" and feed_files(m)  # the change feed is part of the release
    assert r == {k: m.layout["refresh"][k] for k in r}, "the UI shows what the manifest records"
    audio = load_manifest(store, table_prefix(D2, "audio"), "audio", D2)
    assert (audio.layout or {}).get("kind") != "clustered"  # the other table keeps its layout
