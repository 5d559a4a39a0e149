"""Shared fixtures: a real Postgres (embedded, or DATASET_ASSETS_TEST_PG_URI),
seeded once per session; fresh stores; the S3 and Hub servers on loopback.

The tests are in three tiers by folder (``tiers.py``): every test gets its tier's marker
here, and a unit test that asks for a server fixture is refused."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from conftest_hub import *  # noqa: F401,F403  (hub_server fixture)
from conftest_s3 import *  # noqa: F401,F403   (moto_server, s3_store fixtures)
from tiers import server_fixtures, tier_of, tier_problems

ROOT = Path(__file__).resolve().parent.parent
SEED_ROWS = {"image": 3000, "audio": 1500}


def pytest_collection_modifyitems(config, items):
    """Each test gets the marker of its folder's tier; a test in no tier, or a unit test asking for a
    server fixture, stops the run before anything starts."""
    problems = tier_problems(items)
    if problems:
        raise pytest.UsageError("tests in the wrong tier (tests/tiers.py):\n  " + "\n  ".join(problems))
    for item in items:
        item.add_marker(tier_of(item.path))


@pytest.fixture(autouse=True)
def _unit_tests_start_no_server(request):
    """A unit test that asks for a server fixture at run time (``request.getfixturevalue``) fails."""
    yield
    if tier_of(request.node.path) == "unit" and (servers := server_fixtures(request.fixturenames)):
        pytest.fail(f"a unit test starts no server, but this one asked for {', '.join(servers)}; "
                    "move it to tests/integration", pytrace=False)


@pytest.fixture(scope="session")
def pg_server_uri() -> str:
    """URI of a Postgres server's maintenance database."""
    uri = os.environ.get("DATASET_ASSETS_TEST_PG_URI")
    if uri:
        return uri
    from dataset_assets.local.embedded import embedded_uri

    return embedded_uri(ROOT / ".local" / "test-pg")


@pytest.fixture(scope="session")
def fresh_db(pg_server_uri):
    """Factory: a new, empty database on the test server (dropped at the end)."""
    from dataset_assets.local.embedded import drop_database, ensure_database

    made: list[str] = []

    def make(tag: str = "t") -> str:
        name = f"da_{tag}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        made.append(name)
        return ensure_database(pg_server_uri, name)

    yield make
    for name in made:
        try:
            drop_database(pg_server_uri, name)
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture(scope="session")
def seeded_uri(fresh_db) -> str:
    """A database with the media tables seeded once per session (read-only for tests)."""
    from dataset_assets.local.seed import seed

    uri = fresh_db("seeded")
    seed(uri, tables=["image", "audio"], rows=SEED_ROWS, seed=7)
    return uri


@pytest.fixture
def mutable_uri(fresh_db) -> str:
    """A freshly seeded database a test may change."""
    from dataset_assets.local.seed import seed

    uri = fresh_db("mut")
    seed(uri, tables=["image", "audio"], rows={"image": 2000, "audio": 1000}, seed=11)
    return uri


@pytest.fixture
def store(tmp_path):
    from dataset_assets.storage.stores import LocalStore

    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="module")
def defs_module():
    """The code location's module (``defs``, ``assets``, ``asset_checks``, key lists)."""
    from dataset_assets import definitions

    return definitions


@pytest.fixture
def instance(tmp_path):
    """A real Dagster instance (sqlite) in a temporary DAGSTER_HOME."""
    import dagster as dg

    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as inst:
        yield inst


@pytest.fixture
def offline_datasets(monkeypatch, tmp_path):
    """``datasets`` offline, caching under tmp_path (its config is read at import time, so patch it too)."""
    import datasets.config as dconfig
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(cache),
                       "HF_DATASETS_CACHE": str(cache / "datasets")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for name, value in {"HF_HUB_OFFLINE": True, "HF_DATASETS_OFFLINE": True, "HF_DATASETS_CACHE": cache / "datasets",
                        "HF_MODULES_CACHE": cache / "modules", "DOWNLOADED_DATASETS_PATH": cache / "datasets" / "downloads",
                        "EXTRACTED_DATASETS_PATH": cache / "datasets" / "downloads" / "extracted"}.items():
        monkeypatch.setattr(dconfig, name, value, raising=False)
    return cache / "datasets"
