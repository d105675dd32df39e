"""Argo CD: the AppProject and Applications point at a chart path and values files that exist,
render, and stay inside the project's whitelist."""

from __future__ import annotations

import pytest
import yaml

from tests.support.env import REPO
from tests.support.tools import helm_template, parse_docs

pytestmark = pytest.mark.deploy

ARGOCD = REPO / "argocd"


def _objects() -> list[dict]:
    docs = []
    for path in sorted(ARGOCD.glob("*.yaml")):
        docs += parse_docs(path.read_text())
    return docs


def _project() -> dict:
    (project,) = [d for d in _objects() if d["kind"] == "AppProject"]
    return project


def _apps() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in _objects() if d["kind"] == "Application"}


def test_structure() -> None:
    for obj in _objects():
        assert obj["apiVersion"] == "argoproj.io/v1alpha1"
        assert obj["kind"] in {"AppProject", "Application"}
        assert obj["metadata"]["name"] and obj["metadata"]["namespace"] == "argocd"
    apps = _apps()
    assert set(apps) == {"churn-platform-staging", "churn-platform-production"}


def test_sync_policies() -> None:
    apps = _apps()
    staging = apps["churn-platform-staging"]["spec"]["syncPolicy"]
    assert staging["automated"] == {"prune": True, "selfHeal": True}
    production = apps["churn-platform-production"]["spec"].get("syncPolicy", {})
    assert "automated" not in production, "production is synced manually"


@pytest.mark.parametrize("app", ["churn-platform-staging", "churn-platform-production"])
def test_application_renders(app: str) -> None:
    project = _project()["spec"]
    spec = _apps()[app]["spec"]
    assert spec["project"] == _project()["metadata"]["name"]
    src = spec["source"]
    assert src["repoURL"] in project["sourceRepos"]
    assert src["repoURL"].startswith("https://github.com/") and src["repoURL"].endswith(".git")
    chart = REPO / src["path"]
    assert (chart / "Chart.yaml").is_file(), f"{src['path']} is not a chart"
    value_files = src["helm"]["valueFiles"]
    env = app.rsplit("-", 1)[1]
    assert value_files[-1] == f"values-{env}.yaml"
    for vf in value_files:
        assert (chart / vf).is_file(), f"{vf} missing in {src['path']}"
    dest = spec["destination"]
    assert {"server": dest["server"], "namespace": dest["namespace"]} in project["destinations"]

    args = [a for vf in value_files for a in ("-f", str(chart / vf))]
    proc = helm_template(args, chart=chart, release=src["helm"]["releaseName"], namespace=dest["namespace"])
    assert proc.returncode == 0, proc.stderr
    allowed = {(w["group"], w["kind"]) for w in project["namespaceResourceWhitelist"]}
    for doc in parse_docs(proc.stdout):
        group = doc["apiVersion"].rsplit("/", 1)[0] if "/" in doc["apiVersion"] else ""
        assert (group, doc["kind"]) in allowed, f"{doc['kind']} ({group}) not whitelisted in the AppProject"
    assert yaml.safe_load((chart / value_files[-1]).read_text())["image"]["tag"]


@pytest.mark.parametrize("app", ["churn-platform-staging", "churn-platform-production"])
def test_one_shot_jobs_are_never_patched_or_replaced(app: str) -> None:
    """The demo seed is a plain Job that must run once: Argo CD must neither patch a live Job's
    (immutable) pod template nor delete and recreate it on a later sync."""
    spec = _apps()[app]["spec"]
    ignored = [d for d in spec.get("ignoreDifferences", []) if d.get("group") == "batch" and d.get("kind") == "Job"]
    assert any("/spec" in d.get("jsonPointers", []) for d in ignored), "Jobs' spec differences are not ignored"
    options = spec["syncPolicy"].get("syncOptions", [])
    assert "RespectIgnoreDifferences=true" in options, "without it a sync still applies the ignored Job spec"
    assert not [o for o in options if o.startswith(("Replace=true", "Force=true"))]
