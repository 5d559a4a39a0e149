"""The type map against a real Postgres: every value comes out exactly as Postgres holds it,
or the export fails before publishing with one sentence naming table, column and row key
(issue 15, items 1-3)."""

from __future__ import annotations

import decimal
import json

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_assets.errors import UserError
from dataset_assets.export.run import ExportOptions, export_snapshot

DATE = "2026-11-21"


def _configure(tmp_path, monkeypatch, table: str, settings: str = "primary_key: id") -> None:
    from dataset_assets import tables as config

    cfg = tmp_path / "tables.yaml"
    cfg.write_text(f"tables:\n  {table}: {{{settings}}}\n")
    monkeypatch.setenv("DATASET_ASSETS_TABLES", str(cfg))
    config._load.cache_clear()


@pytest.fixture
def make_table(fresh_db, tmp_path, monkeypatch):
    """Factory: a new database holding one table built by ``sql`` (statements), configured for export."""
    from dataset_assets import tables as config

    def make(table: str, *sql: str, settings: str = "primary_key: id") -> str:
        uri = fresh_db("types")
        with psycopg.connect(uri, autocommit=True) as c:
            for s in sql:
                c.execute(s)
        _configure(tmp_path, monkeypatch, table, settings)
        return uri

    yield make
    config._load.cache_clear()


def read_back(store, table: str) -> pa.Table:
    folder = store.local_path(f"snapshots/{DATE}/{table}")
    return pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob("*.parquet"))])


def by_id(table: pa.Table) -> dict:
    return {r["id"]: r for r in table.to_pylist()}


def assert_refused(uri, table, store, pattern, incremental):
    with pytest.raises(UserError, match=pattern) as info:
        export_snapshot(uri, [table], DATE, store, ExportOptions(workers=2, incremental=incremental))
    msg = str(info.value)
    assert "\n" not in msg and msg.count(". ") == 0 and msg.endswith("."), msg  # one sentence
    assert store.list("snapshots") == [] or not store.is_complete(f"snapshots/{DATE}/{table}")
    return msg


# --- 1. infinity in timestamps and dates ------------------------------------------------

@pytest.mark.parametrize("incremental", [False, True])
@pytest.mark.parametrize("column, typ, value", [
    ("tz", "timestamptz", "infinity"),
    ("tz", "timestamptz", "-infinity"),
    ("ts", "timestamp", "infinity"),
    ("ts", "timestamp", "-infinity"),
    ("d", "date", "infinity"),
    ("d", "date", "-infinity"),
])
def test_infinite_timestamps_and_dates_are_refused_naming_the_row(make_table, store, column, typ, value, incremental):
    uri = make_table(
        "inf",
        f"CREATE TABLE inf (id int8 PRIMARY KEY, {column} {typ})",
        "INSERT INTO inf SELECT g, '2020-01-02' FROM generate_series(1, 3000) g",
        f"UPDATE inf SET {column} = '{value}' WHERE id = 2345",
    )
    msg = assert_refused(uri, "inf", store, rf"inf\.{column}\b.*'{value}'.*id = 2345", incremental)
    assert "tables.yaml" in msg


def test_infinity_inside_a_timestamp_array_is_refused(make_table, store):
    uri = make_table(
        "infarr",
        "CREATE TABLE infarr (id int8 PRIMARY KEY, tsa timestamptz[])",
        "INSERT INTO infarr VALUES (1, '{2020-01-01 00:00:00+00,NULL}'), (2, NULL), (7, '{NULL,infinity}')",
    )
    assert_refused(uri, "infarr", store, r"infarr\.tsa\b.*'infinity'.*id = 7", False)


