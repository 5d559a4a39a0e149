"""Automation conditions shared by the per-snapshot release assets."""

import dagster as dg

# Follow the tables: once every table of a date has been (re)materialised and
# their blocking checks passed, the date's card (and push) are refreshed.
FOLLOW_TABLES = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
