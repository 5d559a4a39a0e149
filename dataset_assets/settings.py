"""The environment, read in one place: every variable's name, the project's folders, and the
mode (``local`` or ``production``).

Owns: environment variable names and parsing. Imports nothing of the project but ``errors``.
Every variable is listed in the README's table of variables.

``DATASET_ASSETS_MODE`` is ``local`` (the default: a missing source means the embedded
Postgres under ``.local/``, a missing store means ``.local/store``) or ``production`` (a
missing source URI or store URL is an error; nothing falls back to the demo's embedded
defaults).
"""

from __future__ import annotations

import os
from pathlib import Path

from dataset_assets.errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent

ENV_MODE = "DATASET_ASSETS_MODE"
ENV_SOURCE = "DATASET_ASSETS_SOURCE_URI"
ENV_STORE = "DATASET_ASSETS_STORE_URL"
ENV_S3_ENDPOINT = "DATASET_ASSETS_S3_ENDPOINT_URL"
ENV_WORKERS = "DATASET_ASSETS_WORKERS"
ENV_HF_REPO = "DATASET_ASSETS_HF_REPO"
ENV_HF_TOKEN = "HF_TOKEN"
ENV_HF_ENDPOINT = "HF_ENDPOINT"
ENV_WEBHOOK = "DATASET_ASSETS_WEBHOOK_URL"
ENV_TABLES = "DATASET_ASSETS_TABLES"
ENV_DOCS = "DATASET_ASSETS_DOCS"
ENV_HOME = "DATASET_ASSETS_HOME"

MODES = ("local", "production")


def mode() -> str:
    """``local`` (default) or ``production``."""
    value = (os.environ.get(ENV_MODE) or "local").strip().lower()
    if value not in MODES:
        raise UserError(f"{ENV_MODE}={value!r} is not a mode; set it to local or production.")
    return value


def is_production() -> bool:
    return mode() == "production"


def required_in_production(name: str, value: str | None, what: str) -> str | None:
    """``value``, or None in local mode (the caller then uses the embedded default); in
    production mode a missing value is an error."""
    if value:
        return value
    if is_production():
        raise UserError(f"{name} is not set and {ENV_MODE}=production does not fall back to the "
                        f"local demo {what}; set {name}.")
    return None


def tables_file() -> Path:
    return Path(os.environ.get(ENV_TABLES) or PACKAGE_DIR / "tables.yaml")


def docs_dir() -> Path:
    return Path(os.environ.get(ENV_DOCS) or PROJECT_DIR / "dataset_docs")


def local_dir() -> Path:
    """Project-local folder for the embedded database, the default store and DAGSTER_HOME."""
    return Path(os.environ.get(ENV_HOME) or PROJECT_DIR / ".local")


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """A whole number from the environment (unset or empty: ``default``), at least ``minimum``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} is not a whole number; set it to one (or unset it for {default}).") from None
    if value < minimum:
        raise UserError(f"{name}={value} is below {minimum}; set it to at least {minimum} (or unset it for {default}).")
    return value


ENV_TODAY = "DATASET_ASSETS_TODAY"


def today() -> str:
    """Today's snapshot date (UTC), or ``DATASET_ASSETS_TODAY`` (``YYYY-MM-DD``) when set: the one
    clock the sensors use, so tests and operators can move it."""
    import datetime as dt

    raw = (os.environ.get(ENV_TODAY) or "").strip()
    if raw:
        try:
            if len(raw) == 10:
                return dt.date.fromisoformat(raw).isoformat()
        except ValueError:
            pass
        raise UserError(f"{ENV_TODAY}={raw!r} is not a date; set it to YYYY-MM-DD or unset it for today's date.")
    return dt.datetime.now(dt.timezone.utc).date().isoformat()
