"""The Hub's limits a release must fit (issue 16, item 4): files per commit, per folder and per repo, file size,
and the uncompressed size of parquet row groups (read from the footers), with small synthetic files and lowered
limits. No server: the push's own check (``_Pusher._check_limits``) runs on a plan, not against a Hub."""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_assets.errors import UserError
from dataset_assets.release.hub import _Pusher
from dataset_assets.release.snapshot import (
    DEFAULT_LIMITS, HubLimits, Shard, commit_limit_problem, file_limit_problem, row_group_problem,
)
from dataset_assets.storage.manifest import FileEntry, Manifest, encode_schema
from dataset_assets.storage.stores import LocalStore

DATE = "2026-03-01"
REPO = "org/data"


def test_the_defaults_are_the_hubs():
    assert DEFAULT_LIMITS == HubLimits(files_per_commit=5_000, entries_per_folder=10_000, files_per_repo=100_000,
                                       file_bytes=200 * 1000**3, row_group_bytes=300_000_000)


def test_files_per_commit():
    sent = [f"t/train-{i:05d}-000.parquet" for i in range(4)] + ["README.md"]
    assert commit_limit_problem(REPO, DATE, sent, set(sent), HubLimits(files_per_commit=5)) is None
    problem = commit_limit_problem(REPO, DATE, sent, set(sent), HubLimits(files_per_commit=4))
    assert problem.startswith(f"Snapshot {DATE} would send 5 files to {REPO} in one commit, more than the 4 files")
    assert "nothing was published" in problem and "larger chunk_rows" in problem and "--shard-mib" in problem


def test_files_per_folder_counts_files_and_subfolders_directly_in_it():
    tree = {".gitattributes", "README.md", "a/x.parquet", "a/y.parquet", "a/sub/z.parquet", "b/x.parquet"}
    limits = HubLimits(entries_per_folder=3)  # a/ holds x, y and sub: 3; the top folder 4
    problem = commit_limit_problem(REPO, DATE, [], tree, limits)
    assert "the top folder of org/data would hold 4 files and folders, more than the Hub's 3 per folder" in problem
    tree.discard(".gitattributes")
    assert commit_limit_problem(REPO, DATE, [], tree, limits) is None
    tree.add("a/w.parquet")
    assert "folder a/ of org/data would hold 4 files and folders" in commit_limit_problem(REPO, DATE, [], tree, limits)
    deep = {f"a/sub/f{i}.parquet" for i in range(5)}
    assert "folder a/sub/ of" in commit_limit_problem(REPO, DATE, [], deep, limits)


def test_files_per_repo():
    tree = {f"t{i}/f.parquet" for i in range(10)}
    assert commit_limit_problem(REPO, DATE, [], tree, HubLimits(files_per_repo=10)) is None
    assert "would hold 10 files, more than the Hub's 9 files per repository" in commit_limit_problem(
        REPO, DATE, [], tree, HubLimits(files_per_repo=9))


def test_file_size():
    shards = [Shard("t", f"t/train-0000{i}-000.parquet", f"k{i}", size, "0" * 64, 1) for i, size in enumerate((5, 11))]
    assert file_limit_problem(REPO, DATE, shards, HubLimits(file_bytes=11)) is None
    problem = file_limit_problem(REPO, DATE, shards, HubLimits(file_bytes=10))
    assert problem.startswith(f"t/train-00001-000.parquet of snapshot {DATE} has 11 bytes, more than the Hub's file "
                              "size limit of 10 bytes")
    assert "smaller shards (--shard-mib)" in problem


def parquet_bytes(rows: int, row_group: int) -> bytes:
    """Zeros compress to almost nothing: the uncompressed size is far above the compressed one."""
    buf = io.BytesIO()
    table = pa.table({"id": pa.array(range(rows), pa.int64()), "zeros": pa.array([0] * rows, pa.int64())})
    pq.write_table(table, buf, row_group_size=row_group, compression="zstd")
    return buf.getvalue()


