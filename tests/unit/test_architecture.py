"""The layers hold: each rule of the layout (README "Layout") is checked on the source text,
so a change that breaks one fails here rather than in a reviewer's reading."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "dataset_assets"
DAGSTER_LAYER = ("assets/", "resources/", "sensors/", "definitions.py", "partitions.py", "local/demo.py")
POSTGRES_ALLOWED = ("source/", "local/")
DRIVERS = ("adbc_driver_postgresql", "adbc_driver_manager", "psycopg", "psycopg2", "pgserver")
SQL = re.compile(r"^\s*(SELECT|WITH|COPY|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|SET|BEGIN|COMMIT|ROLLBACK|TRUNCATE|VACUUM|ANALYZE|LOCK)\b"
                 r"|\bSELECT\b[\s\S]*\bFROM\b")


def modules() -> dict[str, ast.Module]:
    return {p.relative_to(PKG).as_posix(): ast.parse(p.read_text(), str(p)) for p in sorted(PKG.rglob("*.py"))}


def imported(tree: ast.Module) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def in_layer(path: str, layer) -> bool:
    return path.startswith(tuple(layer)) or path in layer


def test_only_the_dagster_layer_imports_dagster():
    offenders = sorted(path for path, tree in modules().items()
                       if not in_layer(path, DAGSTER_LAYER)
                       and any(m == "dagster" or m.startswith(("dagster.", "dagster_")) for m in imported(tree)))
    assert not offenders, f"dagster imported outside the Dagster layer: {offenders}"


def test_only_source_imports_the_postgres_driver():
    offenders = sorted(path for path, tree in modules().items()
                       if not in_layer(path, POSTGRES_ALLOWED)
                       and any(m.split(".")[0] in DRIVERS for m in imported(tree)))
    assert not offenders, f"a Postgres driver imported outside source/ and local/: {offenders}"


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def sql_strings(tree: ast.Module) -> list[str]:
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if SQL.search(node.value):
                found.append(node.value.strip()[:60])
    return found


def test_sql_lives_in_source():
    offenders = {path: sql for path, tree in modules().items()
                 if not in_layer(path, POSTGRES_ALLOWED) and (sql := sql_strings(tree))}
    assert not offenders, f"SQL outside source/ and local/: {offenders}"


def test_the_sql_detector_finds_sql():
    tree = ast.parse('"""SELECT in a docstring is prose."""\nq = "SELECT a FROM t"\nr = f"COPY ({q}) TO STDOUT"\n')
    assert sql_strings(tree) == ["SELECT a FROM t", "COPY ("]


def _project_imports(path: str, tree: ast.Module) -> set[str]:
    return {m.split(".")[1] for m in imported(tree) if m.startswith("dataset_assets.")}


def test_layers_import_only_downwards():
    """source knows no store, release or Dagster; storage knows no Postgres and no Hub; export
    knows no release; release knows no Postgres."""
    forbidden = {
        "source/": {"storage", "export", "release", "assets", "resources", "sensors", "local", "cli"},
        "storage/": {"source", "export", "release", "assets", "resources", "sensors", "local", "cli"},
        "export/": {"release", "assets", "resources", "sensors", "local", "cli"},
        "release/": {"source", "export", "assets", "resources", "sensors", "local", "cli"},
        "settings.py": {"tables", "source", "storage", "export", "release", "local"},
        "tables.py": {"source", "storage", "export", "release", "local"},
        "errors.py": {"settings", "tables", "source", "storage", "export", "release", "local"},
    }
    problems = []
    for path, tree in modules().items():
        for layer, bad in forbidden.items():
            if path.startswith(layer) or path == layer:
                wrong = _project_imports(path, tree) & bad
                if wrong:
                    problems.append(f"{path} imports {sorted(wrong)}")
    assert not problems, problems


def test_every_package_says_what_it_owns():
    for init in sorted(PKG.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.relative_to(PKG)} needs a docstring saying what the package owns"


def test_store_paths_are_spelled_only_in_the_layout():
    """Every ``snapshots/...`` key is built by storage/layout.py."""
    offenders = []
    for path, tree in modules().items():
        if path == "storage/layout.py":
            continue
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                if node.value.startswith("snapshots/") or node.value in ("_SUCCESS", "_manifest.json", "_PUBLISHED"):
                    offenders.append(f"{path}: {node.value!r}")
    assert not offenders, offenders
