"""Helpers shared by the tests: resources pointing at test databases and stores, the CLI
as a subprocess, and Dagster processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg

from dataset_assets.resources import ExportSettings, HubResource, SnapshotStore, SourceDatabase

ROOT = Path(__file__).resolve().parent.parent

RELEASE = "hub_release"


def resources(source_uri: str, store_dir, hub: HubResource | None = None) -> dict:
    """``hub``: the Hub to publish to (default: an unconfigured one, which ``hub_release`` refuses)."""
    return {
        "source_db": SourceDatabase(uri=source_uri),
        "snapshot_store": SnapshotStore(url=str(store_dir)),
        "export_settings": ExportSettings(workers=2),
        "hub": hub if hub is not None else HubResource(),
    }


def materialize(defs_module, instance, partition, source_uri, store_dir, selection=None, raise_on_error=False,
                hub: HubResource | None = None):
    """Materialise ``selection`` (default: every asset and check; ``hub_release`` only when ``hub`` is given)."""
    if not instance.has_dynamic_partition("snapshots", partition):
        instance.add_dynamic_partitions("snapshots", [partition])
    if selection is None and hub is None:
        selection = dg.AssetSelection.all() - dg.AssetSelection.assets(RELEASE)
    return dg.materialize(
        [*defs_module.assets, *defs_module.asset_checks],
        instance=instance,
        partition_key=partition,
        resources=resources(source_uri, store_dir, hub),
        selection=selection,
        raise_on_error=raise_on_error,
    )


def check_results(result) -> dict[tuple[str, str], bool]:
    out = {}
    for e in result.all_events:
        if e.event_type_value == "ASSET_CHECK_EVALUATION":
            d = e.event_specific_data
            out[(d.asset_key.to_user_string(), d.check_name)] = d.passed
    return out


def materialization_metadata(result, asset: str) -> dict:
    for e in result.all_events:
        if e.event_type_value == "ASSET_MATERIALIZATION":
            m = e.event_specific_data.materialization
            if m.asset_key.to_user_string() == asset:
                return m.metadata
    raise AssertionError(f"no materialisation of {asset}")


@contextlib.contextmanager
def dagster_process(command: str, args: list[str], env: dict, log: Path):
    """Run a Dagster command (``dagster``, ``dagster-daemon``) from this venv in its own
    process group, SIGINT restored (see the Dagster notes), stopped with SIGTERM at the end."""
    exe = str(Path(sys.executable).parent / command)
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [exe, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=True,
        )
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run_cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """``dataset-assets ARGS`` in a subprocess, with ``env`` added to this environment."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "dataset_assets.cli", *args], capture_output=True, text=True,
                          env=e, timeout=timeout)


def assert_one_sentence_error(proc, *needles) -> None:
    """A non-zero exit with exactly one ``error:`` line holding every needle, and no traceback."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
