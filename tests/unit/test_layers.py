"""The layering contract, read off the source with ``ast`` (no import runs, so it cannot be fooled
by lazy imports inside functions or ``TYPE_CHECKING`` blocks: those count too).

Top to bottom: ``cli``/``benchmarks`` → ``service`` | ``jobs`` → ``training`` → ``feature_repo`` →
``churn`` (the core). A package may import its own layer's siblings only where listed, and anything
below it; nothing imports upwards.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RANK = {"churn": 0, "feature_repo": 1, "training": 2, "jobs": 3, "service": 3, "cli": 4, "benchmarks": 4}
"""Higher imports lower; equal ranks are separate owners and may not import each other."""

STDLIB_ONLY_MODULES = {
    "jobs/drift/launch.py",
    "churn/errors.py",
    "churn/layout.py",
    "churn/settings.py",
}
"""Run in the main env before the drift env starts (or anywhere): no third-party imports."""
LAZY_THIRD_PARTY_MODULES = {"churn/storage.py"}
"""Imported by settings, so stdlib-only at import time; third-party packages only inside functions."""


def _python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if ".venv" not in p.parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name imported anywhere in ``path`` (function bodies included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            # ``from churn import feature_store`` names a submodule: check it as one.
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def _violations(package: str) -> list[str]:
    bad = []
    for path in _python_files(package):
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top not in RANK or top == package:
                continue
            if RANK[top] >= RANK[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({package} may not import {top})")
    return bad


@pytest.mark.parametrize("package", sorted(RANK))
def test_no_package_imports_a_layer_above_or_beside_it(package: str) -> None:
    assert _violations(package) == []


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from jobs.score import score\n    from churn import settings\n")
    names = [n for _, n in _imports(probe)]
    assert "jobs.score" in names and "churn.settings" in names
    assert RANK["jobs"] > RANK["training"]  # so training importing jobs.score is flagged


def test_drift_code_never_imports_feast_and_main_code_never_imports_alibi() -> None:
    for path in _python_files("jobs/drift"):
        for line, name in _imports(path):
            top = name.split(".")[0]
            assert top not in {"feast", "feature_repo", "training", "service", "cli"}, f"{path}:{line} {name}"
    for package in RANK:
        for path in _python_files(package):
            if path.is_relative_to(ROOT / "jobs" / "drift"):
                continue
            assert all(not n.startswith("alibi") for _, n in _imports(path)), path


def test_stdlib_only_modules_stay_standard_library_only() -> None:
    import sys

    for rel in sorted(STDLIB_ONLY_MODULES):
        for line, name in _imports(ROOT / rel):
            top = name.split(".")[0]
            allowed = top in sys.stdlib_module_names or name in {"churn.errors", "churn.layout", "churn.settings"}
            allowed = allowed or name == "churn.storage" or name.startswith("churn.storage.")
            core = ("churn.errors.", "churn.layout.", "churn.settings.")
            allowed = allowed or top == "__future__" or name.startswith(core)
            assert allowed, f"{rel}:{line} imports {name}"


def test_lazy_modules_import_third_party_packages_only_inside_functions() -> None:
    import sys

    for rel in sorted(LAZY_THIRD_PARTY_MODULES):
        tree = ast.parse((ROOT / rel).read_text())
        for node in tree.body:
            if isinstance(node, ast.If):  # ``if TYPE_CHECKING:`` blocks run only under a type checker
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", f"{rel}:{node.lineno} imports {name}"
