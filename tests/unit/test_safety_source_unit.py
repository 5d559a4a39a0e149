"""Issue 15 without a server: store values never in SQL text (item 14), the source identity
comparison (item 6), malformed chunking records, and the two new settings' sentences."""

from __future__ import annotations

import pytest

from dataset_assets.errors import UserError
from dataset_assets.source import fingerprints as fp
from dataset_assets.source.catalog import Column, TableInfo
from dataset_assets.source.plan import TablePlan
from dataset_assets.source.types import table_schema
from dataset_assets.tables import TableConfig

EVIL = ["zq1'); DROP TABLE t; --", 'zq2"\\x', "zq3' OR true --", "zq4\\'); DROP TABLE t; --"]


def plan(key_type: str = "text", typname: str = "text") -> TablePlan:
    cols = (Column("k", key_type, typname, False, -1, False, "b", attnum=1, type_oid=25),
            Column("v", "text", "text", False, -1, True, "b", attnum=2, type_oid=25))
    info = TableInfo("t", 1, cols, ("k",), 8192)
    return TablePlan(TableConfig("t", primary_key="k"), info, table_schema(info, key="k"),
                     ("t.v IS NOT NULL",), {}, 10, 1000, ((None, None),))


@pytest.mark.parametrize("first, last", [(0, 0), (0, 2), (1, 3), (2, 4), (4, 4)])
def test_chunk_reads_carry_boundaries_as_bound_values_only(first, last):
    q = fp.chunk_sql(plan(), EVIL, first, last)
    assert isinstance(q, fp.Query)
    for b in EVIL:
        assert b not in q.sql and b[:3] not in q.sql
    expected = {}
    if first > 0:
        expected["lo"] = EVIL[first - 1]
    if last < len(EVIL):
        expected["hi"] = EVIL[last]
    if last > first:
        expected["cuts"] = EVIL[first:last]
    assert q.bounds == expected
    assert "current_setting('dataset_assets.bounds')" in q.sql or not expected


def test_fingerprints_carry_boundaries_as_bound_values_only():
    q = fp.fingerprint_sql(plan(), EVIL, 12345, ["t.ctid < '(10,0)'::tid"])
    assert q.bounds == {"cuts": EVIL} and not any(b[:3] in q.sql for b in EVIL)


class Cursor:
    def __init__(self):
        self.calls = []

    def execute(self, sql, parameters=None):
        self.calls.append((sql, parameters))

    def fetchall(self):
        return []


def test_execute_binds_the_values_before_the_sql():
    cur = Cursor()
    fp.execute(cur, fp.chunk_sql(plan(), EVIL, 1, 3))
    (bind_sql, params), (sql, none) = cur.calls
    assert bind_sql == "SELECT set_config($1, $2, false)" and params[0] == fp.BOUNDS_SETTING
    import json

    assert json.loads(params[1]) == {"lo": EVIL[0], "hi": EVIL[3], "cuts": EVIL[1:3]}
    assert none is None and not any(b[:3] in sql for b in EVIL)


IDENTITY = {"system_identifier": "7714346215976254125", "timeline": 1, "database": "media", "database_oid": 16384,
            "relations": {"image": "16390/16390:16390", "deleted_image": "16400/16400:16400"},
            "columns": [[1, "identifier", "uuid", 2950], [2, "title", "text", 25]]}


@pytest.mark.parametrize("change, why", [
    ({}, None),
    ({"system_identifier": None}, "system identifier is unknown"),
    ({"timeline": None}, "timeline is unknown"),
    ({"system_identifier": "1"}, "system identifier changed"),
    ({"timeline": 2}, "timeline changed from 1 to 2"),
    ({"database_oid": 16385}, "the database changed"),
    ({"relations": {"image": "16390/16390:17000", "deleted_image": "16400/16400:16400"}}, "image was recreated, truncated or rewritten"),
    ({"relations": {"image": "16390/16390:16390"}}, "deleted_image was recreated"),
    ({"columns": [[1, "identifier", "uuid", 2950], [3, "title", "text", 25]]}, "columns were dropped and added again"),
])
def test_reuse_only_from_the_same_source_identity(change, why):
    new = {**IDENTITY, **change}
    got = fp.reuse_blocker(IDENTITY, new)
    assert (got is None) if why is None else (why in got)
    if why is not None:
        assert fp.reuse_blocker(new, IDENTITY) is not None  # and the other way round
    assert "no source identity" in fp.reuse_blocker(None, IDENTITY)  # manifests before the field


@pytest.mark.parametrize("bad", [
    {"key": "k", "key_type": "text", "boundaries": "a,b", "fingerprints": {}, "basis": "x"},
    {"key": "k", "key_type": "text", "boundaries": ["a", 3], "fingerprints": {}, "basis": "x"},
    {"key": "k", "key_type": "text", "boundaries": [], "fingerprints": {"zero": "1:2"}, "basis": "x"},
    {"key": "k", "key_type": "text", "boundaries": []},
])
def test_a_malformed_chunking_record_is_a_value_error(bad):
    with pytest.raises(ValueError, match="malformed chunking record"):
        fp.Chunking.from_dict(bad)


def test_lock_timeout_setting(monkeypatch):
    from dataset_assets.source.snapshot import lock_timeout_ms

    monkeypatch.delenv("DATASET_ASSETS_LOCK_TIMEOUT_MS", raising=False)
    assert lock_timeout_ms() == 60000
    monkeypatch.setenv("DATASET_ASSETS_LOCK_TIMEOUT_MS", "250")
    assert lock_timeout_ms() == 250
    for bad in ("0", "-5", "1.5", "soon"):
        monkeypatch.setenv("DATASET_ASSETS_LOCK_TIMEOUT_MS", bad)
        with pytest.raises(UserError, match=rf"^DATASET_ASSETS_LOCK_TIMEOUT_MS is '{bad}'; set it to a whole number"):
            lock_timeout_ms()


def test_max_row_drop_setting(monkeypatch):
    from dataset_assets.assets.checks import max_row_drop

    monkeypatch.delenv("DATASET_ASSETS_MAX_ROW_DROP", raising=False)
    assert max_row_drop() == 0.5
    monkeypatch.setenv("DATASET_ASSETS_MAX_ROW_DROP", "0.2")
    assert max_row_drop() == 0.2
    for bad in ("1.5", "-0.1", "half"):
        monkeypatch.setenv("DATASET_ASSETS_MAX_ROW_DROP", bad)
        with pytest.raises(UserError, match=rf"^DATASET_ASSETS_MAX_ROW_DROP is '{bad}'; set it to a fraction from 0 to 1"):
            max_row_drop()
