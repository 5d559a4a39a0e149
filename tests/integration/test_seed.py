"""Sample data on the embedded PostgreSQL: shape, determinism and edge cases."""

from __future__ import annotations

import re

import adbc_driver_postgresql.dbapi as pg
import pytest

from dataset_assets.local import seed as S
from dataset_assets.errors import UserError

ROWS = 5_000
TABLES = ("image", "audio")


# --- fixtures -------------------------------------------------------------------
# ``fresh_db`` (conftest.py) makes empty databases on the test server
# (.local/test-pg, or DATASET_ASSETS_TEST_PG_URI) and drops them at the end.

@pytest.fixture(scope="module")
def seeded(fresh_db):
    uri = fresh_db("seed")
    return uri, S.seed(uri, rows=ROWS, seed=42)


def query(uri: str, sql: str) -> list[tuple]:
    with pg.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def scalar(uri: str, sql: str):
    return query(uri, sql)[0][0]


def content_hash(uri: str, table: str) -> str:
    return scalar(uri, f"SELECT md5(string_agg(t::text, '|' ORDER BY identifier)) FROM {table} t")


# --- tests ---------------------------------------------------------------------

def test_row_counts(seeded):
    uri, counts = seeded
    for t in TABLES:
        assert counts[t] == ROWS
        assert scalar(uri, f"SELECT count(*) FROM {t}") == ROWS
        assert counts[f"deleted_{t}"] == scalar(uri, f"SELECT count(*) FROM deleted_{t}")


def test_schema_follows_the_catalog(seeded):
    uri, _ = seeded
    for t in TABLES:
        cols = [r[0] for r in query(uri, f"SELECT column_name FROM information_schema.columns WHERE table_name = '{t}' ORDER BY ordinal_position")]
        assert cols == S.column_names(t)
        tomb = [r[0] for r in query(uri, f"SELECT column_name FROM information_schema.columns WHERE table_name = 'deleted_{t}' ORDER BY ordinal_position")]
        assert tomb == cols + ["deleted_on", "deleted_reason"]
        indexes = {r[0] for r in query(uri, f"SELECT indexname FROM pg_indexes WHERE tablename = '{t}'")}
        assert {f"{t}_pkey", f"{t}_identifier_key", f"{t}_url_key", f"{t}_provider_fid_idx", f"{t}_updated_on_idx"} <= indexes
        assert scalar(uri, f"SELECT count(*) FROM pg_indexes WHERE tablename = 'deleted_{t}' AND indexname = 'deleted_{t}_pkey'") == 1


def test_same_seed_same_content_other_seed_differs(seeded, fresh_db):
    uri, _ = seeded
    twin = fresh_db("twin")
    other = fresh_db("other")
    S.seed(twin, rows=ROWS, seed=42)
    S.seed(other, rows=ROWS, seed=43)
    for t in TABLES + ("deleted_image", "deleted_audio"):
        assert content_hash(uri, t) == content_hash(twin, t), t
        assert content_hash(uri, t) != content_hash(other, t), t


def test_nulls_in_every_nullable_column(seeded):
    uri, _ = seeded
    for t in TABLES:
        nullable = [r[0] for r in query(uri, f"SELECT column_name FROM information_schema.columns WHERE table_name = '{t}' AND is_nullable = 'YES'")]
        assert len(nullable) >= 20
        counts = query(uri, f"SELECT {', '.join(f'count(*) FILTER (WHERE {c} IS NULL)' for c in nullable)} FROM {t}")[0]
        missing = [c for c, n in zip(nullable, counts) if n == 0]
        assert not missing, f"{t}: no NULLs in {missing}"


