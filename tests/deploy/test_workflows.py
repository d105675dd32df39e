"""GitHub Actions workflows (actionlint + shellcheck) and the tools installer (shellcheck)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.env import REPO, require_tool
from tests.support.tools import CHART, run

pytestmark = pytest.mark.deploy

WORKFLOWS = REPO / ".github" / "workflows"


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def test_actionlint() -> None:
    actionlint = require_tool("actionlint")
    require_tool("shellcheck")  # actionlint lints `run:` scripts with shellcheck when on PATH
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert files
    proc = run([actionlint, "-no-color", *files])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_install_script() -> None:
    shellcheck = require_tool("shellcheck")
    proc = run([shellcheck, str(REPO / "scripts" / "install-tools.sh")])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actions_pinned_to_major_versions() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for uses in re.findall(r"uses:\s*(\S+)", path.read_text()):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", uses), f"{path.name}: {uses}"


def test_ci_pipeline() -> None:
    ci = _load("ci.yml")
    assert ci["permissions"] == {"contents": "read"}
    assert "group" in ci["concurrency"]
    jobs = ci["jobs"]
    assert any("make lint" in s.get("run", "") for s in jobs["lint"]["steps"])
    test = jobs["test"]
    assert test["needs"] == "lint"
    assert {"redis", "postgres"} <= set(test["services"])
    assert any("make test" in s.get("run", "") for s in test["steps"])
    images = jobs["images"]
    assert images["needs"] == "test"
    assert images["permissions"] == {"contents": "read", "packages": "write"}
    assert images["strategy"]["matrix"]["image"] == ["api", "ml", "drift"]
    for name in images["strategy"]["matrix"]["image"]:
        assert (REPO / "docker" / f"Dockerfile.{name}").exists()
    build = next(s for s in images["steps"] if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["file"] == "docker/Dockerfile.${{ matrix.image }}"
    assert "type=gha" in build["with"]["cache-from"] and "type=gha" in build["with"]["cache-to"]
    meta = next(s for s in images["steps"] if s.get("uses", "").startswith("docker/metadata-action@"))
    tags = meta["with"]["tags"]
    assert "type=sha" in tags and "type=ref,event=branch" in tags
    assert "value=staging,enable={{is_default_branch}}" in tags
    text = (WORKFLOWS / "ci.yml").read_text()
    assert "ghcr.io/${GITHUB_REPOSITORY,,}" in text


def test_release_pipeline() -> None:
    rel = _load("release.yml")
    assert rel["on"] == {"push": {"tags": ["v*"]}}
    assert rel["permissions"] == {"contents": "read"}
    assert rel["concurrency"]["cancel-in-progress"] is False
    promote = rel["jobs"]["promote"]
    assert promote["needs"] == "images" and promote["permissions"] == {"contents": "write"}
    script = "\n".join(s.get("run", "") for s in promote["steps"])
    assert ".image.tag = strenv(VERSION)" in script
    assert "charts/churn-platform/values-production.yaml" in script and "git push" in script
    prod = yaml.safe_load((CHART / "values-production.yaml").read_text())
    assert isinstance(prod["image"]["tag"], str) and prod["image"]["tag"]


APT_BINARIES = {"redis-server": {"redis-server"}}
"""Debian/Ubuntu package → the binaries the suite looks for that it installs."""


def _demanded_binaries() -> set[str]:
    """Every executable a test asks for by name, through ``require_tool`` or ``shutil.which``."""
    names: set[str] = set()
    for path in (REPO / "tests").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r'require_tool\("([\w.-]+)"', text))
        names |= set(re.findall(r'shutil\.which\("([\w.-]+)"\)', text))
    return names - {"mount", "sudo"}  # the tmpfs case: base system of every runner, not a package


def test_ci_installs_every_binary_the_suite_demands() -> None:
    script = (REPO / "scripts" / "install-tools.sh").read_text()
    loop = re.findall(r"^for exe in ([\w .-]+); do", script, flags=re.M)
    assert loop, "install-tools.sh lists the tools it installs in a `for exe in ...; do` check loop"
    from_script = set(loop[-1].split())
    steps = _load("ci.yml")["jobs"]["test"]["steps"]
    packages: set[str] = set()
    for st in steps:
        for line in str(st.get("run", "")).splitlines():
            if "apt-get install" in line:
                packages |= {w for w in line.split("apt-get install", 1)[1].split() if not w.startswith("-")}
    from_apt = set().union(*(APT_BINARIES.get(p, set()) for p in packages))
    demanded = _demanded_binaries()
    assert "redis-server" in demanded and "helm" in demanded  # the scan sees the suite's demands
    missing = demanded - from_script - from_apt
    assert not missing, f"ci.yml's test job does not install {sorted(missing)} (apt packages: {sorted(packages)})"
    names = [st.get("name", st.get("run", "")) for st in steps]
    assert names.index("System packages") < next(i for i, st in enumerate(steps) if st.get("run") == "make test")
