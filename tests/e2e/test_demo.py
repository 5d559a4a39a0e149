"""`make demo`'s program, from nothing: its own embedded Postgres, store and
Dagster instance in a fresh DATASET_ASSETS_HOME; what it prints works."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_demo_from_a_fresh_home(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATASET_ASSETS_", "DAGSTER_"))}
    env.update(DATASET_ASSETS_HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "hf"))
    try:
        p = subprocess.run([sys.executable, "-m", "dataset_assets.local.demo", "--image-rows", "3000", "--audio-rows", "1000",
                            "--snapshot", "2026-11-21"], env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        assert "11 checks passed" in p.stdout  # 5 per table, one on the card
        folder = home / "store" / "snapshots" / "2026-11-21"
        assert (folder / "README.md").exists()
        line = next(x.strip() for x in p.stdout.splitlines() if "load_dataset(" in x)
        code = f"import datasets\n{line}\nprint(ds.num_rows)"
        q = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert q.returncode == 0, q.stderr[-2000:]
        assert int(q.stdout.strip().splitlines()[-1]) > 2000
        # a second run reuses the seeded database and replaces the draft snapshot
        manifest = folder / "audio" / "_manifest.json"
        first = json.loads(manifest.read_text())["source_snapshot"]["snapshot_id"]
        again = subprocess.run([sys.executable, "-m", "dataset_assets.local.demo", "--image-rows", "3000", "--audio-rows", "1000",
                                "--snapshot", "2026-11-21"], env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "already holds the sample rows" in again.stderr
        assert json.loads(manifest.read_text())["source_snapshot"]["snapshot_id"] != first  # exported anew
    finally:
        from dataset_assets.local.embedded import stop_embedded

        stop_embedded(home / "pg")