def test_unicode_and_empty_titles(seeded):
    uri, _ = seeded
    for t in TABLES:
        titles = [r[0] for r in query(uri, f"SELECT title FROM {t} WHERE title IS NOT NULL")]
        assert "" in titles
        assert any(re.search(r"[À-ɏ]", x) for x in titles)  # accented Latin
        assert any(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", x) for x in titles)  # CJK
        assert any(re.search(r"[\u0590-\u06ff]", x) for x in titles)  # Hebrew / Arabic (RTL)
        assert any(any(ord(c) > 0xFFFF for c in x) for x in titles)  # emoji outside the BMP


def test_special_float_values(seeded):
    uri, _ = seeded
    for t in TABLES:
        nan, pinf, ninf, bad = query(
            uri,
            f"SELECT count(*) FILTER (WHERE standardized_popularity = 'NaN'), "
            f"count(*) FILTER (WHERE standardized_popularity = 'Infinity'), "
            f"count(*) FILTER (WHERE standardized_popularity = '-Infinity'), "
            f"count(*) FILTER (WHERE standardized_popularity NOT IN ('NaN', 'Infinity', '-Infinity') "
            f"AND (standardized_popularity < 0 OR standardized_popularity >= 1)) FROM {t}",
        )[0]
        assert nan > 0 and pinf > 0 and ninf > 0
        assert bad == 0


def test_empty_json_and_arrays(seeded):
    uri, _ = seeded
    for t in TABLES:
        empty_obj, empty_arr, objects, arrays = query(
            uri,
            f"SELECT count(*) FILTER (WHERE meta_data = '{{}}'::jsonb), count(*) FILTER (WHERE tags = '[]'::jsonb), "
            f"count(*) FILTER (WHERE jsonb_typeof(meta_data) = 'object'), count(*) FILTER (WHERE jsonb_typeof(tags) = 'array') FROM {t}",
        )[0]
        assert empty_obj > 0 and empty_arr > 0
        assert objects == scalar(uri, f"SELECT count(meta_data) FROM {t}")
        assert arrays == scalar(uri, f"SELECT count(tags) FROM {t}")
        assert scalar(uri, f"SELECT max(jsonb_array_length(tags)) FROM {t}") == 8
        # nested objects and tags with / without accuracy
        assert scalar(uri, f"SELECT count(*) FROM {t} WHERE meta_data ? 'geo' OR meta_data ? 'camera'") > 0
        assert scalar(uri, f"SELECT count(*) FROM {t} WHERE tags @> '[{{\"provider\": \"clarifai\"}}]'") > 0
        assert scalar(uri, f"SELECT count(*) FROM {t}, jsonb_array_elements(tags) e WHERE NOT e ? 'accuracy'") > 0
    genres_empty, alt_empty, set_empty = query(
        uri, "SELECT count(*) FILTER (WHERE genres = '{}'), count(*) FILTER (WHERE alt_files = '[]'), count(*) FILTER (WHERE audio_set = '{}') FROM audio"
    )[0]
    assert genres_empty > 0 and alt_empty > 0 and set_empty > 0
    assert scalar(uri, "SELECT max(cardinality(genres)) FROM audio") == 3


def test_tombstones_reference_existing_rows(seeded):
    uri, _ = seeded
    for t in TABLES:
        n = scalar(uri, f"SELECT count(*) FROM deleted_{t}")
        assert 0 < n < ROWS * 0.01
        assert scalar(uri, f"SELECT count(*) FROM deleted_{t} d JOIN {t} m USING (identifier)") == n
        assert scalar(uri, f"SELECT count(*) FROM deleted_{t} d JOIN {t} m USING (identifier) WHERE d.url <> m.url OR d.deleted_on < m.updated_on") == 0


def test_realistic_shape(seeded):
    uri, _ = seeded
    for t in TABLES:
        row = query(
            uri,
            f"SELECT count(*) FILTER (WHERE updated_on < created_on), min(length(url)), max(length(url)), count(DISTINCT url), "
            f"count(DISTINCT provider), count(DISTINCT license), avg(pg_column_size(x.*))::int, "
            f"count(*) FILTER (WHERE removed_from_source), count(*) FILTER (WHERE source = provider), "
            f"count(*) FILTER (WHERE (license IN ('cc0', 'pdm', 'sampling+', 'nc-sampling+')) AND license_version <> '1.0') FROM {t} x",
        )[0]
        backwards, min_len, max_len, urls, providers, licenses, width, removed, same_source, bad_version = row
        assert backwards == 0
        assert 60 <= min_len and max_len <= 300 and urls == ROWS
        assert 15 <= providers <= 25
        assert licenses >= 8
        assert 700 <= width <= 1600
        assert 0 < removed < ROWS * 0.03
        assert same_source > ROWS * 0.8
        assert bad_version == 0
        top = query(uri, f"SELECT provider, count(*) FROM {t} GROUP BY 1 ORDER BY 2 DESC LIMIT 2")
        assert top[0][1] > 1.5 * top[1][1]  # skewed, one dominant provider
    assert query(uri, "SELECT provider FROM image GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")[0][0] == "flickr"
    assert query(uri, "SELECT provider FROM audio GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")[0][0] == "freesound"


def test_refuses_to_overwrite_without_replace(seeded):
    uri, _ = seeded
    with pytest.raises(UserError, match="replace=True"):
        S.seed(uri, tables=("image",), rows=10)


def test_change_rows_clustered_and_random(fresh_db):
    uri = fresh_db("change")
    S.seed(uri, tables=("image",), rows=ROWS, seed=1)
    for mode, max_runs in (("clustered", 10), ("random", None)):
        before_max = scalar(uri, "SELECT max(updated_on)::text FROM image")
        before_n = scalar(uri, "SELECT count(*) FROM image")
        before_tomb = scalar(uri, "SELECT count(*) FROM deleted_image")
        got = S.change_rows(uri, "image", fraction=0.02, seed=3, mode=mode)
        assert got == {"update": 60, "insert": 30, "delete": 10}
        assert scalar(uri, "SELECT count(*) FROM image") == before_n + 30 - 10
        assert scalar(uri, "SELECT count(*) FROM deleted_image") >= before_tomb + 10 - 1
        ranks = [r[0] for r in query(
            uri,
            f"SELECT rn FROM (SELECT updated_on, row_number() OVER (ORDER BY identifier) rn FROM image) x "
            f"WHERE updated_on > '{before_max}' ORDER BY rn",
        )]
        assert len(ranks) == 90  # updated + inserted rows
        runs = 1 + sum(1 for a, b in zip(ranks, ranks[1:]) if b - a > 3)
        if max_runs:
            assert runs <= max_runs
        else:
            assert runs > 30
    assert scalar(uri, "SELECT count(*) FROM image WHERE updated_on < created_on") == 0
