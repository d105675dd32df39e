"""Shared fixtures for the offline deployment checks (pytest -m deploy).

The tools (helm, kubernetes-validate, hadolint, actionlint, shellcheck, promtool) are installed by
``make tools`` (scripts/install-tools.sh) into $TOOLS_DIR/bin, which ``make test`` puts on PATH.
A missing tool FAILS the test under CI (CI=true) and skips it, with the reason, elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "churn-platform"
RELEASE = "churn-platform"
NAMESPACE = "churn"
CRD_GROUPS = ("monitoring.coreos.com/", "argoproj.io/")

# Every rendering the tests look at: name -> extra `helm template` arguments.
CASES: dict[str, list[str]] = {
    "default": [],
    "staging": ["-f", str(CHART / "values-staging.yaml")],
    "production": ["-f", str(CHART / "values-production.yaml")],
    "all-features": [
        "--set",
        "redis.enabled=true,metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,"
        "seed.generateData.enabled=true,networkPolicy.enabled=true,dashboards.enabled=true",
    ],
    "minimal": [
        "--set",
        "autoscaling.enabled=false,podDisruptionBudget.enabled=false,networkPolicy.enabled=false,"
        "seed.enabled=false,dashboards.enabled=false,persistence.existingClaim=shared-churn-data",
    ],
}
VALUES_FILES = {"default": None, "staging": "values-staging.yaml", "production": "values-production.yaml"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_tool(name: str) -> str:
    """Path of a tool on PATH; fail in CI, skip (with the reason) locally when it is missing."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not found on PATH: run `make tools` and put $TOOLS_DIR/bin on PATH"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 120)
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def helm_template(
    extra: list[str], chart: Path = CHART, release: str = RELEASE, namespace: str = NAMESPACE
) -> subprocess.CompletedProcess[str]:
    helm = require_tool("helm")
    return run([helm, "template", release, str(chart), "--namespace", namespace, *extra])


def parse_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d]


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def values_for(case: str) -> dict[str, Any]:
    """The effective values of a VALUES_FILES case (values.yaml + overlay)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    overlay = VALUES_FILES.get(case)
    if overlay:
        values = deep_merge(values, yaml.safe_load((CHART / overlay).read_text()) or {})
    return values


class Rendered:
    """The manifests of one rendering, with small lookup helpers."""

    def __init__(self, case: str, text: str) -> None:
        self.case = case
        self.text = text
        self.docs = parse_docs(text)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"[{self.case}] expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def native(self) -> list[dict[str, Any]]:
        return [d for d in self.docs if not d["apiVersion"].startswith(CRD_GROUPS)]

    def crds(self) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["apiVersion"].startswith(CRD_GROUPS)]

    def workloads(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(object, pod spec) for every Deployment, Job and CronJob."""
        for d in self.docs:
            kind = d.get("kind")
            if kind in {"Deployment", "Job"}:
                yield d, d["spec"]["template"]["spec"]
            elif kind == "CronJob":
                yield d, d["spec"]["jobTemplate"]["spec"]["template"]["spec"]

    def churn_workloads(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Workloads of the chart itself (not the vendored Redis subchart)."""
        for obj, pod in self.workloads():
            if obj["metadata"]["labels"].get("app.kubernetes.io/name") != "redis":
                yield obj, pod


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    """`helm template` of every case, rendered once per session (in parallel)."""
    require_tool("helm")
    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        results = dict(zip(CASES, pool.map(helm_template, CASES.values()), strict=True))
    out: dict[str, Rendered] = {}
    for case, proc in results.items():
        assert proc.returncode == 0, f"helm template [{case}] failed:\n{proc.stderr}"
        out[case] = Rendered(case, proc.stdout)
    return out


# ---- docs/contracts.md -----------------------------------------------------------------------
CONTRACTS = REPO / "docs" / "contracts.md"


def _section(title: str) -> str:
    text = CONTRACTS.read_text()
    m = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"section {title!r} not found in docs/contracts.md"
    return m.group(1)


def contract_commands() -> dict[tuple[str, ...], set[str]]:
    """`churn` command paths from the Commands block -> the options the contract lists for them."""
    block = re.search(r"```(.*?)```", _section("Commands"), re.S)
    assert block, "no command block in docs/contracts.md"
    commands: dict[tuple[str, ...], set[str]] = {}
    for raw in block.group(1).splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("churn "):
            continue
        alternatives = [a.strip() for a in line.split("|")]
        first = alternatives[0].split()[1:]
        group = first[0]
        for i, alt in enumerate(alternatives):
            words = alt.split()
            words = words[1:] if i == 0 else [group, *words]
            path: list[str] = []
            for w in words:
                if re.fullmatch(r"[a-z][a-z-]*", w):
                    path.append(w)
                else:
                    break
            commands[tuple(path)] = set(re.findall(r"--[a-z][a-z-]*", alt))
    return commands


def contract_drift_options() -> set[str]:
    m = re.search(r"`python -m jobs\.drift ([^`]*)`", CONTRACTS.read_text())
    assert m, "drift entry point not found in docs/contracts.md"
    return set(re.findall(r"--[a-z][a-z-]*", m.group(1)))


def contract_routes() -> set[str]:
    return set(re.findall(r"(/[a-z][a-z/]*)", _section("API")))


def contract_metrics() -> set[str]:
    return set(re.findall(r"\b(churn_[a-z_]+)", _section("Prometheus metric names")))
