"""A table in layout clustered, exported twice (a first export, then a refresh with a change feed), carded and
published to the local Hub: the feed is released beside the shards and loads as ``<table>_changes``, the row
index stays in the store, and the feed applied to the previous release gives the new one."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from dataset_assets import tables as config
from dataset_assets.errors import VerificationError
from dataset_assets.export.run import ExportOptions, export_snapshot
from dataset_assets.local.seed import change_rows, seed
from dataset_assets.release import publish_snapshot
from dataset_assets.release.card import write_card
from dataset_assets.release.hub import verify_release
from dataset_assets.release.snapshot import PUBLIC_CHANGES, load_snapshot
from dataset_assets.storage.manifest import feed_files, load_manifest, side_files
from dataset_assets.storage.stores import LocalStore
from dataset_assets.storage.verify import verify_table

REPO = "test-user/clustered"
DAY1, DAY2, DAY3 = "2026-03-01", "2026-03-02", "2026-03-03"
VOLATILE = ["updated_on", "last_synced_with_source"]


@pytest.fixture
def clustered(tmp_path, monkeypatch):
    """The table configuration: ``image`` in layout clustered, with volatile columns."""
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump({"tables": {"image": {
        "primary_key": "identifier", "tombstone_table": "deleted_image", "profile_columns": ["provider", "license"],
        "layout": "clustered", "cluster_by": ["provider"], "shard_bytes": 1 << 20, "volatile_columns": VOLATILE}}}))
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(path))
    config._load.cache_clear()
    yield
    config._load.cache_clear()


def release_rows(store: LocalStore, date: str) -> pa.Table:
    m = load_manifest(store, f"snapshots/{date}/image")
    return pa.concat_tables([pq.read_table(store.local_path(f"snapshots/{date}/image/{f.path}")) for f in m.files])


def plain(rows: list[dict]) -> list[dict]:
    """Rows comparable with ``==`` (a NaN is not equal to itself)."""
    return [{k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]


def by_key(t: pa.Table) -> list[dict]:
    return plain(t.sort_by("identifier").to_pylist())


def test_change_feed_is_released_beside_the_shards(hub_server, fresh_db, clustered, tmp_path, capsys):
    import datasets

    uri = fresh_db("feed")
    seed(uri, tables=["image"], rows={"image": 1500}, seed=5)
    store = LocalStore(tmp_path / "store")
    [first] = export_snapshot(uri, ["image"], DAY1, store, ExportOptions(workers=1))
    assert first.manifest.changes is None and feed_files(first.manifest) == []
    assert [f.path for f in side_files(first.manifest)] == ["_index.parquet"]

    # a change only in the volatile columns is no change; then real changes
    with psycopg.connect(uri, autocommit=True) as conn:
        volatile_only = [r[0] for r in conn.execute(
            "UPDATE image SET updated_on = updated_on + interval '1 day', last_synced_with_source = now() "
            "WHERE identifier IN (SELECT identifier FROM image ORDER BY identifier LIMIT 5) RETURNING identifier::text")]
    changed = change_rows(uri, "image", 0.02, mode="random", seed=3)
    assert changed["update"] and changed["insert"] and changed["delete"]
    [second] = export_snapshot(uri, ["image"], DAY2, store, ExportOptions(workers=1))
    m2 = second.manifest
    [feed] = feed_files(m2)
    assert feed.path == "changes/changes-00000.parquet"
    assert m2.changes["base_snapshot"] == DAY1 and m2.changes["base_root_hash"] == first.manifest.root_hash
    assert feed.rows == m2.changes["inserted"] + m2.changes["updated"] + m2.changes["deleted"] > 0
    assert sorted(f.path for f in side_files(m2)) == ["_index.parquet", feed.path]

    for date in (DAY1, DAY2):
        card = write_card(store, date, repo_id=REPO)
        assert card.problems == []
        report = verify_table(store, date, "image")
        assert report.ok, report.problems
    assert report.files_checked == len(m2.files) + 2  # the shards, the feed, the row index
    configs = {c["config_name"]: c for c in card.front_matter["configs"]}
    assert configs["image_changes"]["data_files"] == [{"split": "train", "path": "image/changes/*.parquet"}]
    assert [c["config_name"] for c in card.front_matter["configs"]] == ["image", "image_changes"]
    info = next(i for i in card.front_matter["dataset_info"] if i["config_name"] == "image_changes")
    assert info["splits"] == [{"name": "train", "num_bytes": feed.bytes, "num_examples": feed.rows}]
    assert [f["name"] for f in info["features"]][0] == "change"
    section = card.text.split("## Changes since the previous snapshot", 1)[1].split("\n## ", 1)[0]
    assert f"`changes.base_root_hash` (`{first.manifest.root_hash}`)" in section
    assert f"{m2.changes['inserted']:,} inserted" in section and "dataset-assets apply-changes" in section
    assert "**`updated_on` / `last_synced_with_source`**: the value as of the release in which" in card.text
    # nothing changed since: an empty feed, which datasets cannot load, so no subset for it
    [third] = export_snapshot(uri, ["image"], DAY3, store, ExportOptions(workers=1))
    assert third.manifest.changes["base_root_hash"] == m2.root_hash and feed_files(third.manifest)[0].rows == 0
    empty = write_card(store, DAY3, repo_id=REPO)
    assert empty.problems == [] and [c["config_name"] for c in empty.front_matter["configs"]] == ["image"]
    assert "### `image`: no changes since snapshot 2026-03-02" in empty.text
    assert verify_table(store, DAY3, "image").ok

    # what is pushed: the shards and the feed, never the row index
    pushed = {s.repo_path for s in load_snapshot(store, DAY2).shards}
    assert pushed == {f"image/{f.path}" for f in m2.files} | {f"image/{feed.path}"}

    for date in (DAY1, DAY2):
        publish_snapshot(store, date, REPO, token=hub_server.token, endpoint=hub_server.endpoint, log=lambda m: None,
                         retry_wait=0.01)
        verify_release(store, date, REPO, token=hub_server.token, endpoint=hub_server.endpoint, retry_wait=0.01)
    tag1, tag2 = f"snapshot-{DAY1}", f"snapshot-{DAY2}"
    on_hub = hub_server.files(REPO, tag2)
    assert f"image/{feed.path}" in on_hub and (on_hub[f"image/{feed.path}"].sha256, on_hub[f"image/{feed.path}"].size) \
        == (feed.sha256, feed.bytes)
    assert set(on_hub) - {".gitattributes"} == pushed | {"README.md", "image/_manifest.json"}
    assert not any(p.startswith("image/changes/") for p in hub_server.files(REPO, tag1))
    assert not any("_index" in p for tag in (tag1, tag2) for p in hub_server.files(REPO, tag))

    published = json.loads(hub_server.read(REPO, "image/_manifest.json", tag2))
    assert published["layout"] is None and published["root_hash"] == m2.root_hash
    assert published["changes"] == {k: v for k, v in m2.changes.items() if k in PUBLIC_CHANGES}
    assert {"base_snapshot", "base_root_hash", "files", "inserted", "updated", "deleted"} <= set(published["changes"])
    assert json.loads(hub_server.read(REPO, "image/_manifest.json", tag1))["changes"] is None

    ds = datasets.load_dataset(REPO, "image_changes", revision=tag2, split="train")
    assert ds.num_rows == feed.rows
    kinds = ds["change"]
    assert (kinds.count("insert"), kinds.count("update"), kinds.count("delete")) == (
        m2.changes["inserted"], m2.changes["updated"], m2.changes["deleted"])
    assert not set(volatile_only) & set(ds["identifier"])  # a change only in volatile columns is no change
    day1 = {r["identifier"]: r for r in plain(release_rows(store, DAY1).to_pylist())}
    day2 = {r["identifier"]: r for r in plain(release_rows(store, DAY2).to_pylist())}
    assert sum(k in day2 for k in volatile_only) >= 3
    assert all(day2[k] == day1[k] for k in volatile_only if k in day2)

    # dataset-assets apply-changes, from two downloads of the releases, rebuilds day 2 exactly (root hash)
    from huggingface_hub import snapshot_download

    from dataset_assets.export.feed import apply_changes

    old, new = (Path(snapshot_download(REPO, repo_type="dataset", revision=tag, local_dir=tmp_path / tag)) / "image"
                for tag in (tag1, tag2))
    applied = apply_changes(old, new / "_manifest.json", new, tmp_path / "rebuilt")
    assert applied.ok and applied.root_hash == m2.root_hash, applied.problems

    # the card's recipe, run as it is printed: the previous release plus the feed is this release
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "card-apply-changes", "exec"), scope)
    assert by_key(scope["new"]) == by_key(release_rows(store, DAY2))

    # the card's verification snippet, run as it is printed, checks the feed's files too
    code = re.search(r"```python\n(.*?)```", card.text.split("## Verifying a download", 1)[1], re.S).group(1)
    capsys.readouterr()
    exec(compile(code, "card-verification", "exec"), {})
    assert capsys.readouterr().out.startswith(f"image ok {m2.root_hash}")

    # a damaged feed or row index is found like a damaged shard; a missing one stops the publish
    for name in (feed.path, "_index.parquet"):
        path = store.local_path(f"snapshots/{DAY2}/image/{name}")
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    problems = verify_table(store, DAY2, "image").problems
    assert sorted(p.split(":")[0] for p in problems) == [f"snapshots/{DAY2}/image/_index.parquet",
                                                        f"snapshots/{DAY2}/image/{feed.path}"]
    assert all("differs from the manifest's" in p for p in problems)
    # a feed chained to another release than the base snapshot in the store
    key = f"snapshots/{DAY3}/image/_manifest.json"
    raw = json.loads(store.read_bytes(key))
    raw["changes"]["base_root_hash"] = "0" * 64
    store.put_bytes(key, json.dumps(raw).encode())
    # (DAY3 changed no row, so its row index is DAY2's, hard-linked: damaged above as well)
    problems = verify_table(store, DAY3, "image").problems
    assert any(f"chained to root hash {'0' * 64} of {DAY2}, but {DAY2} in the store has {m2.root_hash}" in p
               for p in problems), problems
    store.local_path(f"snapshots/{DAY2}/image/_index.parquet").unlink()
    with pytest.raises(VerificationError, match="_index.parquet: missing"):
        load_snapshot(store, DAY2)


def test_side_files_of_old_and_damaged_manifests():
    from dataset_assets.storage.manifest import Manifest

    sha = "0" * 64
    m = Manifest(table="image", snapshot=DAY2, row_count=0, files=[], schema=[], arrow_schema="", source={},
                 source_snapshot={}, created_at="2026-03-02T00:00:00+00:00")
    assert side_files(m) == [] and feed_files(m) == []  # layout chunks: nothing beside the shards
    m.layout = {"kind": "clustered", "index": {"path": "_index.parquet", "rows": 3, "bytes": 9, "sha256": sha}}
    m.changes = {"files": [{"path": "changes/changes-00000.parquet", "rows": 1, "bytes": 5, "sha256": sha,
                            "chunk": None, "reused_from": None}]}
    assert [(f.path, f.rows, f.bytes) for f in side_files(m)] == [
        ("changes/changes-00000.parquet", 1, 5), ("_index.parquet", 3, 9)]
    assert [f.path for f in feed_files(m)] == ["changes/changes-00000.parquet"]
    for path in ("../x.parquet", "changes/../../x.parquet", "train-00000.parquet", "changes/_x.parquet", "/etc/x"):
        m.changes["files"][0]["path"] = path
        with pytest.raises(VerificationError, match="malformed change feed file"):
            side_files(m)
    m.changes = {"files": []}
    m.layout["index"]["path"] = "train-00000.parquet"  # the row index never looks like a shard (nor is pushed)
    with pytest.raises(VerificationError, match="malformed row index"):
        side_files(m)


@pytest.mark.parametrize("layout", ["chunks", "clustered"])
def test_an_empty_table_is_released_and_streams_from_the_hub(hub_server, fresh_db, tmp_path, monkeypatch, layout):
    """A table without a row goes through the whole release (its one schema-only file, the card, the checks, the
    push through Xet): ``datasets`` streams its config from the tag, with the table's features and no row; the
    next release, once rows came, replaces that file."""
    import datasets

    entry = {"primary_key": "identifier", "tombstone_table": "deleted_image", "profile_columns": ["provider", "license"]}
    if layout == "clustered":
        entry.update(layout="clustered", cluster_by=["provider"], shard_bytes=1 << 20, volatile_columns=VOLATILE)
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump({"tables": {"image": entry}}))
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(path))
    config._load.cache_clear()
    try:
        uri = fresh_db("empty_release")
        seed(uri, tables=["image"], rows={"image": 400}, seed=9)
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE stash AS SELECT * FROM image")
            conn.execute("DELETE FROM image")
        store = LocalStore(tmp_path / "store")
        [empty] = export_snapshot(uri, ["image"], DAY1, store, ExportOptions(workers=2))
        assert [(f.path, f.rows) for f in empty.manifest.files] == [("train-empty.parquet", 0)]
        write_card(store, DAY1, ["image"])
        first = publish_snapshot(store, DAY1, REPO, token=hub_server.token, endpoint=hub_server.endpoint,
                                 log=lambda msg: None, retry_wait=0.01)
        assert first.committed and first.protocol == "xet"
        assert "image/train-empty.parquet" in hub_server.files(REPO, f"snapshot-{DAY1}")
        streamed = datasets.load_dataset(REPO, "image", revision=f"snapshot-{DAY1}", split="train", streaming=True)
        assert list(streamed) == []
        assert list(streamed.features) == empty.manifest.arrow().names

        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("INSERT INTO image SELECT * FROM stash")
        [full] = export_snapshot(uri, ["image"], DAY2, store, ExportOptions(workers=2))
        write_card(store, DAY2, ["image"])
        publish_snapshot(store, DAY2, REPO, token=hub_server.token, endpoint=hub_server.endpoint,
                         log=lambda msg: None, retry_wait=0.01)
        on_hub = hub_server.files(REPO, f"snapshot-{DAY2}")
        assert "image/train-empty.parquet" not in on_hub
        assert all(f"image/{f.path}" in on_hub for f in full.manifest.files)
        ds = datasets.load_dataset(REPO, "image", revision=f"snapshot-{DAY2}", split="train")
        assert ds.num_rows == full.manifest.row_count > 0
    finally:
        config._load.cache_clear()