def test_extreme_but_finite_timestamps_and_dates_round_trip(make_table, store):
    """The ends of what Postgres holds that parquet can hold too come out exact (not refused)."""
    uri = make_table(
        "edges",
        "CREATE TABLE edges (id int8 PRIMARY KEY, tz timestamptz, ts timestamp, d date)",
        "INSERT INTO edges VALUES (1, '4714-11-24 00:00:00+00 BC', '4714-11-24 00:00:00 BC', '4714-11-24 BC'),"
        " (2, '9999-12-31 23:59:59.999999+00', '9999-12-31 23:59:59.999999', '5874897-12-31'),"
        " (3, '0001-01-01 00:00:00+00', '1970-01-01 00:00:00', '0001-01-01')",
    )
    export_snapshot(uri, ["edges"], DATE, store, ExportOptions(workers=1, incremental=False))
    got = read_back(store, "edges")
    ints = {name: got.column(name).combine_chunks().view(pa.int64() if name != "d" else pa.int32()).to_pylist()
            for name in ("tz", "ts", "d")}
    with psycopg.connect(uri) as c:
        want = c.execute("SELECT (extract(epoch FROM tz) * 1000000)::int8, (extract(epoch FROM ts) * 1000000)::int8,"
                         " d - '1970-01-01'::date FROM edges ORDER BY id").fetchall()
    order = got.column("id").to_pylist()
    assert [ints["tz"][order.index(i)] for i in (1, 2, 3)] == [w[0] for w in want]
    assert [ints["ts"][order.index(i)] for i in (1, 2, 3)] == [w[1] for w in want]
    assert [ints["d"][order.index(i)] for i in (1, 2, 3)] == [w[2] for w in want]


def test_timestamp_beyond_parquet_range_is_refused(make_table, store):
    """Postgres holds timestamps up to 294276 AD; microseconds since 1970 in int64 end in 294247."""
    uri = make_table(
        "far",
        "CREATE TABLE far (id int8 PRIMARY KEY, ts timestamp)",
        "INSERT INTO far VALUES (1, '2020-01-01'), (2, '294270-01-01 00:00:00')",
    )
    assert_refused(uri, "far", store, r"far\.ts\b.*id = 2", False)


# --- 2. multi-dimensional arrays ---------------------------------------------------------

@pytest.mark.parametrize("incremental", [False, True])
def test_multidimensional_array_is_refused_not_flattened(make_table, store, incremental):
    uri = make_table(
        "md",
        "CREATE TABLE md (id int8 PRIMARY KEY, a int[], t text[])",
        "INSERT INTO md SELECT g, ARRAY[g, g + 1], '{x}' FROM generate_series(1, 3000) g",
        "UPDATE md SET a = '{{1,2},{3,4}}' WHERE id = 1234",
    )
    msg = assert_refused(uri, "md", store, r"md\.a\b.*multi-dimensional.*id = 1234", incremental)
    assert "[1:2][1:2]" in msg


def test_array_with_other_lower_bound_is_refused(make_table, store):
    """'[0:1]={5,6}' is not '{5,6}' in Postgres; a list cannot keep the subscripts."""
    uri = make_table(
        "lb",
        "CREATE TABLE lb (id text PRIMARY KEY, a int[])",
        "INSERT INTO lb VALUES ('one', '{1}'), ('zero', '[0:1]={5,6}'), ('none', NULL), ('empty', '{}')",
    )
    assert_refused(uri, "lb", store, r"lb\.a\b.*\[0:1\].*id = 'zero'", False)


def test_multidimensional_array_in_an_excluded_row_is_no_problem(make_table, store):
    uri = make_table(
        "mdx",
        "CREATE TABLE mdx (id int8 PRIMARY KEY, a int[], removed_from_source bool NOT NULL DEFAULT false)",
        "INSERT INTO mdx VALUES (1, '{1,2}', false), (2, '{{1,2},{3,4}}', true), (3, '{}', false), (4, NULL, false)",
    )
    export_snapshot(uri, ["mdx"], DATE, store, ExportOptions(workers=1, incremental=False))
    assert by_id(read_back(store, "mdx")) == {
        1: {"id": 1, "a": [1, 2], "removed_from_source": False},
        3: {"id": 3, "a": [], "removed_from_source": False},
        4: {"id": 4, "a": None, "removed_from_source": False},
    }


