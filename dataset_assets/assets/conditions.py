"""Automation conditions shared by the per-snapshot release assets."""

import dagster as dg

AC = dg.AutomationCondition


def _deps_updated_since(reset: dg.AutomationCondition) -> dg.AutomationCondition:
    """Some dependency materialised after ``reset`` last held. Both sides carry timestamps, so
    when both happen between the same two evaluations the later one wins; eager()'s trigger
    (``newly_missing | any_deps_updated``) carries none, and there the reset always wins:
    a table updated just after the card was lost (dagster-io/dagster#33587)."""
    return AC.any_deps_match(AC.newly_updated()).since(reset)


# Follow the tables: once every table of a date has been (re)materialised after the date's
# card and their blocking checks passed, the card (and, after it, the push) is refreshed.
# eager() without its lossy trigger: newer than the target's latest materialisation and
# than its latest request (no second request while one is pending, none after a failure
# until a dependency changes again), no dependency missing or in progress.
FOLLOW_TABLES = (
    _deps_updated_since(AC.newly_updated())
    & _deps_updated_since(AC.newly_requested())
    & ~AC.any_deps_missing()
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
    & AC.all_deps_blocking_checks_passed()
).with_label("follow_tables")
