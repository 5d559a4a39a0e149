"""The YAML front-matter of the dataset card: what the Hub and ``datasets`` read.

``dataset.yaml``'s keys, then ``size_categories``, one ``configs`` entry per
table (``<table>/train-*.parquet``, the first one the default) and one
``dataset_info`` entry per table whose ``features`` are ``datasets``' own YAML
form of the parquet files' Arrow schema.
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


def configs(tables: list[TableFacts]) -> list[dict]:
    out = []
    for i, t in enumerate(tables):
        entry: dict[str, Any] = {"config_name": t.name}
        if i == 0:
            entry["default"] = True
        entry["data_files"] = [{"split": SPLIT, "path": data_glob(t.name)}]
        out.append(entry)
    return out


def dataset_info(tables: list[TableFacts]) -> list[dict]:
    """One entry per config; ``num_bytes``/``download_size``/``dataset_size`` are the parquet bytes."""
    return [
        {
            "config_name": t.name,
            "features": t.features_yaml,
            "splits": [{"name": SPLIT, "num_bytes": t.bytes, "num_examples": t.rows}],
            "download_size": t.bytes,
            "dataset_size": t.bytes,
        }
        for t in tables
    ]


def front_matter(dataset: DatasetDoc, tables: list[TableFacts]) -> tuple[dict, list[str]]:
    """The front-matter mapping and problems (keys of dataset.yaml the renderer overrides)."""
    problems = [
        f"dataset_docs/dataset.yaml sets {k!r}, which the card renderer computes; remove it."
        for k in GENERATED_KEYS if k in dataset.front_matter
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
