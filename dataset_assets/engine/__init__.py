"""The export engine: Postgres -> Arrow batches -> parquet shards -> manifest -> store.

Knows nothing of Dagster; the CLI, the benchmark and the Dagster assets all call
:func:`dataset_assets.engine.export.export_snapshot`.
"""
