"""What is in the store: no Postgres, no Hub.

* ``layout``        every store path and the one parse of a snapshot date
* ``manifest``      a table snapshot's manifest, its one loader and validator, the root hash
* ``verify``        the one check of files against a manifest; ``verify`` of a snapshot date
* ``release_state`` draft or released: a date pushed to the Hub (``_PUBLISHED``) is immutable
* ``checks``        checks of a stored table snapshot (primary key) for the asset checks
* ``stores``        the store interface (``base``), a local folder (``local``), S3 (``s3``)

May import: ``errors``, ``settings``. Never ``source`` or ``release``.
"""
