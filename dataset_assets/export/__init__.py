"""One export run: tables read in one Postgres snapshot -> parquet shards -> manifest ->
committed to the store.

* ``run``      the pipeline, top to bottom (``export_snapshot``), workers, checks, incremental reuse
* ``shards``   size-bounded parquet files with bounded row groups
* ``progress`` progress on long work: a bar on a terminal, log lines elsewhere

May import: ``source``, ``storage``, ``errors``, ``settings``, ``tables``. Not ``release``, not Dagster.
"""