def test_multidimensional_array_in_a_domain_over_an_array_is_refused(make_table, store):
    uri = make_table(
        "mdd",
        "CREATE DOMAIN tag_list AS text[]",
        "CREATE TABLE mdd (id int8 PRIMARY KEY, tags tag_list)",
        "INSERT INTO mdd VALUES (1, '{a,b}'), (2, '{{a},{b}}')",
    )
    assert_refused(uri, "mdd", store, r"mdd\.tags\b.*multi-dimensional.*id = 2", False)


# --- 3. the rest of the type map ----------------------------------------------------------

def test_numeric_scales_round_trip(make_table, store):
    """numeric(p,s) with negative scale (Postgres 15+) and scale above precision, as exact decimals."""
    with psycopg.connect(make_table("probe", "SELECT 1")) as c:
        if c.info.server_version < 150000:
            pytest.skip("numeric(p,s) with s < 0 or s > p needs Postgres 15")
    uri = make_table(
        "num",
        "CREATE TABLE num (id int8 PRIMARY KEY, neg numeric(5,-2), tiny numeric(3,5), n numeric(12,3), big numeric(60,10), huge numeric(100,2))",
        "INSERT INTO num VALUES (1, 9999900, 0.00999, 123456789.123, 12345678901234567890123456789012345678901234567890.0123456789, 1e97),"
        " (2, -12345, -0.00123, -0.001, -1, -0.01), (3, 0, 0, 0, 0, 0), (4, NULL, NULL, NULL, NULL, NULL)",
    )
    export_snapshot(uri, ["num"], DATE, store, ExportOptions(workers=1, incremental=False))
    got = read_back(store, "num")
    assert got.schema.field("neg").type == pa.decimal128(7, 0)
    assert got.schema.field("tiny").type == pa.decimal128(5, 5)
    assert got.schema.field("n").type == pa.decimal128(12, 3)
    assert got.schema.field("big").type == pa.decimal256(60, 10)
    assert got.schema.field("huge").type == pa.string()
    with psycopg.connect(uri) as c:
        want = {r[0]: r for r in c.execute("SELECT id, neg, tiny, n, big, huge::text FROM num").fetchall()}
    for i, row in by_id(got).items():
        w = want[i]
        assert (row["neg"], row["tiny"], row["n"], row["big"], row["huge"]) == w[1:], i
    assert by_id(got)[2]["neg"] == decimal.Decimal(-12300)


@pytest.mark.parametrize("incremental", [False, True])
def test_nan_in_constrained_numeric_is_refused(make_table, store, incremental):
    uri = make_table(
        "nan",
        "CREATE TABLE nan (id int8 PRIMARY KEY, price numeric(7,2))",
        "INSERT INTO nan SELECT g, g / 100.0 FROM generate_series(1, 3000) g",
        "UPDATE nan SET price = 'NaN' WHERE id = 1999",
    )
    msg = assert_refused(uri, "nan", store, r"nan\.price\b.*NaN.*id = 1999", incremental)
    assert "numeric(7,2)" in msg


def test_nan_in_a_constrained_numeric_array_is_refused(make_table, store):
    uri = make_table(
        "nana",
        "CREATE TABLE nana (id int8 PRIMARY KEY, prices numeric(7,2)[])",
        "INSERT INTO nana VALUES (1, '{1.5,NULL}'), (2, NULL), (3, '{2,NaN}')",
    )
    assert_refused(uri, "nana", store, r"nana\.prices\b.*NaN.*id = 3", False)


