"""Argo CD: the AppProject and Applications point at a chart path and values files that exist,
render, and stay inside the project's whitelist."""

from __future__ import annotations

import re
from pathlib import Path

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


def _sources(spec: dict) -> list[dict]:
    return spec["sources"] if "sources" in spec else [spec["source"]]


def _chart_source(spec: dict) -> tuple[dict, list[Path]]:
    """The source that renders the chart, and its values files as paths in this checkout
    (``$<ref>/...`` names a file of the source with that ``ref``, here the same repository)."""
    (chart_src,) = [s for s in _sources(spec) if "path" in s]
    refs = {s["ref"]: s for s in _sources(spec) if "ref" in s}
    files = []
    for vf in chart_src["helm"]["valueFiles"]:
        if vf.startswith("$"):
            ref, rel = vf[1:].split("/", 1)
            assert refs[ref]["repoURL"] == chart_src["repoURL"], f"{vf}: another repository"
            files.append(REPO / rel)
        else:
            files.append(REPO / chart_src["path"] / vf)
    return chart_src, files


@pytest.mark.parametrize("app", ["churn-platform-staging", "churn-platform-production"])
def test_application_renders(app: str) -> None:
    project = _project()["spec"]
    spec = _apps()[app]["spec"]
    assert spec["project"] == _project()["metadata"]["name"]
    for src in _sources(spec):
        assert src["repoURL"] in project["sourceRepos"]
        assert src["repoURL"].startswith("https://github.com/") and src["repoURL"].endswith(".git")
    src, value_files = _chart_source(spec)
    chart = REPO / src["path"]
    assert (chart / "Chart.yaml").is_file(), f"{src['path']} is not a chart"
    env = app.rsplit("-", 1)[1]
    assert value_files[-1] == chart / f"values-{env}.yaml"
    for vf in value_files:
        assert vf.is_file(), f"{vf} missing"
    dest = spec["destination"]
    assert {"server": dest["server"], "namespace": dest["namespace"]} in project["destinations"]

    args = [a for vf in value_files for a in ("-f", str(vf))]
    proc = helm_template(args, chart=chart, release=src["helm"]["releaseName"], namespace=dest["namespace"])
    assert proc.returncode == 0, proc.stderr
    allowed = {(w["group"], w["kind"]) for w in project["namespaceResourceWhitelist"]}
    for doc in parse_docs(proc.stdout):
        group = doc["apiVersion"].rsplit("/", 1)[0] if "/" in doc["apiVersion"] else ""
        assert (group, doc["kind"]) in allowed, f"{doc['kind']} ({group}) not whitelisted in the AppProject"
    assert yaml.safe_load(value_files[-1].read_text())["image"]["tag"]


def test_production_renders_the_released_chart() -> None:
    """Production renders the chart at a final release tag, never at a branch: main may hold chart
    changes no release has shipped. The tag is the version image.tag names (the release pull request
    moves both), and only the environment file is read from main, where that pull request lands."""
    spec = _apps()["churn-platform-production"]["spec"]
    chart_src, value_files = _chart_source(spec)
    revision = chart_src["targetRevision"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", revision), f"{revision} is not a release tag"
    values = yaml.safe_load(value_files[-1].read_text())
    assert revision == f"v{values['image']['tag']}", "the chart tag and the image version move together"
    from_main = [s for s in _sources(spec) if "ref" in s]
    assert [s["targetRevision"] for s in from_main] == ["main"]
    at_tag = [vf for vf in chart_src["helm"]["valueFiles"] if not vf.startswith("$")]
    assert at_tag == ["values.yaml"], "only the chart's defaults come from the tag"


def test_staging_follows_main_through_ci() -> None:
    """Staging syncs automatically the branch CI's deploy-staging job writes, which is main's
    tested commit plus its image digests (tests/deploy/test_workflows.py checks the writing)."""
    spec = _apps()["churn-platform-staging"]["spec"]
    (src,) = _sources(spec)
    assert src["targetRevision"] not in {"HEAD", "main", "master"}
    ci = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    deploy = ci["jobs"]["deploy-staging"]
    script = "\n".join(str(st.get("run", "")) for st in deploy["steps"])
    assert f"HEAD:refs/heads/{src['targetRevision']}" in script
    assert "refs/heads/main" in deploy["if"]
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


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
