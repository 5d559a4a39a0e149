"""Dagster resources: thin wrappers that hand configuration to the engine.

Each field can be set from an environment variable (listed in the README); an
unset variable falls back to the embedded default, so `make demo` and
`make dev` need none.
"""


import os

import dagster as dg
from dagster_aws.s3 import S3Resource

from dataset_assets.settings import ENV_HF_ENDPOINT, ENV_HF_REPO, ENV_HF_TOKEN, ENV_S3_ENDPOINT, ENV_SOURCE, ENV_STORE, ENV_WEBHOOK, ENV_WORKERS, env_int
from dataset_assets.settings import required_in_production
from dataset_assets.export.run import ExportOptions, default_workers
from dataset_assets.export.shards import MiB, ParquetOptions
from dataset_assets.errors import UserError
from dataset_assets.storage.stores import Store, open_store

HUB_ENDPOINT = "https://huggingface.co"


def env_or(name: str, default):
    """An EnvVar when the variable is set (resolved when a run starts), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


class SourceDatabase(dg.ConfigurableResource):
    """The Postgres database the snapshots are taken from."""

    uri: str = ""  # postgresql://user:pass@host:port/db; empty = the embedded Postgres of `make demo`

    def resolve_uri(self) -> str:
        if required_in_production(ENV_SOURCE, self.uri, "embedded Postgres"):
            return self.uri
        from dataset_assets.local.env import default_source_uri  # local mode only

        return default_source_uri()


class SnapshotStore(dg.ConfigurableResource):
    """Where snapshots are kept: a folder, file:///path or s3://bucket/prefix."""

    url: str = ""  # empty = .local/store
    s3: S3Resource | None = None

    def open(self) -> Store:
        if self.url.startswith("s3://") and self.s3 is not None:
            from dataset_assets.storage.stores.s3 import S3Store

            bucket, _, prefix = self.url[len("s3://"):].partition("/")
            return S3Store(self.s3.get_client(), bucket, prefix)
        return open_store(self.url or None)


class ExportSettings(dg.ConfigurableResource):
    """How the engine exports: parallel readers and parquet layout."""

    workers: int = 0          # 0 = number of cores
    shard_mib: int = 512
    row_group_mib: int = 32
    zstd_level: int = 1

    def options(self, *, force: bool = False) -> ExportOptions:
        return ExportOptions(
            workers=self.workers or default_workers(),
            parquet=ParquetOptions(shard_bytes=self.shard_mib * MiB, row_group_bytes=self.row_group_mib * MiB,
                                   compression_level=self.zstd_level),
            force=force,
        )


class HubResource(dg.ConfigurableResource):
    """The Hugging Face dataset repo snapshots are published to, and who is told about it.

    ``token`` is a write token (set it from ``HF_TOKEN``); it is handed to the Hub client only and never
    appears in logs, metadata or error messages. ``private`` and ``gated`` ("auto", "manual" or "" for none)
    are the terms the dataset is published under: a new repo is created with them; an existing repo whose
    settings differ is changed to them when ``apply_settings`` is true, else the release refuses to publish.
    """

    repo_id: str = ""                 # ORG/NAME; empty = not configured (the release asset fails, saying so)
    token: str = ""                   # empty = the token saved by `hf auth login`, if any
    endpoint: str = HUB_ENDPOINT
    private: bool = True
    gated: str = "auto"
    webhook_url: str = ""             # Slack-compatible incoming webhook; empty = no notification
    apply_settings: bool = False      # change an existing repo's visibility/gating to private/gated (else refuse)

    def require_repo(self) -> str:
        if not self.repo_id.strip():
            raise UserError(f"No Hugging Face dataset repo is configured; set {ENV_HF_REPO} to ORG/NAME "
                            "(and HF_TOKEN to a write token) for the code location, then rerun the release.")
        return self.repo_id.strip()

    def gated_value(self) -> str | bool:
        value = (self.gated or "").strip().lower()
        return False if value in ("", "none", "false", "no", "off") else value

    def release(self, store: Store, snapshot: str, *, log=print, warn=print):
        """Release ``snapshots/<snapshot>`` of ``store`` (see :func:`dataset_assets.release.release.release_snapshot`)."""
        from dataset_assets.release.release import release_snapshot

        return release_snapshot(store, snapshot, self.require_repo(), token=self.token or None,
                                endpoint=self.endpoint or None, private=self.private, gated=self.gated_value(),
                                webhook_url=self.webhook_url or None, log=log, warn=warn,
                                apply_settings=self.apply_settings)


def default_resources() -> dict:
    endpoint = os.environ.get(ENV_S3_ENDPOINT)
    return {
        "source_db": SourceDatabase(uri=env_or(ENV_SOURCE, "")),
        "snapshot_store": SnapshotStore(
            url=env_or(ENV_STORE, ""),
            s3=S3Resource(endpoint_url=dg.EnvVar(ENV_S3_ENDPOINT)) if endpoint else S3Resource(),
        ),
        "export_settings": ExportSettings(workers=env_int(ENV_WORKERS, 0)),
        "hub": HubResource(
            repo_id=env_or(ENV_HF_REPO, ""),
            token=env_or(ENV_HF_TOKEN, ""),
            endpoint=env_or(ENV_HF_ENDPOINT, HUB_ENDPOINT),
            webhook_url=env_or(ENV_WEBHOOK, ""),
        ),
    }