def test_enums_domains_and_arrays_of_them_round_trip(make_table, store):
    uri = make_table(
        "ed",
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
        "CREATE DOMAIN positive AS int CHECK (VALUE > 0)",
        "CREATE DOMAIN amount AS numeric(7,2)",
        "CREATE DOMAIN label AS varchar(20)",
        "CREATE DOMAIN small_label AS label",
        "CREATE DOMAIN labels AS text[]",
        "CREATE TABLE ed (id int8 PRIMARY KEY, m mood, ms mood[], p positive NOT NULL, ps positive[], a amount, l small_label, ls labels)",
        "INSERT INTO ed VALUES (1, 'happy', '{sad,NULL,ok}', 5, '{1,NULL}', 12345.67, 'x', '{a,NULL}'),"
        " (2, NULL, NULL, 1, NULL, NULL, NULL, NULL), (3, 'sad', '{}', 2147483647, '{}', -0.01, '', '{}')",
    )
    export_snapshot(uri, ["ed"], DATE, store, ExportOptions(workers=1, incremental=False))
    got = read_back(store, "ed")
    s = got.schema
    assert s.field("m").type == pa.string() and s.field("ms").type == pa.list_(pa.string())
    assert s.field("p").type == pa.int32() and not s.field("p").nullable
    assert s.field("ps").type == pa.list_(pa.int32())
    assert s.field("a").type == pa.decimal128(7, 2)
    assert s.field("l").type == pa.string() and s.field("ls").type == pa.list_(pa.string())
    with psycopg.connect(uri) as c:
        want = {r[0]: r for r in c.execute("SELECT id, m::text, ms::text[], p, ps::int[], a, l, ls FROM ed").fetchall()}
    for i, row in by_id(got).items():
        assert tuple(row.values()) == want[i], i


def test_interval_round_trips_as_months_days_microseconds(make_table, store):
    uri = make_table(
        "iv",
        "CREATE TABLE iv (id int8 PRIMARY KEY, i interval, ia interval[])",
        "INSERT INTO iv VALUES (1, '1 year 2 mons 3 days 04:05:06.789012', '{1 day,NULL}'),"
        " (2, '-1 days -00:00:00.000001', NULL), (3, NULL, '{}'), (4, '178000000 years', '{-2 mons 1 hour}'),"
        " (5, '2562047 hours', '{0}')",
    )
    export_snapshot(uri, ["iv"], DATE, store, ExportOptions(workers=1, incremental=False))
    got = read_back(store, "iv")
    item = pa.struct([pa.field("months", pa.int32()), pa.field("days", pa.int32()), pa.field("microseconds", pa.int64())])
    assert got.schema.field("i").type == item and got.schema.field("ia").type == pa.list_(item)

    def fields(e):  # Postgres' own fields of an interval: extract() in the same database
        return (f"CASE WHEN {e} IS NULL THEN NULL ELSE ARRAY[(extract(year FROM {e}) * 12 + extract(month FROM {e}))::int8,"
                f" extract(day FROM {e})::int8, (extract(hour FROM {e}) * 3600000000 + extract(minute FROM {e}) * 60000000"
                f" + extract(microseconds FROM {e}))::int8] END")

    def parts(values):
        return None if values is None else dict(zip(("months", "days", "microseconds"), values))

    with psycopg.connect(uri) as c:
        want = {}
        for i, one, null in c.execute(f"SELECT id, {fields('i')}, ia IS NULL FROM iv").fetchall():
            arr = c.execute(f"SELECT {fields('e')} FROM iv, unnest(ia) WITH ORDINALITY u(e, o) "
                            "WHERE id = %s ORDER BY o", (i,)).fetchall()
            want[i] = (parts(one), None if null else [parts(a) for a, in arr])
    rows = by_id(got)
    assert set(rows) == set(want)
    for i, (one, arr) in want.items():
        assert (rows[i]["i"], rows[i]["ia"]) == (one, arr), i
    assert rows[1]["i"] == {"months": 14, "days": 3, "microseconds": 14706789012}
    assert rows[2]["i"] == {"months": 0, "days": -1, "microseconds": -1}
    assert rows[3]["i"] is None and rows[3]["ia"] == []
    assert rows[4]["i"] == {"months": 2136000000, "days": 0, "microseconds": 0}
    assert rows[5]["i"] == {"months": 0, "days": 0, "microseconds": 2562047 * 3600 * 10**6}
    assert rows[1]["ia"] == [{"months": 0, "days": 1, "microseconds": 0}, None]
    assert rows[2]["ia"] is None


