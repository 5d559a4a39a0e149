"""End to end: `dagster dev` driven headless through GraphQL (a partition on Postgres
instance storage, in process: tests/integration/test_instance_storage.py)."""

from __future__ import annotations

import os
import socket
import time

import dagster as dg

from platform_helpers import ROOT, dagster_process

DATE = "2026-11-19"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dagster_dev_launches_a_partition_over_graphql(seeded_uri, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    store_dir = tmp_path / "store"
    env = dict(os.environ, DAGSTER_HOME=str(home), DATASET_ASSETS_SOURCE_URI=seeded_uri,
               DATASET_ASSETS_STORE_URL=str(store_dir), DATASET_ASSETS_SENSORS="stopped")
    with dg.DagsterInstance.from_config(str(home)) as inst:
        inst.add_dynamic_partitions("snapshots", [DATE])
    port = _free_port()
    log = tmp_path / "dev.log"
    with dagster_process("dagster", ["dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)], env, log) as proc:
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        deadline = time.time() + 180
        run_id, last_error = None, None
        while time.time() < deadline and run_id is None:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                run_id = client.submit_job_execution(
                    "__ASSET_JOB", repository_location_name="dataset_assets", repository_name="__repository__",
                    asset_selection=[["image"], ["audio"]], tags={"dagster/partition": DATE},
                )
            except Exception as exc:  # noqa: BLE001 - webserver (or code location) still starting
                last_error = exc
                time.sleep(2)
        assert run_id, f"webserver never accepted the run; last error: {last_error!r}"
        status = None
        while time.time() < deadline:
            status = client.get_run_status(run_id)
            if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                break
            time.sleep(2)
        assert status == dg.DagsterRunStatus.SUCCESS, log.read_text()[-3000:]
        assert (store_dir / "snapshots" / DATE / "audio" / "_SUCCESS").exists()
