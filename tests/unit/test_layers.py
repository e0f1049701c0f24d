"""Only entry points import the composer (chalicelib.wiring); domain and adapter modules do not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("app.py", "chalicelib", "local", "meterctl", "bench")

# The app, its route modules, the local job entry points, the CLI and the benchmarks.
ENTRY_POINTS = {
    "app.py",
    "chalicelib/routing.py",
    "chalicelib/analytics/routes.py",
    "chalicelib/budgets/routes.py",
    "local/partition_job.py",
    "local/budget_repair_job.py",
}
ENTRY_PACKAGES = ("meterctl/", "bench/")


def imports_wiring(source: str) -> bool:
    """Whether Python source imports chalicelib.wiring, in any of the import spellings."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            if any(alias.name.split(".")[:2] == ["chalicelib", "wiring"] for alias in node.names):
                return True
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").startswith("chalicelib.wiring"):
                return True
            if node.module == "chalicelib" and any(a.name == "wiring" for a in node.names):
                return True
    return False


def python_files() -> list[str]:
    files: list[str] = []
    for name in SOURCES:
        path = ROOT / name
        found = [path] if path.is_file() else sorted(path.rglob("*.py"))
        files += [str(file.relative_to(ROOT)) for file in found]
    return files


def test_only_entry_points_import_the_composer() -> None:
    importers = {path for path in python_files() if imports_wiring((ROOT / path).read_text())}
    others = {p for p in importers - ENTRY_POINTS if not p.startswith(ENTRY_PACKAGES)}
    assert others == set()
    assert importers >= {"app.py", "chalicelib/routing.py"}  # the walk finds real imports


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from chalicelib import logs, wiring", True),
        ("from chalicelib.wiring import container", True),
        ("import chalicelib.wiring", True),
        ("def f():\n    from chalicelib import wiring", True),
        ("from chalicelib import logs", False),
        ("from chalicelib.settings import Settings", False),
    ],
)
def test_the_check_recognises_each_spelling_of_the_import(source: str, found: bool) -> None:
    assert imports_wiring(source) is found


def imported_modules(source: str) -> set[str]:
    """Every module a Python source imports, by its full dotted name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", ["app.py", "chalicelib", "deploy"])
def test_deployed_code_and_deploy_tooling_never_import_the_local_stack(package: str) -> None:
    path = ROOT / package
    files = [path] if path.is_file() else sorted(path.rglob("*.py"))
    offenders = {
        str(file.relative_to(ROOT)): sorted(
            m for m in imported_modules(file.read_text()) if m.split(".")[0] == "local"
        )
        for file in files
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}
    assert files  # the walk found the sources