def test_bytea_json_jsonb_and_timestamp_round_trip(make_table, store):
    uri = make_table(
        "misc",
        "CREATE TABLE misc (id int8 PRIMARY KEY, b bytea, j json, jb jsonb, ts timestamp, tz timestamptz, d date)",
        """INSERT INTO misc VALUES
           (1, '\\x00ff0a', '{"b": 1,  "a": [1, 2.50],"a": null}', '{"b": 1,  "a": [1, 2.50],"a": null}',
            '2020-02-29 23:59:59.999999', '2020-02-29 23:59:59.999999+05:30', '2020-02-29'),
           (2, '', '  "ü\\u00e9"  ', '"ü\\u00e9"', '1900-01-01 00:00:00', '1900-01-01 00:00:00+00', '1900-01-01'),
           (3, NULL, NULL, NULL, NULL, NULL, NULL),
           (4, '\\x', 'null', 'null', '0001-01-01 00:00:00', '1969-12-31 23:59:59.999999+00', '1969-12-31')""",
    )
    export_snapshot(uri, ["misc"], DATE, store, ExportOptions(workers=1, incremental=False))
    got = read_back(store, "misc")
    s = got.schema
    assert (s.field("b").type, s.field("j").type, s.field("jb").type) == (pa.binary(), pa.string(), pa.string())
    assert s.field("ts").type == pa.timestamp("us") and s.field("tz").type == pa.timestamp("us", tz="UTC")
    with psycopg.connect(uri) as c:
        want = {r[0]: r for r in c.execute("SELECT id, b, j::text, jb::text, ts, tz, d FROM misc").fetchall()}
    for i, row in by_id(got).items():
        w = want[i]
        assert row["b"] == (None if w[1] is None else bytes(w[1])), i
        assert row["j"] == w[2] and row["jb"] == w[3], i  # json verbatim, jsonb in Postgres' normal form
        assert row["ts"] == w[4] and row["tz"] == w[5] and row["d"] == w[6], i
    assert by_id(got)[1]["j"] == '{"b": 1,  "a": [1, 2.50],"a": null}'
    assert by_id(got)[1]["jb"] == '{"a": null, "b": 1}'
    assert json.loads(by_id(got)[2]["j"]) == "üé"


def test_arrays_of_uuid_numeric_and_timestamps_with_nulls_round_trip(make_table, store):
    uri = make_table(
        "arrs",
        "CREATE TABLE arrs (id int8 PRIMARY KEY, u uuid[], n numeric[], nc numeric(6,3)[], tz timestamptz[], ts timestamp[], d date[], b bytea[], j jsonb[])",
        """INSERT INTO arrs VALUES
           (1, '{00000000-0000-0000-0000-000000000001,NULL,ffffffff-ffff-ffff-ffff-ffffffffffff}',
               '{1.5,NULL,NaN,Infinity,-Infinity,0.000000000000000000000000000000000000000001}', '{1.5,NULL,-999.999}',
               '{"2020-01-01 00:00:00+00",NULL,"1969-12-31 23:59:59.999999+00"}', '{"2020-01-01 12:00:00",NULL}',
               '{2020-01-01,NULL}', '{"\\\\x00ff",NULL}', '{"{\\"a\\": 1}",NULL}'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
           (3, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}'),
           (4, '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}')""",
    )
    export_snapshot(uri, ["arrs"], DATE, store, ExportOptions(workers=1, incremental=False))
    got = read_back(store, "arrs")
    s = got.schema
    assert s.field("u").type == pa.list_(pa.string()) and s.field("n").type == pa.list_(pa.string())
    assert s.field("nc").type == pa.list_(pa.decimal128(6, 3))
    assert s.field("tz").type == pa.list_(pa.timestamp("us", tz="UTC"))
    with psycopg.connect(uri) as c:
        want = {r[0]: r for r in c.execute(
            "SELECT id, u::text[], n::text[], nc, tz, ts, d, b, j::text[] FROM arrs").fetchall()}
    for i, row in by_id(got).items():
        w = want[i]
        assert row["u"] == w[1] and row["n"] == w[2] and row["nc"] == w[3], i
        assert row["tz"] == w[4] and row["ts"] == w[5] and row["d"] == w[6], i
        assert row["b"] == (None if w[7] is None else [None if v is None else bytes(v) for v in w[7]]), i
        assert row["j"] == w[8], i
    assert by_id(got)[1]["n"][2:5] == ["NaN", "Infinity", "-Infinity"]
