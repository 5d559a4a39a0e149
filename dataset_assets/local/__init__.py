"""Local development only: the embedded Postgres (``embedded``), the sample-data seeder
(``seed``), the environment ``make demo`` and ``make dev`` share (``env``), the demo
(``demo``, which drives Dagster) and ``dev`` (webserver + daemon).

The rest of the project reaches it only lazily, for the local mode's defaults (the embedded
Postgres when no source is configured) and the CLI's ``seed``; in production mode
(``DATASET_ASSETS_MODE=production``) nothing falls back to it.
"""
