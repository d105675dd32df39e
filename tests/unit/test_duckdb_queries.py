"""How the code hands parameters to DuckDB, read off the source with ``ast``.

DuckDB's relation API (``con.sql(query, params=...)``) runs a parameterized query many times
slower than ``con.execute(query, params)`` (duckdb/duckdb-python#238, closed as won't fix; DuckDB's
docs now warn against it). It made the online load's latest-row read half of materialization's
time, so no module may use it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("churn", "feature_repo", "training", "jobs", "service", "cli", "benchmarks")


def _parameterized_sql_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "sql"
        and any(k.arg == "params" for k in node.keywords)
    ]


def test_no_module_runs_a_parameterized_query_through_the_relation_api() -> None:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) if ".venv" not in p.parts]
    assert files
    assert [hit for f in files for hit in _parameterized_sql_calls(f)] == []


def test_the_check_finds_one(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f(con):\n    con.execute('SELECT $a', {'a': 1})\n    return con.sql('SELECT $a', params={'a': 1})\n"
    )
    assert _parameterized_sql_calls(probe) == [f"{probe}:3"]
