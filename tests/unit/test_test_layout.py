"""The test suite's own layout, by AST (nothing is imported or run):

1. every test helper lives in ``tests.support``: no module under tests/ imports another test module, a
   conftest, or anything else under ``tests`` outside ``tests.support``;
2. conftest.py files hold fixtures only (plus pytest hooks);
3. unit tests (tests/unit) start no servers and no subprocesses: they import none of ``subprocess``,
   ``multiprocessing``, ``uvicorn``, socket-server modules or the process-starting helpers
   (``tests.support.servers``, ``tests.support.tools``), directly or through other ``tests.support``
   modules, and call no ``os.system``/``os.fork``/``os.spawn*``/``os.exec*``/``os.popen``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
SUPPORT = "tests.support"

FORBIDDEN_IN_UNIT = (
    "subprocess",
    "multiprocessing",
    "pty",
    "uvicorn",
    "socketserver",
    "http.server",
    "wsgiref.simple_server",
    "concurrent.futures.process",
    "tests.support.servers",
    "tests.support.tools",
)
FORBIDDEN_NAMES_IN_UNIT = {("concurrent.futures", "ProcessPoolExecutor")}
FORBIDDEN_OS_CALLS = ("system", "popen", "fork", "forkpty", "spawn", "exec", "posix_spawn")
FORBIDDEN_ASYNCIO_CALLS = ("create_subprocess_exec", "create_subprocess_shell")
CONFTEST_NAMES = {"__all__", "pytest_plugins", "pytestmark"}



def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _source(path: Path) -> tuple[str, str]:
    """(source text, package the module lives in) of a file under tests/."""
    name = _module_name(path)
    return path.read_text(), name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(source: str, package: str) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, absolute module, imported names) of every import statement, at any depth."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            names = tuple(a.name for a in node.names)
            yield node.lineno, module, names
            # `from tests.integration import test_api` imports a module too
            for name in names:
                yield node.lineno, f"{module}.{name}", ()


def _is_module(name: str) -> bool:
    dotted = REPO.joinpath(*name.split("."))
    return dotted.with_suffix(".py").exists() or (dotted / "__init__.py").exists()


def _test_helper_imports(source: str, package: str) -> set[tuple[int, str]]:
    """Imports of a ``tests.*`` module outside tests.support."""
    out = set()
    for line, module, _names in _imports(source, package):
        inside_tests = module == "tests" or module.startswith("tests.")
        in_support = module == SUPPORT or module.startswith(SUPPORT + ".")
        if inside_tests and not in_support and _is_module(module) and module != "tests":
            out.add((line, module))
    return out


def _matches(module: str, forbidden: str) -> bool:
    return module == forbidden or module.startswith(forbidden + ".")


def _process_imports(
    source: str, package: str, where: str, seen: set[Path] | None = None
) -> set[tuple[str, int, str]]:
    """(file, line, what) of every process/server-starting import or call of a module (``where`` names
    it) and of the tests.support modules it imports (transitively)."""
    seen = set() if seen is None else seen
    out = set()
    for line, module, names in _imports(source, package):
        if any(_matches(module, f) for f in FORBIDDEN_IN_UNIT):
            out.add((where, line, module))
        out |= {(where, line, f"{module}.{n}") for n in names if (module, n) in FORBIDDEN_NAMES_IN_UNIT}
        target = REPO.joinpath(*module.split(".")).with_suffix(".py")
        if module.startswith(SUPPORT + ".") and target.exists() and target not in seen:
            seen.add(target)
            out |= _process_imports(*_source(target), _rel(target), seen)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, attr = node.value.id, node.attr
            if (owner == "os" and attr.startswith(FORBIDDEN_OS_CALLS)) or (
                owner == "asyncio" and attr in FORBIDDEN_ASYNCIO_CALLS
            ):
                out.add((where, node.lineno, f"{owner}.{attr}"))
    return out


def test_tests_import_helpers_only_from_tests_support() -> None:
    bad = []
    for path in _modules():
        bad += [f"{_rel(path)}:{line} imports {m}" for line, m in sorted(_test_helper_imports(*_source(path)))]
    assert not bad, "import test helpers from tests.support, never from a test module or conftest:\n" + "\n".join(
        bad
    )


def test_conftest_files_hold_fixtures_only() -> None:
    bad = []
    for path in _modules():
        if path.name != "conftest.py":
            continue
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                fixture = any(
                    "fixture" in ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list
                )
                if not fixture and not node.name.startswith("pytest_"):
                    bad.append(f"{_rel(path)}:{node.lineno} def {node.name} (helpers go to tests/support)")
            elif isinstance(node, ast.ClassDef):
                bad.append(f"{_rel(path)}:{node.lineno} class {node.name} (helpers go to tests/support)")
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = {t.id for t in targets if isinstance(t, ast.Name)}
                if not names or names - CONFTEST_NAMES:
                    bad.append(f"{_rel(path)}:{node.lineno} {ast.unparse(node)[:60]} (constants go to tests/support)")
    assert not bad, "\n".join(bad)


def test_unit_tests_start_no_servers_or_subprocesses() -> None:
    bad = []
    for path in sorted((TESTS / "unit").rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        found = _process_imports(*_source(path), _rel(path))
        bad += [f"{where}:{line} {what}" for where, line, what in sorted(found)]
    assert not bad, "unit tests start no servers/subprocesses (move such tests to tests/integration):\n" + "\n".join(
        bad
    )


def test_the_checks_see_violations() -> None:
    """The AST checks themselves catch what they should (a planted module in tests/unit)."""
    probe = (
        "import subprocess\nfrom tests.integration.test_api import clone_version\nfrom ..conftest import x\n"
        "from tests.support import servers\nfrom concurrent.futures import ProcessPoolExecutor\nimport os\n"
        "from tests.support.sites import copy_site\nfrom tests.integration import servers as old\n"
        "def f():\n    os.system('true')\n"
    )
    assert {m for _, m in _test_helper_imports(probe, "tests.unit")} == {
        "tests.integration.test_api",
        "tests.conftest",
        "tests.integration",
    }
    found = _process_imports(probe, "tests.unit", "probe")
    assert {what for where, _, what in found if where == "probe"} == {
        "subprocess",
        "tests.support.servers",
        "concurrent.futures.ProcessPoolExecutor",
        "os.system",
    }
    # ... and through tests.support: servers.py imports uvicorn, subprocess and http.server; sites.py nothing
    assert {(where, what) for where, _, what in found if where != "probe"} == {
        ("tests/support/servers.py", "uvicorn"),
        ("tests/support/servers.py", "subprocess"),
        ("tests/support/servers.py", "http.server"),
        ("tests/support/servers.py", "http.server.BaseHTTPRequestHandler"),
        ("tests/support/servers.py", "http.server.ThreadingHTTPServer"),
    }
