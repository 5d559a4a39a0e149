"""A partition on an instance whose storage is Postgres (dagster-postgres), in process."""

from __future__ import annotations

import dagster as dg
from platform_helpers import materialize

DATE = "2026-11-19"


def test_partition_on_postgres_instance_storage(fresh_db, seeded_uri, tmp_path):
    from dataset_assets import definitions

    storage_uri = fresh_db("dagster")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {storage_uri}\ntelemetry:\n  enabled: false\n")
    with dg.instance_for_test(temp_dir=str(home), overrides={"storage": {"postgres": {"postgres_url": storage_uri}}}) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = materialize(definitions, instance, DATE, seeded_uri, tmp_path / "store",
                             selection=dg.AssetSelection.assets("image", "audio").without_checks())
        assert result.success
        ev = instance.get_latest_materialization_event(dg.AssetKey("audio"))
        assert ev is not None and ev.dagster_event.partition == DATE
    import psycopg

    with psycopg.connect(storage_uri) as c:
        assert c.execute("SELECT count(*) FROM runs").fetchone()[0] >= 1
