"""Subprocess runners: the ``churn`` CLI on a test data dir, and the deployment tools (helm & co).

The tools (helm, kubernetes-validate, hadolint, actionlint, shellcheck, promtool, checkov, pip-audit)
are installed by ``make tools`` (scripts/install-tools.sh) into $TOOLS_DIR/bin, which ``make test``
puts on PATH; :func:`tests.support.env.require_tool` fails under CI and skips elsewhere when one is missing.
Unit tests must not use this module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from churn.settings import Settings
from tests.support.env import REPO, require_tool

# The `churn` entry point installed next to the interpreter running the tests (.venv/bin/churn).
CHURN = Path(sys.executable).with_name("churn")


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, capture text output, never raise on a non-zero exit (timeout 120 s by default)."""
    kwargs.setdefault("timeout", 120)
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


# ---- the churn CLI --------------------------------------------------------------------------------
def cli_env(settings: Settings, **env: str) -> dict[str, str]:
    """This process's environment without any CHURN_* variable, plus the data dir of ``settings``."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    out.update(CHURN_DATA_DIR=str(settings.data_dir), CHURN_FRESHNESS_MAX_HOURS="0", **env)
    return out


def run_cli(settings: Settings, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """``churn <args>`` as a real subprocess on the data dir of ``settings`` (extra CHURN_* in ``env``)."""
    return run([str(CHURN), *args], env=cli_env(settings, **env), timeout=timeout, cwd=REPO)


# ---- the Helm chart ------------------------------------------------------------------------------
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
        "demo.enabled=true,networkPolicy.enabled=true,dashboards.enabled=true,minio.enabled=true,"
        "metrics.pushgateway.enabled=true",
    ],
    "spark": [
        "--set",
        "spark.enabled=true,networkPolicy.enabled=true,storage.endpointUrl=https://s3.eu-central-1.example.com,"
        "spark.executor.instances=5,spark.executor.memory=16g",
    ],
    "minimal": [
        "--set",
        "autoscaling.enabled=false,podDisruptionBudget.enabled=false,networkPolicy.enabled=false,"
        "demo.enabled=false,dashboards.enabled=false,storage.bucket=acme-ml,storage.prefix=/churn/eu/,"
        "storage.endpointUrl=https://s3.eu-central-1.example.com,storage.region=eu-central-1",
    ],
}
VALUES_FILES = {"default": None, "staging": "values-staging.yaml", "production": "values-production.yaml"}


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

    def spark_applications(self) -> dict[str, dict[str, Any]]:
        """The SparkApplications the daily run submits (spark.enabled), by step, as the submitter
        fills them in (templates/spark.yaml; its placeholders become a run's values)."""
        maps = [d for d in self.of_kind("ConfigMap") if d["metadata"]["name"].endswith("-spark")]
        out = {}
        for cm in maps:
            for key, text in cm["data"].items():
                if key.endswith(".yaml"):
                    filled = text.replace("__NAME__", "churn-platform-daily-29400000-" + key[:-5])
                    filled = filled.replace("__POD_NAME__", "churn-platform-daily-29400000-abcde")
                    filled = filled.replace("__POD_UID__", "8d3b6a43-6f5e-4b8a-9f0e-2f1d8a5c7e10")
                    out[key[: -len(".yaml")]] = yaml.safe_load(filled)
        return out

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


def split_image(ref: str) -> tuple[str, str, str]:
    """`registry/repo:tag@sha256:…` -> (repository, tag, digest); tag and digest may be empty."""
    ref, _, digest = ref.partition("@")
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:  # no tag; the colon (if any) was a registry port
        return ref, "", digest
    return repo, tag, digest


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers then containers of a pod spec."""
    return [*pod.get("initContainers", []), *pod["containers"]]


SUBMIT_COMMAND = ["sh", "/spark/submit.sh"]
"""The daily step that submits a SparkApplication and waits for it (spark.enabled)."""


def churn_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers that run churn code (every one but a Spark submitter)."""
    return [c for c in containers(pod) if c.get("command") != SUBMIT_COMMAND]


def render_cases(cases: dict[str, list[str]] = CASES) -> dict[str, Rendered]:
    """`helm template` of every case (in parallel); each must render."""
    require_tool("helm")
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        results = dict(zip(cases, pool.map(helm_template, cases.values()), strict=True))
    out: dict[str, Rendered] = {}
    for case, proc in results.items():
        assert proc.returncode == 0, f"helm template [{case}] failed:\n{proc.stderr}"
        out[case] = Rendered(case, proc.stdout)
    return out
