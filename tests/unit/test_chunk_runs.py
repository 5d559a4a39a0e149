"""Incremental exports without Postgres: changed chunks read in runs, a run's rows split by chunk."""

from __future__ import annotations


def test_changed_chunks_are_read_in_runs_of_consecutive_chunks():
    """One query per run of consecutive changed chunks, at most chunks.MAX_RUN long."""
    from dataset_assets.source.fingerprints import MAX_RUN, runs

    assert runs([9, 3, 5, 4]) == [[3, 4, 5], [9]]
    assert runs([]) == []
    assert runs(list(range(2 * MAX_RUN + 1))) == [list(range(MAX_RUN)), list(range(MAX_RUN, 2 * MAX_RUN)), [2 * MAX_RUN]]
    assert runs([1, 2, 3], longest=2) == [[1, 2], [3]]


def test_rows_of_a_run_split_by_chunk_in_key_order_and_any_order():
    """A run's rows arrive in key order from an index scan (each chunk a slice) or in heap
    order from a bitmap scan (filtered per chunk); both give each chunk its rows, in order."""
    import numpy as np
    import pyarrow as pa

    from dataset_assets.export.run import _by_chunk

    rows = pa.record_batch({"v": list(range(8))})
    for where in ([0, 0, 1, 1, 1, 3, 3, 3], [1, 0, 3, 1, 0, 3, 1, 3]):
        w = np.array(where)
        got = {c: part.column("v").to_pylist() for c, part in _by_chunk(rows, w)}
        assert got == {c: [v for v, x in zip(range(8), where) if x == c] for c in sorted(set(where))}
        assert list(got) == sorted(got)
    assert _by_chunk(rows.slice(0, 0), np.array([], dtype=np.int64)) == []
