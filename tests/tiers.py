"""The three test tiers, told apart by the folder a test lives in.

* ``tests/unit``: no servers at all (no Postgres, no S3 server, no Hub stand-in); the whole
  tier runs in under a minute.
* ``tests/integration``: a real Postgres, moto's S3 server, the local Hub stand-in.
* ``tests/e2e``: ``dagster-daemon``, ``dagster dev``, the demo: Dagster as separate processes.

``tests/conftest.py`` marks every collected test with its tier (the markers are registered in
pyproject.toml, with ``--strict-markers``) and refuses, before anything runs, a test outside the
three folders and a unit test that asks for a server fixture, directly or through another
fixture; a unit test that asks for one at run time (``request.getfixturevalue``) fails.
The shared helpers (conftest_hub, conftest_s3, hub_server, s3_server, platform_helpers, ...) stay
in ``tests/``, which pyproject.toml puts on ``sys.path`` for every tier.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e")

# Every fixture that starts a server or stands on one (tests/unit/test_tiers.py checks that the
# conftest files define no other). Fixtures defined in test modules on top of these are caught
# too: a test's fixture names are the closure of everything it requests.
SERVER_FIXTURES = frozenset({
    "pg_server_uri", "fresh_db", "seeded_uri", "mutable_uri",  # conftest.py: Postgres
    "moto_server", "s3_env", "s3_store",                       # conftest_s3.py: moto's S3 server
    "hub_server",                                              # conftest_hub.py: the local Hub
})


def tier_of(path: str | Path) -> str | None:
    """``unit``, ``integration`` or ``e2e`` for a file under that folder of tests/, else None."""
    try:
        parts = Path(path).resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def server_fixtures(fixturenames: Iterable[str]) -> list[str]:
    return sorted(SERVER_FIXTURES.intersection(fixturenames))


def tier_problems(items) -> list[str]:
    """One line per collected test that is in no tier, or in the unit tier with a server fixture."""
    problems = []
    for item in items:
        tier = tier_of(item.path)
        if tier is None:
            problems.append(f"{item.nodeid}: tests live in tests/unit, tests/integration or tests/e2e")
        elif tier == "unit" and (servers := server_fixtures(item.fixturenames)):
            problems.append(f"{item.nodeid}: a unit test starts no server, but this one asks for "
                            f"{', '.join(servers)}; move it to tests/integration")
    return problems
