"""`dataset-assets export` in a process of its own runs without pandas (and, in the chunk layout,
without polars): dataset_assets.startup, cli.run. Both layouts must still export."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from refresh_helpers import write_config

DATE = "2026-03-01"

# the console script's own path: cli.run in a fresh interpreter; at exit, which optional modules loaded
PROBE = """
import atexit, sys
atexit.register(lambda: print("LOADED " + " ".join(m for m in ("pandas", "polars") if m in sys.modules), file=sys.stderr))
from dataset_assets.cli import run
sys.argv = ["dataset-assets", *sys.argv[1:]]
sys.exit(run())
"""


def _export(uri: str, store, env_tables=None) -> tuple[subprocess.CompletedProcess, set[str]]:
    import os

    env = dict(os.environ)
    if env_tables is not None:
        env["DATASET_ASSETS_TABLES"] = str(env_tables)
    p = subprocess.run([sys.executable, "-c", PROBE, "export", "--table", "image", "--snapshot", DATE,
                        "--source", uri, "--store", str(store), "--workers", "2"],
                       capture_output=True, text=True, env=env, timeout=300)
    loaded = next((ln.split()[1:] for ln in p.stderr.splitlines() if ln.startswith("LOADED")), None)
    assert loaded is not None, p.stderr
    return p, set(loaded)


def test_export_process_imports_neither_pandas_nor_polars(seeded_uri, tmp_path):
    p, loaded = _export(seeded_uri, tmp_path / "store")
    assert p.returncode == 0, p.stderr
    assert loaded == set(), f"the export process imported {loaded}"
    (summary,) = json.loads(p.stdout)
    assert summary["rows"] > 0 and summary["files"] >= 1


def test_clustered_export_process_uses_polars_without_pandas(seeded_uri, tmp_path):
    p, loaded = _export(seeded_uri, tmp_path / "store", env_tables=write_config(tmp_path / "tables.yaml"))
    assert p.returncode == 0, p.stderr
    assert loaded == {"polars"}, f"the export process imported {loaded}"
    (summary,) = json.loads(p.stdout)
    assert summary["rows"] > 0


@pytest.mark.parametrize("command", [["verify", "--snapshot", DATE], ["release", "--help"]])
def test_other_commands_keep_pandas_importable(command, tmp_path):
    probe = ("import sys\nfrom dataset_assets import cli\nsys.argv = ['dataset-assets', *sys.argv[1:]]\n"
             "try:\n    cli.run()\nexcept SystemExit:\n    pass\nimport pandas\nprint('PANDAS OK', file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", probe, *command, *(["--store", str(tmp_path)] if command[0] == "verify" else [])],
                       capture_output=True, text=True, timeout=120)
    assert "PANDAS OK" in p.stderr, p.stderr
