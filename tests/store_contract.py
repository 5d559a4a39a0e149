"""The store contract: the same assertions for every store. A test class that inherits
``StoreContract`` and defines a ``store`` fixture runs them all: ``TestLocalStore`` in
tests/unit/test_stores_local.py, ``TestS3Store`` (moto) in tests/integration/test_stores_s3.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dataset_assets.errors import SnapshotExists
from dataset_assets.storage.stores import SUCCESS, StoredObject

MiB = 1024 * 1024


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def stage(store, prefix: str, files: dict[str, bytes]) -> Path:
    staging = store.staging_dir(prefix)
    for name, data in files.items():
        write(staging / name, data)
    return staging


def keys(store, prefix: str) -> list[str]:
    return [o.key for o in store.list(prefix)]


class StoreContract:
    """Objects, listing, copies, staging and committing, and the primary-key check reading
    shards through the store; the subclass's ``store`` fixture gives the store."""

    def test_put_read_exists(self, store, tmp_path):
        store.put_bytes("a/b/one.txt", b"one")
        store.put_file("a/b/two.bin", write(tmp_path / "src" / "two.bin", b"\x00two" * 1000))
        assert store.read_bytes("a/b/one.txt") == b"one"
        assert store.read_bytes("a/b/two.bin") == b"\x00two" * 1000
        assert store.exists("a/b/one.txt")
        assert not store.exists("a/b/missing.txt")
        assert store.sha256("a/b/one.txt") == hashlib.sha256(b"one").hexdigest()
        with store.open("a/b/one.txt") as fh:
            assert fh.read(2) == b"on"
            assert fh.read() == b"e"
        with pytest.raises(FileNotFoundError):
            store.read_bytes("a/b/missing.txt")

    def test_put_overwrites(self, store):
        store.put_bytes("k", b"old")
        store.put_bytes("k", b"new!")
        assert store.read_bytes("k") == b"new!"
        assert store.list("k") == [StoredObject("k", 4)]

    def test_list_is_recursive_sorted_and_path_based(self, store):
        for key in ["s/2026-01-02/t/b.parquet", "s/2026-01-02/t/a.parquet", "s/2026-01-02/u/x", "s/2026-01-020/y", "top"]:
            store.put_bytes(key, key.encode())
        assert keys(store, "s/2026-01-02") == ["s/2026-01-02/t/a.parquet", "s/2026-01-02/t/b.parquet", "s/2026-01-02/u/x"]
        assert keys(store, "s/2026-01-02/") == keys(store, "s/2026-01-02")
        assert store.list("s/2026-01-02/t/a.parquet") == [StoredObject("s/2026-01-02/t/a.parquet", len("s/2026-01-02/t/a.parquet"))]
        assert store.list("nothing/here") == []
        assert keys(store, "") == sorted(keys(store, "s") + ["top"])
        assert list(store.iter_prefixes("s")) == ["s/2026-01-02", "s/2026-01-020"]

    def test_iter_prefixes_lists_one_level(self, store):
        store.put_bytes("snapshots/2026-01-02/image/a.parquet", b"1")
        store.put_bytes("snapshots/2026-01-02/audio/deep/b.parquet", b"2")
        store.put_bytes("snapshots/2026-01-01/README.md", b"3")
        store.put_bytes("snapshots/top.txt", b"4")
        assert list(store.iter_prefixes("snapshots")) == ["snapshots/2026-01-01", "snapshots/2026-01-02"]
        assert list(store.iter_prefixes("snapshots/2026-01-02/")) == ["snapshots/2026-01-02/audio", "snapshots/2026-01-02/image"]
        assert list(store.iter_prefixes("snapshots/2026-01-01")) == []
        assert list(store.iter_prefixes("nothing/here")) == []
        store.staging_dir("snapshots/2026-01-03/image")  # staging is never a child
        assert "snapshots/.staging" not in list(store.iter_prefixes("snapshots"))
        assert all(not p.startswith(".") for p in store.iter_prefixes(""))

    def test_delete_prefix(self, store):
        for key in ["d/x/1", "d/x/sub/2", "d/xy/3", "d/z"]:
            store.put_bytes(key, b"1")
        store.delete_prefix("d/x")
        assert keys(store, "d") == ["d/xy/3", "d/z"]
        store.delete_prefix("d/z")  # a single object
        assert keys(store, "d") == ["d/xy/3"]
        store.delete_prefix("d/nothing")  # no error

    def test_copy(self, store):
        store.put_bytes("src/a", b"payload")
        store.copy("src/a", "dst/deep/a")
        assert store.read_bytes("dst/deep/a") == b"payload"
        assert store.read_bytes("src/a") == b"payload"
        with pytest.raises(FileNotFoundError):
            store.copy("src/missing", "dst/b")

    def test_staging_dir_is_fresh(self, store):
        first = store.staging_dir("snap/t")
        write(first / "leftover.parquet", b"x")
        second = store.staging_dir("snap/t")
        assert second.is_dir() and list(second.iterdir()) == []
        assert store.staging_dir("snap/other") != second

    def test_publish_makes_files_visible_with_success(self, store):
        staging = stage(store, "snap/2026-01-01/t", {"part-0.parquet": b"p0", "sub/part-1.parquet": b"p1" * 100, "_manifest.json": b"{}"})
        assert not store.is_complete("snap/2026-01-01/t")
        store.commit_dir(staging, "snap/2026-01-01/t")
        assert store.is_complete("snap/2026-01-01/t")
        assert keys(store, "snap/2026-01-01/t") == [
            "snap/2026-01-01/t/_SUCCESS",
            "snap/2026-01-01/t/_manifest.json",
            "snap/2026-01-01/t/part-0.parquet",
            "snap/2026-01-01/t/sub/part-1.parquet",
        ]
        assert store.read_bytes("snap/2026-01-01/t/sub/part-1.parquet") == b"p1" * 100
        assert not staging.exists()

    def test_publish_keeps_staged_success_content(self, store):
        staging = stage(store, "snap/t", {"a": b"a", SUCCESS: b"done\n"})
        store.commit_dir(staging, "snap/t")
        assert store.read_bytes(f"snap/t/{SUCCESS}") == b"done\n"

    def test_publish_over_complete_prefix_requires_replace(self, store):
        store.commit_dir(stage(store, "snap/t", {"old.parquet": b"old", "both.parquet": b"old"}), "snap/t")
        staging = stage(store, "snap/t", {"new.parquet": b"new", "both.parquet": b"new"})
        with pytest.raises(SnapshotExists, match="snap/t is already complete"):
            store.commit_dir(staging, "snap/t")
        assert store.read_bytes("snap/t/both.parquet") == b"old"  # untouched

        store.commit_dir(staging, "snap/t", replace=True)
        assert keys(store, "snap/t") == ["snap/t/_SUCCESS", "snap/t/both.parquet", "snap/t/new.parquet"]
        assert store.read_bytes("snap/t/both.parquet") == b"new"

    def test_publish_clears_leftovers_of_incomplete_prefix(self, store):
        store.put_bytes("snap/t/stale-part.parquet", b"from an interrupted run")
        store.put_bytes("snap/t/nested/stale", b"x")
        store.commit_dir(stage(store, "snap/t", {"part.parquet": b"fresh"}), "snap/t")  # no replace needed
        assert keys(store, "snap/t") == ["snap/t/_SUCCESS", "snap/t/part.parquet"]

    def test_publish_reuse_copies(self, store):
        store.commit_dir(stage(store, "snap/d1/t", {"p0.parquet": b"unchanged", "p1.parquet": b"v1"}), "snap/d1/t")
        staging = stage(store, "snap/d2/t", {"p1.parquet": b"v2"})
        store.commit_dir(staging, "snap/d2/t", reuse={"p0.parquet": "snap/d1/t/p0.parquet"})
        assert keys(store, "snap/d2/t") == ["snap/d2/t/_SUCCESS", "snap/d2/t/p0.parquet", "snap/d2/t/p1.parquet"]
        assert store.read_bytes("snap/d2/t/p0.parquet") == b"unchanged"
        assert store.read_bytes("snap/d1/t/p0.parquet") == b"unchanged"  # the source stays

    def test_publish_replace_reusing_from_the_same_prefix(self, store):
        store.commit_dir(stage(store, "snap/t", {"keep.parquet": b"keep", "drop.parquet": b"drop"}), "snap/t")
        staging = stage(store, "snap/t", {"new.parquet": b"new"})
        store.commit_dir(staging, "snap/t", reuse={"renamed.parquet": "snap/t/keep.parquet", "keep.parquet": "snap/t/keep.parquet"}, replace=True)
        assert keys(store, "snap/t") == ["snap/t/_SUCCESS", "snap/t/keep.parquet", "snap/t/new.parquet", "snap/t/renamed.parquet"]
        assert store.read_bytes("snap/t/renamed.parquet") == b"keep"
        assert keys(store, "") == keys(store, "snap/t")  # no temporary copies left visible

    def test_primary_key_report_reads_shards_from_the_store(self, store, tmp_path):
        """The blocking primary-key check reads every shard through the store (spooled from S3),
        and finds nulls and duplicates across shards."""
        from types import SimpleNamespace

        import pyarrow as pa
        import pyarrow.parquet as pq

        from dataset_assets.storage.checks import primary_key_report
        from dataset_assets.storage.manifest import FileEntry

        shards = {"a.parquet": ["k1", "k2", None], "b.parquet": ["k3", "k1", "k4"]}
        files = {}
        for name, ids in shards.items():
            pq.write_table(pa.table({"identifier": pa.array(ids, pa.string())}), tmp_path / name)
            files[name] = (tmp_path / name).read_bytes()
        store.commit_dir(stage(store, "snap/t", files), "snap/t")
        manifest = SimpleNamespace(files=[FileEntry(path=n, rows=3, bytes=len(b), sha256="") for n, b in files.items()])
        r = primary_key_report(store, "snap/t", manifest, "identifier")
        assert (r.rows, r.nulls, r.duplicates, r.examples, r.ok) == (6, 1, 1, ["k1"], False)
