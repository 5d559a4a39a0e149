"""The store contract (tests/store_contract.py) on ``LocalStore``, and what only it does:
reused files staged as hard links."""

from __future__ import annotations

import os

import pytest
from store_contract import StoreContract, stage

from dataset_assets.errors import StoreError
from dataset_assets.storage.stores import LocalStore


class TestLocalStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return LocalStore(tmp_path / "store")


def test_local_stage_reused_links_from_several_folders_and_replaces_stale_files(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.commit_dir(stage(store, "snap/d1/t", {"a.parquet": b"a1", "b.parquet": b"b1"}), "snap/d1/t")
    store.commit_dir(stage(store, "snap/d2/t", {"c.parquet": b"c2"}), "snap/d2/t")
    staging = stage(store, "snap/d3/t", {"a.parquet": b"stale, from an interrupted run"})
    (staging / "sub").mkdir()
    store.stage_reused(staging, {"a.parquet": "snap/d1/t/a.parquet", "b.parquet": "snap/d1/t/b.parquet",
                                 "c.parquet": "snap/d2/t/c.parquet", "sub/c.parquet": "snap/d2/t/c.parquet"})
    got = {p.relative_to(staging).as_posix(): p.read_bytes() for p in staging.rglob("*.parquet")}
    assert got == {"a.parquet": b"a1", "b.parquet": b"b1", "c.parquet": b"c2", "sub/c.parquet": b"c2"}
    assert os.stat(staging / "a.parquet").st_ino == os.stat(store.local_path("snap/d1/t/a.parquet")).st_ino  # a link, not a copy
    with pytest.raises(StoreError, match="outside the store"):
        store.stage_reused(staging, {"x.parquet": "../elsewhere/x.parquet"})
