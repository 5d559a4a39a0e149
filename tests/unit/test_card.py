"""The dataset card and the documentation check, on a small snapshot built without Postgres.

The snapshot's parquet files are written by the real ``ShardWriter`` with the real
Postgres -> Arrow mapping of the ``image`` and ``audio`` tables (their DDL in
``engine.seed`` run through ``engine.schema.arrow_type``), so they look exactly
like an export's.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from dataset_assets.settings import docs_dir
from dataset_assets.release.card import build_card, card_key, fill, write_card
from dataset_assets.release.card.front_matter import size_category
from dataset_assets.source.catalog import Column, TableInfo
from dataset_assets.release.card.docs import check_documentation
from dataset_assets.storage.manifest import Manifest, encode_schema
from dataset_assets.source.types import TableSchema, table_schema
from dataset_assets.local.seed import TABLE_COLUMNS
from dataset_assets.export.shards import ParquetOptions, ShardWriter
from dataset_assets.errors import UserError
from dataset_assets.storage.stores import MANIFEST, SUCCESS, LocalStore

SNAPSHOT = "2026-11-21"
REPO = "example-org/media-catalogue"

# Known distributions of the profile columns (tables.yaml: provider, license).
DISTRIBUTIONS = {
    "image": {
        "provider": [("flickr", 30), ("wikimedia", 18), (None, 12)],
        "license": [("by", 25), ("by-sa", 20), ("cc0", 15)],
    },
    "audio": {
        "provider": [("jamendo", 25), ("freesound", 15)],
        "license": [("by-nc-sa", 20), ("cc0", 12), ("sampling+", 8)],
    },
}
UNITS = {"image": [35, 25], "audio": [40]}  # rows per work unit: one file each

# --- the real schema, without Postgres --------------------------------------------

_TYPNAMES = {
    "uuid": "uuid", "timestamp with time zone": "timestamptz", "integer": "int4", "text": "text",
    "jsonb": "jsonb", "boolean": "bool", "double precision": "float8", "character varying": "varchar",
}


def real_schema(table: str) -> TableSchema:
    """The schema an export of ``table`` writes, from the seed's DDL (already in format_type() spelling)."""
    columns = []
    for name, ddl in TABLE_COLUMNS[table]:
        pg_type = re.split(r" NOT NULL| DEFAULT", ddl)[0].strip()
        is_array = pg_type.endswith("[]")
        base, length = re.fullmatch(r"(.*?)(?:\((\d+)\))?", pg_type.removesuffix("[]")).groups()
        typmod = int(length) + 4 if length else -1
        columns.append(Column(name, pg_type, _TYPNAMES[base], is_array, typmod, "NOT NULL" not in ddl, "b"))
    return table_schema(TableInfo(table, 0, tuple(columns), ("identifier",), 8192))


def _expand(dist: list[tuple]) -> list:
    return [v for v, n in dist for _ in range(n)]


def make_rows(table: str, schema: TableSchema) -> list[dict]:
    n = sum(UNITS[table])
    profile = {c: _expand(d) for c, d in DISTRIBUTIONS[table].items()}
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    rows = []
    for i in range(n):
        row = {}
        for f in schema.arrow:
            if f.name in profile:
                value = profile[f.name][(i * 7) % n]  # 7 is coprime with 60 and 40: a permutation
            elif f.name == "identifier":
                value = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{table}/{i}"))
            elif f.nullable and i % 9 == 4:
                value = None
            elif f.name in ("meta_data", "tags", "audio_set", "alt_files"):
                value = json.dumps({"license_url": "https://creativecommons.org/licenses/by/4.0/", "i": i})
            elif pa.types.is_timestamp(f.type):
                value = t0 + dt.timedelta(minutes=i, microseconds=i)
            elif pa.types.is_string(f.type):
                value = f"{f.name}-{i}"
            elif pa.types.is_integer(f.type):
                value = i * 10
            elif pa.types.is_floating(f.type):
                value = i / 64
            elif pa.types.is_boolean(f.type):
                value = i % 2 == 0
            elif pa.types.is_list(f.type):
                value = ["electronic", "ambient", "rock"][: i % 4]
            else:  # pragma: no cover
                raise AssertionError(f.type)
            row[f.name] = value
        rows.append(row)
    return rows