def test_row_groups_are_measured_uncompressed():
    meta = pq.read_metadata(io.BytesIO(parquet_bytes(3000, 1000)))
    assert meta.num_row_groups == 3
    sizes = [meta.row_group(i).total_byte_size for i in range(3)]
    compressed = [sum(meta.row_group(i).column(c).total_compressed_size for c in range(2)) for i in range(3)]
    assert all(c < u for c, u in zip(compressed, sizes))
    assert row_group_problem("t/a.parquet", meta, DATE, HubLimits(row_group_bytes=max(sizes))) is None
    limit = max(compressed)  # every row group fits compressed, none uncompressed
    problem = row_group_problem("t/a.parquet", meta, DATE, HubLimits(row_group_bytes=limit))
    assert problem.startswith(f"Row group 0 of t/a.parquet (snapshot {DATE}) holds {sizes[0]} uncompressed bytes "
                              f"(1000 rows), more than the {limit} per row group the Hub's dataset viewer reads")
    assert "row_group_mib" in problem


# --- the push's check, on a plan, from a local store and from one read like S3 (no local files) ----------------------
class RemoteLikeStore(LocalStore):
    """A store with no local files (as S3): parquet is read through ``open_parquet``, counted here."""

    def __init__(self, root):
        super().__init__(root)
        self.opened: list[str] = []

    def local_path(self, key):
        return None

    @contextlib.contextmanager
    def open_parquet(self, key):
        self.opened.append(key)
        with super().open_parquet(key) as pf:
            yield pf


def write_snapshot(root: Path, shards: dict[str, bytes]) -> None:
    store = LocalStore(root)
    prefix = f"snapshots/{DATE}/t"
    staging = store.staging_dir(prefix)
    files = []
    for name, data in shards.items():
        (staging / name).write_bytes(data)
        files.append(FileEntry(path=name, rows=1, bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
    manifest = Manifest(table="t", snapshot=DATE, row_count=len(files), files=files, schema=[],
                        arrow_schema=encode_schema(pa.schema([("id", pa.int64())])), source={}, source_snapshot={},
                        created_at="2026-03-01T00:00:00+00:00")
    (staging / "_manifest.json").write_text(manifest.to_json())
    store.commit_dir(staging, prefix)
    store.put_bytes(f"snapshots/{DATE}/README.md", b"---\nlicense: other\n---\n")


def pusher(store, limits: HubLimits) -> _Pusher:
    return _Pusher(store, DATE, REPO, "hf_unused", "http://127.0.0.1:9", lambda m: None, 1, 0.0, limits)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote-like"])
def test_push_checks_footers_of_the_shards_to_upload(tmp_path, remote):
    big, small = parquet_bytes(3000, 3000), parquet_bytes(10, 10)
    write_snapshot(tmp_path / "store", {"train-00000-000.parquet": small, "train-00001-000.parquet": big})
    store = RemoteLikeStore(tmp_path / "store") if remote else LocalStore(tmp_path / "store")
    big_rg = pq.read_metadata(io.BytesIO(big)).row_group(0).total_byte_size
    p = pusher(store, HubLimits(row_group_bytes=big_rg - 1))
    plan = p._plan_from(None, {})
    assert plan.tree_after() == {"README.md", "t/_manifest.json", "t/train-00000-000.parquet",
                                 "t/train-00001-000.parquet"}
    with pytest.raises(UserError, match=r"^Row group 0 of t/train-00001-000\.parquet .* more than the"):
        p._check_limits(plan, None)  # a dry run: the footers through open_parquet when there is no local file
    if remote:
        assert store.opened == [f"snapshots/{DATE}/t/train-00000-000.parquet", f"snapshots/{DATE}/t/train-00001-000.parquet"]

    ok = pusher(store, HubLimits(row_group_bytes=big_rg))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    ok._check_limits(plan, tmp)  # a push: the footers of the copies the upload sends (nothing read twice)
    ok._check_limits(plan, tmp)  # a retry re-plans: footers already checked are not read again
    assert len(ok._footers_checked) == 2
    if remote:
        assert len(store.opened) == 2  # not more: the push read the footers from its copies in tmp
        assert sorted(f.name for f in tmp.rglob("*.parquet")) == ["train-00000-000.parquet", "train-00001-000.parquet"]
    else:
        assert not any(tmp.iterdir())  # local files are read in place


def test_push_counts_the_tree_after_the_commit(tmp_path):
    write_snapshot(tmp_path / "store", {"train-00000-000.parquet": parquet_bytes(10, 10)})
    p = pusher(LocalStore(tmp_path / "store"), HubLimits(entries_per_folder=2))
    plan = p._plan_from("abc", {})
    plan.remote = {".gitattributes", "README.md", "old/train-00000-000.parquet"}
    plan.delete = []
    with pytest.raises(UserError, match="the top folder of org/data would hold 4 files and folders"):
        p._check_limits(plan, None)  # .gitattributes, README.md, old/, t/
