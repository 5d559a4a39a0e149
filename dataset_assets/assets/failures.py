"""One translation of user errors for every asset and check: the run fails with the
error's one sentence as its description, not a traceback."""

from contextlib import contextmanager

import dagster as dg

from dataset_assets.errors import UserError


@contextmanager
def user_errors_fail():
    try:
        yield
    except UserError as exc:
        raise dg.Failure(description=str(exc)) from None
