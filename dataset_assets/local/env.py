"""The embedded environment `make demo` and `make dev` share: one Postgres, one
store folder and one Dagster instance, all under `.local/`."""

from __future__ import annotations

import os
from pathlib import Path

from dataset_assets.settings import local_dir

DEMO_DATABASE = "media"

DAGSTER_YAML = """\
# Dagster instance for `make demo` / `make dev`: sqlite storage under this folder.
# Production: see deploy/dagster.yaml (Postgres storage, ECS/Kubernetes run launcher).
concurrency:
  pools:
    default_limit: 2     # at most 2 steps read the source database at once (pool "source_db")
  runs:
    # one writer per snapshot date: runs of the same date (tables, card, push) never overlap
    tag_concurrency_limits:
      - key: dagster/partition
        value: {applyLimitPerUniqueValue: true}
        limit: 1
telemetry:
  enabled: false
"""


def dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or (local_dir() / "dagster")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists() or (cfg.read_text().startswith(DAGSTER_YAML.splitlines()[0]) and cfg.read_text() != DAGSTER_YAML):
        cfg.write_text(DAGSTER_YAML)  # ours (an older version's): brought up to date; a hand-written one is kept
    return home


def default_source_uri() -> str:
    """The embedded Postgres's demo database: the source when none is configured."""
    from dataset_assets.local.embedded import embedded_uri, ensure_database

    return ensure_database(embedded_uri(), DEMO_DATABASE)


def prepare() -> dict[str, str]:
    """Start the embedded Postgres, make sure the demo database exists, and set
    the environment variables the Dagster resources read. Returns them."""
    from dataset_assets.settings import ENV_SOURCE, ENV_STORE
    from dataset_assets.storage.stores import default_store_url

    env = {
        "DAGSTER_HOME": str(dagster_home()),
        ENV_SOURCE: os.environ.get(ENV_SOURCE) or default_source_uri(),
        ENV_STORE: os.environ.get(ENV_STORE) or default_store_url(),
    }
    os.environ.update(env)
    return env
