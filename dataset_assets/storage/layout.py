"""Where everything lives in a store: every key of the layout and the one parse of a
snapshot date. No other module spells a store path.

::

    snapshots/<date>/README.md                       the dataset card
    snapshots/<date>/_PUBLISHED                      present once released (pushed to the Hub)
    snapshots/<date>/_RELEASING                      present while its push runs (or after a crashed one)
    snapshots/<date>/<table>/train-CCCCC-PPP.parquet shards
    snapshots/<date>/<table>/_manifest.json          files, rows, sha256, schema, root hash
    snapshots/<date>/<table>/_SUCCESS                written last: the table is complete
    snapshots/<date>/<table>/train-NNNNN.parquet     shards of layout clustered (export/refresh.py)
    snapshots/<date>/<table>/_index.parquet          layout clustered: the row index (never published)
    snapshots/<date>/<table>/changes/changes-00000.parquet  layout clustered: the change feed since the previous release

Words: a *snapshot date* (``YYYY-MM-DD``, the Dagster partition) names the folder
``snapshots/<date>/``; a *table snapshot* is one table's folder in it.

Imports nothing of the project but ``errors``.
"""

from __future__ import annotations

import datetime as dt

from dataset_assets.errors import UserError

ROOT = "snapshots"
SUCCESS = "_SUCCESS"
MANIFEST = "_manifest.json"
README = "README.md"
PUBLISHED = "_PUBLISHED"
RELEASING = "_RELEASING"
INDEX = "_index.parquet"
CHANGES = "changes"


def parse_snapshot_date(value: str) -> str:
    """``value`` as a ``YYYY-MM-DD`` snapshot date, or a :class:`UserError` saying the form."""
    try:
        if isinstance(value, str) and len(value) == 10:
            return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise UserError(f"Snapshot date {value!r} is not a date in the form YYYY-MM-DD "
                    f"(for example {dt.date.today().isoformat()}).")


def is_snapshot_date(value: str) -> bool:
    try:
        parse_snapshot_date(value)
        return True
    except UserError:
        return False


def date_prefix(date: str) -> str:
    return f"{ROOT}/{date}"


def table_prefix(date: str, table: str) -> str:
    return f"{ROOT}/{date}/{table}"


def card_key(date: str) -> str:
    return f"{ROOT}/{date}/{README}"


def published_key(date: str) -> str:
    return f"{ROOT}/{date}/{PUBLISHED}"


def releasing_key(date: str) -> str:
    return f"{ROOT}/{date}/{RELEASING}"


def leaf(prefix: str) -> str:
    """The last part of a key or prefix (a date of ``snapshots/<date>``, a table of a date's folder)."""
    return prefix.rstrip("/").rsplit("/", 1)[-1]


def snapshot_dates(store) -> list[str]:
    """Every snapshot date folder in ``store``, oldest first (names that are not dates are ignored)."""
    return sorted(d for d in map(leaf, store.iter_prefixes(ROOT)) if is_snapshot_date(d))


def date_tables(store, date: str) -> list[str]:
    """The table folders of ``date``, by name."""
    return sorted(map(leaf, store.iter_prefixes(date_prefix(date))))