def write_table_snapshot(store: LocalStore, table: str) -> list[dict]:
    """Export-like: shards by the real ShardWriter, a manifest, _SUCCESS; returns the rows."""
    schema = real_schema(table)
    rows = make_rows(table, schema)
    prefix = f"snapshots/{SNAPSHOT}/{table}"
    staging = store.staging_dir(prefix)
    files, start = [], 0
    for unit, count in enumerate(UNITS[table]):
        writer = ShardWriter(staging, unit, schema, ParquetOptions())
        batch = pa.RecordBatch.from_pylist(rows[start:start + count], schema=schema.arrow)
        start += count
        writer.write(batch)
        files += writer.close()
    manifest = Manifest(
        table=table, snapshot=SNAPSHOT, row_count=len(rows), files=files, schema=schema.describe(),
        arrow_schema=encode_schema(schema.arrow), source={}, source_snapshot={}, created_at="2026-11-21T00:00:00+00:00",
    )
    (staging / MANIFEST).write_text(manifest.to_json())
    store.commit_dir(staging, prefix)
    return rows


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A store with a complete two-table snapshot and its card; (store, rows per table, CardResult)."""
    store = LocalStore(tmp_path_factory.mktemp("card") / "store")
    rows = {t: write_table_snapshot(store, t) for t in ("image", "audio")}
    result = write_card(store, SNAPSHOT, repo_id=REPO)
    return store, rows, result


def snapshot_folder(store: LocalStore) -> Path:
    return store.local_path(f"snapshots/{SNAPSHOT}")


# --- documentation check -----------------------------------------------------------

@pytest.mark.parametrize("table", ["image", "audio"])
def test_docs_match_the_real_mapping(table):
    assert check_documentation(table, real_schema(table).describe()) == []


def test_check_documentation_finds_each_kind_of_problem():
    live = real_schema("image").describe()
    extra = live + [{"name": "aspect_ratio", "pg_type": "real", "arrow_type": "float", "nullable": True}]
    [problem] = check_documentation("image", extra)
    assert "image.aspect_ratio" in problem and "not documented" in problem

    [problem] = check_documentation("image", [c for c in live if c["name"] != "height"])
    assert "image.height" in problem and "no such column" in problem

    changed = [dict(c) for c in live]
    width = next(c for c in changed if c["name"] == "width")
    width.update(pg_type="bigint", arrow_type="int64", nullable=False)
    problems = check_documentation("image", changed)
    assert len(problems) == 3 and all(p.startswith("image.width:") for p in problems)
    assert any("'integer'" in p and "'bigint'" in p for p in problems)
    assert any("NOT NULL" in p for p in problems)
    assert any("'int32'" in p and "'int64'" in p for p in problems)

    assert check_documentation("image", live[1:] + live[:1]) == []  # columns match by name, in any order

    [problem] = check_documentation("video", live)
    assert "create dataset_docs/video.yaml" in problem


def test_card_reports_documentation_problems(snapshot, tmp_path):
    store, _, _ = snapshot
    docs = tmp_path / "docs"
    shutil.copytree(docs_dir(), docs)
    text = (docs / "audio.yaml").read_text()
    (docs / "audio.yaml").write_text(text.replace("  duration:\n    type: integer", "  duration:\n    type: bigint"))
    result = build_card(store, SNAPSHOT, ["audio"], docs_directory=docs)
    assert result.problems == ["audio.duration: documented type 'bigint' differs from the catalog's 'integer'."]


# --- the card ----------------------------------------------------------------------

def test_card_front_matter(snapshot):
    from huggingface_hub import DatasetCard

    store, rows, result = snapshot
    assert result.problems == []
    card = DatasetCard.load(snapshot_folder(store) / "README.md")
    assert store.read_bytes(card_key(SNAPSHOT)).decode() == result.text
    assert card.text.lstrip().startswith("# Openverse-style media catalogue")
    data = card.data
    assert data.license == "other" and data.license_name == "per-record-creative-commons"
    assert data.license_link == "README.md#licensing-and-terms"
    assert data.pretty_name and data.language == ["en"] and "creative-commons" in data.tags
    assert data.extra_gated_fields and data.size_categories == ["n<1K"]
    assert data.configs == [
        {"config_name": "image", "default": True, "data_files": [{"split": "train", "path": "image/train-*.parquet"}]},
        {"config_name": "audio", "data_files": [{"split": "train", "path": "audio/train-*.parquet"}]},
    ]
    infos = {i["config_name"]: i for i in data.dataset_info}
    assert list(infos) == ["image", "audio"]
    for table, info in infos.items():
        manifest = Manifest.from_json(store.read_bytes(f"snapshots/{SNAPSHOT}/{table}/{MANIFEST}"))
        assert info["splits"] == [{"name": "train", "num_bytes": manifest.total_bytes, "num_examples": len(rows[table])}]
        assert info["download_size"] == info["dataset_size"] == manifest.total_bytes
        assert [f["name"] for f in info["features"]] == [c["name"] for c in manifest.schema]
    genres = next(f for f in infos["audio"]["features"] if f["name"] == "genres")
    created = next(f for f in infos["image"]["features"] if f["name"] == "created_on")
    assert genres == {"name": "genres", "list": "string"}
    assert created == {"name": "created_on", "dtype": "timestamp[us, tz=UTC]"}


def test_card_body(snapshot):
    store, _, result = snapshot
    text = result.text
    assert "{{" not in text
    assert f"This card describes snapshot **{SNAPSHOT}**" in text
    for table in ("image", "audio"):
        manifest = Manifest.from_json(store.read_bytes(f"snapshots/{SNAPSHOT}/{table}/{MANIFEST}"))
        assert f"`{manifest.root_hash}`" in text
    assert f'load_dataset("{REPO}", "image", split="train", revision="snapshot-{SNAPSHOT}")' in text
    assert "| `genres` | `list<item: string>` | yes |" in text
    assert "| `identifier` | `string` | no |" in text
    assert "- **`duration`**: Milliseconds, not seconds" in text
    assert "## Licensing and terms" in text


@pytest.mark.parametrize("table", ["image", "audio"])
def test_load_dataset_reads_the_snapshot_folder(snapshot, offline_datasets, table):
    import datasets
    from huggingface_hub import DatasetCard

    store, rows, _ = snapshot
    folder = snapshot_folder(store)
    card = DatasetCard.load(folder / "README.md")
    info = next(i for i in card.data.dataset_info if i["config_name"] == table)
    ds = datasets.load_dataset(str(folder), table, split="train", cache_dir=str(offline_datasets))
    assert ds.features == datasets.Features._from_yaml_list(info["features"])
    assert ds.num_rows == len(rows[table])
    assert ds.to_list() == rows[table]  # every row and value, in file order


def test_statistics(snapshot):
    _, _, result = snapshot
    for table, columns in DISTRIBUTIONS.items():
        assert result.stats[table] == {c: d for c, d in columns.items()}
    assert "| `flickr` | 30 | 50.0 % |" in result.text
    assert "| *(null)* | 12 | 20.0 % |" in result.text
    assert "| `sampling+` | 8 | 20.0 % |" in result.text


def test_statistics_group_the_tail_and_stream_small_batches(snapshot):
    store, _, _ = snapshot
    from dataset_assets.release.card.profile import scan_table

    manifest = Manifest.from_json(store.read_bytes(f"snapshots/{SNAPSHOT}/image/{MANIFEST}"))
    scan = scan_table(store, f"snapshots/{SNAPSHOT}/image", manifest.files, ["license", "creator"], batch_rows=7)
    assert scan.distributions["license"] == DISTRIBUTIONS["image"]["license"] and scan.rows == 60
    assert sum(c for _, c in scan.distributions["creator"]) == 60
    text = build_card(store, SNAPSHOT, ["image"], top=2).text
    assert "| *(1 other values)* | 12 | 20.0 % |" in text


class RemoteLikeStore(LocalStore):
    """A LocalStore that hides its files, as S3 does: parquet must be spooled through ``open``."""

    def local_path(self, key):
        return None


def test_card_from_a_store_without_local_files(snapshot):
    store, _, result = snapshot
    remote = RemoteLikeStore(store.root)
    again = build_card(remote, SNAPSHOT, repo_id=REPO)
    assert again.text == result.text and again.stats == result.stats and again.problems == []


def test_verification_snippet_checks_a_copy(snapshot, capsys, tmp_path):
    store, _, result = snapshot
    section = result.text.split("## Verifying a download", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    folder = snapshot_folder(store)
    code = re.sub(r"^folder = .*$", f"folder = Path({str(folder)!r})", code, flags=re.M)
    exec(compile(code, "snippet", "exec"), {})
    assert capsys.readouterr().out.count(" ok ") == 2
    # ...and it catches a copy that differs by one byte
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shard = sorted(copy.rglob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    damaged = re.sub(r"^folder = .*$", f"folder = Path({str(copy)!r})", code, flags=re.M)
    with pytest.raises(AssertionError, match="differs from the manifest"):
        exec(compile(damaged, "snippet", "exec"), {})


def test_files_that_disagree_with_their_manifest_are_problems(tmp_path):
    import pyarrow.parquet as pq

    store = LocalStore(tmp_path / "store")
    write_table_snapshot(store, "audio")
    prefix = f"snapshots/{SNAPSHOT}/audio"
    manifest = Manifest.from_json(store.read_bytes(f"{prefix}/{MANIFEST}"))
    path = store.local_path(f"{prefix}/{manifest.files[0].path}")
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index("duration"), "duration",
                                    table["duration"].cast(pa.int64())), path)
    manifest.row_count += 1
    store.put_bytes(f"{prefix}/{MANIFEST}", manifest.to_json().encode())
    result = build_card(store, SNAPSHOT)
    assert len(result.problems) == 2
    assert "parquet schema differs from the manifest's" in result.problems[0]
    assert result.problems[1] == "audio: the files hold 40 rows, the manifest says 41."
    assert result.front_matter["dataset_info"][0]["splits"][0]["num_examples"] == 40  # what datasets counts


# --- refusals and helpers ---------------------------------------------------------------

def test_incomplete_table_is_refused(tmp_path):
    store = LocalStore(tmp_path / "store")
    write_table_snapshot(store, "audio")
    (store.local_path(f"snapshots/{SNAPSHOT}/audio") / SUCCESS).unlink()
    with pytest.raises(UserError, match=r"no _SUCCESS marker"):
        build_card(store, SNAPSHOT)
    with pytest.raises(UserError, match="has no table image"):
        build_card(store, SNAPSHOT, ["image"])
    with pytest.raises(UserError, match="no snapshot 2020-01-01"):
        build_card(store, "2020-01-01")


def test_size_categories():
    assert [size_category(n) for n in (0, 999, 1000, 9999, 10_000, 999_999, 1_000_000, 10**12)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "n>1T"]


def test_fill_leaves_unknown_placeholders_and_reports_them():
    text, problems = fill("a {{x}} b {{ y }} {{x}}", {"x": lambda: "{{y}}"})
    assert text == "a {{y}} b {{ y }} {{y}}"
    assert problems == ["dataset_docs/card.md uses the unknown placeholder {{y}}; remove it or teach the card renderer about it."]


def test_top_level_counts_match():
    schema = real_schema("image")
    rows = make_rows("image", schema)
    assert Counter(r["provider"] for r in rows) == dict(DISTRIBUTIONS["image"]["provider"])
