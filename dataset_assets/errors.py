"""Errors a user can act on.

Every failure that comes from input or environment (a wrong table name, an
unreachable database, a full disk) is raised as :class:`UserError` with one
sentence that says what is wrong and what to do. The CLI prints that sentence
and exits non-zero without a traceback; Dagster shows it as the run failure.
"""


class UserError(Exception):
    """A failure the user can fix; ``str(err)`` is the whole message."""

    exit_code = 2


class SourceError(UserError):
    """The source database cannot be reached or used."""


class StoreError(UserError):
    """The store cannot be read or written."""


class SnapshotExists(UserError):
    """A complete snapshot is already there and snapshots are immutable."""


class VerificationError(UserError):
    """A stored snapshot does not match its manifest."""

    exit_code = 1
