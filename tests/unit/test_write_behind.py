"""The write-behind thread (export/shards.py): staged files reach the disk while the export goes on,
every staged parquet file is handed to it by its writer, and a file gone by the time its turn comes
(a failed export's staging removed) stops nothing."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pytest

from dataset_assets.export.shards import ParquetOptions, open_writer, write_behind


@pytest.fixture
def synced(monkeypatch) -> list[str]:
    """The paths write-behind fdatasyncs from now on, in order."""
    seen: list[str] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        real(fd)
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fdatasync", recording)
    return seen


def wait_for(synced: list[str], paths: list, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not all(str(p) in synced for p in paths) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_write_behind_syncs_each_file_once_and_survives_a_missing_one(tmp_path, synced):
    files = [tmp_path / f"shard-{i}.parquet" for i in range(3)]
    for f in files:
        f.write_bytes(os.urandom(1 << 16))
    write_behind(tmp_path / "removed-meanwhile.parquet")  # open fails: skipped, the thread goes on
    for f in files:
        write_behind(f)
    wait_for(synced, files)
    assert [p for p in synced if p.startswith(str(tmp_path))] == [str(f) for f in files]


def test_a_staged_parquet_writer_hands_its_file_over_after_a_row_group_and_at_close(tmp_path, synced):
    path = tmp_path / "train-00000-000.parquet"
    table = pa.table({"x": list(range(1000))})
    w = open_writer(path, table.schema, ParquetOptions(), [], [])
    w.write_table(table, row_group_size=1000)
    wait_for(synced, [path])
    assert str(path) in synced, "handed over after its first row group, before it closes"
    before = synced.count(str(path))
    w.close()
    deadline = time.monotonic() + 30
    while synced.count(str(path)) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert synced.count(str(path)) > before, "handed over again when it closes (the footer)"


def test_a_forked_child_starts_its_own_write_behind_thread(tmp_path):
    write_behind(tmp_path / "before-fork")  # the parent's thread exists now
    target = tmp_path / "child.parquet"
    target.write_bytes(b"x")
    pid = os.fork()
    if pid == 0:  # the child: its copy of the helper must not wait on the parent's thread or lock
        try:
            write_behind(target)
            deadline = time.monotonic() + 20
            while write_behind._pending and time.monotonic() < deadline:
                time.sleep(0.01)
            os._exit(0 if not write_behind._pending and write_behind._thread.is_alive() else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
