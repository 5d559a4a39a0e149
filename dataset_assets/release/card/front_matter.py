"""The YAML front-matter of the dataset card: what the Hub and ``datasets`` read.

``dataset.yaml``'s keys, then ``size_categories``, one ``configs`` entry per
table (``<table>/train-*.parquet``, the first one the default), then one
``<table>_changes`` per table with a change feed of at least one row (``<table>/changes/*.parquet``),
and one ``dataset_info`` entry per config whose ``features`` are ``datasets``'
own YAML form of the parquet files' Arrow schema.
"""

from __future__ import annotations

from typing import Any

import yaml

from dataset_assets.release.card.facts import TableFacts
from dataset_assets.release.card.docs import GENERATED_KEYS, DatasetDoc

SPLIT = "train"

# The Hub's size buckets, as listed by huggingface_hub.DatasetCardData.
_SIZE_BUCKETS = [
    (10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
    (10**11, "10B<n<100B"), (10**12, "100B<n<1T"),
]


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket for ``rows`` examples (a lower bound belongs to its bucket)."""
    for upper, label in _SIZE_BUCKETS:
        if rows < upper:
            return label
    return "n>1T"


def data_glob(table: str) -> str:
    return f"{table}/{SPLIT}-*.parquet"


def changes_config(table: str) -> str:
    """The config (subset) of a table's change feed."""
    return f"{table}_changes"


def changes_glob(table: str) -> str:
    return f"{table}/changes/*.parquet"


def _feeds(tables: list[TableFacts]) -> list[TableFacts]:
    """The tables whose change feed is a subset of the card (see ``ChangeFeedFacts.has_subset``)."""
    return [t for t in tables if t.changes is not None and t.changes.has_subset]


def configs(tables: list[TableFacts]) -> list[dict]:
    out = []
    for i, t in enumerate(tables):
        entry: dict[str, Any] = {"config_name": t.name}
        if i == 0:
            entry["default"] = True
        entry["data_files"] = [{"split": SPLIT, "path": data_glob(t.name)}]
        out.append(entry)
    out += [{"config_name": changes_config(t.name), "data_files": [{"split": SPLIT, "path": changes_glob(t.name)}]}
            for t in _feeds(tables)]
    return out


def _info(name: str, features: list[dict], size: int, rows: int) -> dict:
    return {
        "config_name": name,
        "features": features,
        "splits": [{"name": SPLIT, "num_bytes": size, "num_examples": rows}],
        "download_size": size,
        "dataset_size": size,
    }


def dataset_info(tables: list[TableFacts]) -> list[dict]:
    """One entry per config; ``num_bytes``/``download_size``/``dataset_size`` are the parquet bytes."""
    return [_info(t.name, t.features_yaml, t.bytes, t.rows) for t in tables] + [
        _info(changes_config(t.name), t.changes.features_yaml, t.changes.bytes, t.changes.rows)
        for t in _feeds(tables)]


def front_matter(dataset: DatasetDoc, tables: list[TableFacts]) -> tuple[dict, list[str]]:
    """The front-matter mapping and problems (keys of dataset.yaml the renderer overrides)."""
    problems = [
        f"dataset_docs/dataset.yaml sets {k!r}, which the card renderer computes; remove it."
        for k in GENERATED_KEYS if k in dataset.front_matter
    ]
    names = {t.name for t in tables}
    problems += [
        f"{t.name}: its change feed's subset {changes_config(t.name)} has the name of a table; rename the table "
        "in the table configuration."
        for t in tables if t.changes is not None and changes_config(t.name) in names
    ]
    given = {k: v for k, v in dataset.front_matter.items() if k not in GENERATED_KEYS}
    head = {k: v for k, v in given.items() if not k.startswith("extra_gated_")}
    gate = {k: v for k, v in given.items() if k.startswith("extra_gated_")}
    data = {
        **head,
        "size_categories": [size_category(sum(t.rows for t in tables))],
        "configs": configs(tables),
        "dataset_info": dataset_info(tables),
        **gate,
    }
    return data, problems


def dump(data: dict) -> str:
    """``---``-delimited YAML block, keys in insertion order."""
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return f"---\n{body}---\n"
