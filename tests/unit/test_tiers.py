"""The test tiers hold (tests/tiers.py): no unit test asks for a server fixture, the list of
server fixtures is complete, and the collection hook refuses a misplaced test."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
from tiers import SERVER_FIXTURES, TESTS, tier_of, tier_problems

# what a fixture calls to start a server
STARTS_A_SERVER = {"embedded_uri", "MotoS3Server", "start_moto_server", "ThreadedMotoServer", "start_hub_server",
                   "DATASET_ASSETS_TEST_PG_URI"}


def test_no_collected_unit_test_asks_for_a_server_fixture(request):
    items = [i for i in request.session.items if i.get_closest_marker("unit")]
    assert request.node in items
    offenders = {i.nodeid: sorted(SERVER_FIXTURES.intersection(i.fixturenames)) for i in items}
    assert {k: v for k, v in offenders.items() if v} == {}


def _fixtures(path: Path) -> dict[str, tuple[set[str], set[str]]]:
    """Fixture name -> (the fixtures it asks for, every name and string in its body)."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        decorators = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
        if not any(isinstance(d, ast.Attribute) and d.attr == "fixture" for d in decorators):
            continue
        args = {a.arg for a in node.args.args} - {"request", "self"}
        words = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        words |= {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        out[node.name] = (args, words)
    return out


def test_every_server_fixture_is_listed():
    """A fixture in tests/*.py that starts a server, or asks for one that does, is in SERVER_FIXTURES."""
    fixtures = {}
    for path in sorted(TESTS.glob("*.py")):
        fixtures.update(_fixtures(path))
    servers = {name for name, (_, words) in fixtures.items() if words & STARTS_A_SERVER}
    assert {"pg_server_uri", "moto_server", "hub_server"} <= servers
    while True:
        more = {name for name, (args, _) in fixtures.items() if args & servers} - servers
        if not more:
            break
        servers |= more
    assert servers <= SERVER_FIXTURES, f"add {sorted(servers - SERVER_FIXTURES)} to SERVER_FIXTURES in tests/tiers.py"
    assert SERVER_FIXTURES <= set(fixtures), f"no such fixtures: {sorted(SERVER_FIXTURES - set(fixtures))}"


def test_tier_of():
    assert tier_of(TESTS / "unit" / "test_x.py") == "unit"
    assert tier_of(TESTS / "integration" / "sub" / "test_x.py") == "integration"
    assert tier_of(TESTS / "e2e" / "test_x.py") == "e2e"
    assert tier_of(TESTS / "test_x.py") is None
    assert tier_of(TESTS / "unit") is None
    assert tier_of(TESTS.parent / "bench" / "test_x.py") is None


@pytest.mark.parametrize("where, fixtures, refused", [
    ("unit", ["tmp_path", "monkeypatch"], None),
    ("unit", ["tmp_path", "seeded_uri", "fresh_db", "pg_server_uri"], "fresh_db, pg_server_uri, seeded_uri"),
    ("unit", ["s3_store", "s3_env", "moto_server"], "moto_server, s3_env, s3_store"),
    ("unit", ["hub_server"], "hub_server"),
    ("integration", ["seeded_uri", "hub_server", "s3_store"], None),
    ("e2e", ["mutable_uri"], None),
    ("", ["tmp_path"], "tests/unit, tests/integration or tests/e2e"),
])
def test_the_collection_hook_refuses_misplaced_tests(where, fixtures, refused):
    path = TESTS / where / "test_x.py"
    item = SimpleNamespace(path=path, nodeid=f"{path.relative_to(TESTS.parent)}::test_x", fixturenames=fixtures)
    problems = tier_problems([item])
    if refused is None:
        assert problems == []
    else:
        [problem] = problems
        assert problem.startswith(item.nodeid) and refused in problem


def test_no_two_test_modules_share_a_name():
    """Without packages, pytest imports test modules by basename: two of one name in two tiers
    stop the whole run at collection (`import file mismatch`)."""
    from collections import Counter
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    names = Counter(p.name for p in tests.rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1], names
