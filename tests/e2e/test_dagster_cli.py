"""The Dagster command line on a snapshot date registered by `dataset-assets register`: before,
Dagster refuses the unknown partition; after, `dagster asset materialize` exports the date."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from platform_helpers import ROOT, run_cli

from dataset_assets.storage.stores import LocalStore

FIRST = "2026-01-05"


def test_a_registered_date_materialises_from_the_dagster_cli(seeded_uri, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    store_dir = tmp_path / "store"
    env = dict(os.environ, DAGSTER_HOME=str(home), DATASET_ASSETS_SOURCE_URI=seeded_uri,
               DATASET_ASSETS_STORE_URL=str(store_dir), DATASET_ASSETS_HF_REPO="", DATASET_ASSETS_WORKERS="2",
               DATASET_ASSETS_SENSORS="stopped")
    dagster = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "dataset_assets.definitions",
               "--select", "image,audio", "--partition", FIRST]

    unknown = subprocess.run(dagster, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert unknown.returncode != 0 and FIRST in unknown.stderr, unknown.stderr[-2000:]

    registered = run_cli("register", "--snapshot", FIRST, env={"DAGSTER_HOME": str(home)})
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.startswith(f"registered snapshot date {FIRST} in the Dagster instance {home}")

    done = subprocess.run(dagster, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    store = LocalStore(store_dir)
    assert store.is_complete(f"snapshots/{FIRST}/image") and store.is_complete(f"snapshots/{FIRST}/audio")
