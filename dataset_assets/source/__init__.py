"""The source: Postgres, and only Postgres. Every SQL string of the project (but the local
development tools') and every use of the Postgres driver live in this package.

* ``connect``      connections (ADBC), redaction of credentials, identifier quoting, error sentences
* ``catalog``      what the catalog says about a table: columns, types, keys, size
* ``types``        Postgres types -> one stable Arrow schema, and the conversion of driver batches
* ``snapshot``     the Postgres snapshot (MVCC) every reader of one export shares
* ``plan``         what to read for a table: columns, filters, ctid ranges, count query
* ``fingerprints`` key-range chunks and their fingerprints (incremental exports)
* ``signals``      cheap per-table change signals for the sensor

May import: ``errors``, ``settings``, ``tables``. Nothing of the store, the release or Dagster.
"""
