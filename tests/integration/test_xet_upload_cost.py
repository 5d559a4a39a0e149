"""What a second push costs after a 1 % change of one table, through Xet and through LFS.

One database is seeded and exported twice (before and after ``change_rows(uri, "image", 0.01)``, clustered as
in ``test_release.py``): with the product's defaults (``incremental``: one shard per chunk of 1,000 rows, only
changed chunks rewritten) and with ``full`` exports (``--full``: physical order, one shard per table here).
The parquet writer uses content-defined chunking in both. Each protocol then publishes both snapshot dates to
its own local Hub. What the push reports sending is checked against what reached the Hub: with Xet, the bytes
of the xorbs and shards that arrived in the Hub's CAS; with LFS, the shards received whole. The numbers are
printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os

import pytest

from dataset_assets.release import publish_snapshot
from dataset_assets.release.hub import human_size
from dataset_assets.storage.stores import LocalStore

REPO = "test-org/cost"
FIRST, SECOND = "2026-12-01", "2026-12-02"
# XET_COST_IMAGE_ROWS=200000 measures a bigger table (not in make test: seeding takes a minute)
ROWS = {"image": int(os.environ.get("XET_COST_IMAGE_ROWS", "20000")), "audio": 2_000}


@pytest.fixture(scope="module", params=["incremental", "full"])
def two_dates(request, fresh_db, tmp_path_factory):
    """A store holding FIRST and SECOND, SECOND exported after 1 % of ``image`` changed."""
    from dataset_assets.export.run import ExportOptions, export_snapshot
    from dataset_assets.local.seed import change_rows, seed
    from dataset_assets.release.card import write_card

    uri = fresh_db("cost")
    seed(uri, tables=["image", "audio"], rows=ROWS, seed=5)
    store = LocalStore(tmp_path_factory.mktemp("cost") / "store")
    for date in (FIRST, SECOND):
        if date == SECOND:
            changed = change_rows(uri, "image", fraction=0.01)
        options = ExportOptions(workers=2, incremental=False if request.param == "full" else None)
        export_snapshot(uri, ["image", "audio"], date, store, options)
        write_card(store, date, ["image", "audio"])
    return request.param, store, changed


def shards(store: LocalStore, date: str) -> dict[str, tuple[str, int]]:
    out = {}
    for table in ("image", "audio"):
        manifest = json.loads(store.read_bytes(f"snapshots/{date}/{table}/_manifest.json"))
        out.update({f"{table}/{f['path']}": (f["sha256"], f["bytes"]) for f in manifest["files"]})
    return out


@pytest.mark.parametrize("hub_server", ["xet", "lfs"], indirect=True)
def test_second_push_after_a_one_percent_change(hub_server, two_dates):
    import datasets

    export, store, changed = two_dates
    xet = hub_server.mode == "xet"

    def push(date):
        return publish_snapshot(store, date, REPO, token=hub_server.token, endpoint=hub_server.endpoint,
                                log=lambda msg: None)

    push(FIRST)
    hub_server.reset_counters()
    before = hub_server.cas_usage()
    second = push(SECOND)
    after = hub_server.cas_usage()

    old, new = shards(store, FIRST), shards(store, SECOND)
    sent_shards = {p: s for p, s in new.items() if old.get(p) != s}
    sent_shard_bytes = sum(size for _, size in sent_shards.values())
    assert 0 < len(sent_shards) < len(new)  # the audio shards at least are unchanged
    assert second.kept_files == len(new) - len(sent_shards)  # the Hub held them: skipped
    assert set(sent_shards) <= set(second.added)
    assert hub_server.counters["xet_files_committed" if xet else "lfs_files_uploaded"] == len(sent_shards)
    inline = second.added_bytes - sent_shard_bytes  # README.md and manifests, inside the commit payload

    cas_xorbs = after["xorb_bytes"] - before["xorb_bytes"]
    cas_shards = after["shard_bytes"] - before["shard_bytes"]
    if xet:
        assert second.protocol == "xet"
        assert second.xet_sent_bytes == cas_xorbs + cas_shards  # what the push reports is what arrived
        assert second.sent_bytes == second.xet_sent_bytes + inline
        assert second.xet_new_bytes + second.xet_deduped_bytes == sent_shard_bytes
    else:
        assert second.protocol == "lfs" and cas_xorbs == cas_shards == 0
        assert second.sent_bytes == second.added_bytes and second.xet_new_bytes is None

    print(f"\n[{export} export, {hub_server.mode}] 1% of image changed ({changed}): second push {second.upload_summary()}; "
          f"shards: {len(sent_shards)} sent of {len(new)} ({human_size(sent_shard_bytes)} of "
          f"{human_size(sum(s for _, s in new.values()))}), small files {human_size(inline)}; "
          f"sent_bytes={second.sent_bytes} added_bytes={second.added_bytes} kept_bytes={second.kept_bytes} "
          f"xet_new_bytes={second.xet_new_bytes} xet_deduped_bytes={second.xet_deduped_bytes} "
          f"xet_sent_bytes={second.xet_sent_bytes} cas_xorb_bytes={cas_xorbs} cas_shard_bytes={cas_shards}")

    rows = json.loads(store.read_bytes(f"snapshots/{SECOND}/image/_manifest.json"))["row_count"]
    ds = datasets.load_dataset(REPO, "image", revision=f"snapshot-{SECOND}", split="train")
    assert ds.num_rows == rows
