"""checkov on the rendered chart and the Dockerfiles: zero failed checks, offline.

The only exceptions are the skips in .checkov.yaml, each with its justification. The rendered
manifests (default, staging and production values) are written to a tmp dir and scanned once per
session together with the Dockerfiles; a second, unfiltered run proves every skip still fires (a
skip that no longer matches anything must be removed). Where a skip is global but only justified for
some objects, the property it would protect is asserted here for the rest.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.env import REPO, require_tool
from tests.support.tools import Rendered, containers, run, split_image

pytestmark = pytest.mark.deploy

CONFIG = REPO / ".checkov.yaml"
SCANNED_CASES = ("default", "staging", "production", "spark")
DOCKERFILES = [REPO / "docker" / f"Dockerfile.{name}" for name in ("api", "ml", "drift")]
FRAMEWORKS = ("kubernetes", "dockerfile")


def _offline_env() -> dict[str, str]:
    """No platform API key (so no Bridgecrew/Prisma calls) and no SCA package scan."""
    env = {k: v for k, v in os.environ.items() if k not in {"BC_API_KEY", "PRISMA_API_URL"}}
    env["CHECKOV_RUN_SCA_PACKAGE_SCAN_V2"] = "false"
    env["BC_SKIP_MAPPING"] = "TRUE"  # as --skip-download: no check-ID mapping download
    return env


def _report(proc: Any, framework: str) -> dict[str, Any]:
    assert proc.returncode in (0, 1), f"checkov ({framework}) crashed:\n{proc.stderr[-4000:]}"
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:  # pragma: no cover - diagnostic only
        raise AssertionError(f"checkov ({framework}) printed no JSON:\n{proc.stdout[:2000]}") from exc
    reports = [r for r in (data if isinstance(data, list) else [data]) if r.get("check_type") == framework]
    assert reports, f"checkov ({framework}) scanned nothing: {data}"
    return reports[0]


@pytest.fixture(scope="session")
def checkov(rendered: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Any]:
    """{(framework, with_config): report}: four checkov runs in parallel, once per session."""
    exe = require_tool("checkov")
    work = tmp_path_factory.mktemp("checkov")
    manifests = work / "manifests"
    manifests.mkdir()
    for case in SCANNED_CASES:
        (manifests / f"{case}.yaml").write_text(rendered[case].text)
    targets = {
        "kubernetes": ["-d", str(manifests)],
        "dockerfile": [arg for f in DOCKERFILES for arg in ("-f", str(f))],
    }
    common = ["--skip-download", "--output", "json", "--compact", "--quiet"]

    def scan(key: tuple[str, bool]) -> Any:
        framework, with_config = key
        # cwd = the tmp dir, so checkov cannot pick up .checkov.yaml on its own for the raw run.
        config = ["--config-file", str(CONFIG)] if with_config else []
        cmd = [exe, *config, "--framework", framework, *targets[framework], *common]
        return run(cmd, cwd=work, env=_offline_env(), timeout=180)

    keys = [(fw, cfg) for fw in FRAMEWORKS for cfg in (True, False)]
    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        procs = dict(zip(keys, pool.map(scan, keys), strict=True))
    return {key: _report(proc, key[0]) for key, proc in procs.items()}


def _failures(report: dict[str, Any]) -> list[str]:
    return [
        f"{f['check_id']} {f['check_name']}: {Path(f['file_path']).name} {f['resource']}"
        for f in report["results"].get("failed_checks", [])
    ]


def _skips() -> dict[str, str]:
    """skip-check IDs from .checkov.yaml -> the comment block above each (its justification)."""
    skips = yaml.safe_load(CONFIG.read_text()).get("skip-check", [])
    comments: dict[str, str] = {}
    block: list[str] = []
    for line in CONFIG.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# ---"):  # section header
            block = []
        elif stripped.startswith("#"):
            block.append(stripped.lstrip("# "))
        elif m := re.fullmatch(r"-\s*(CKV\w+)\s*(?:#\s*(.*))?", stripped):
            comments[m.group(1)] = " ".join([*block, m.group(2) or ""]).strip()
            block = []
        else:
            block = []
    assert set(skips) == set(comments), "parse .checkov.yaml skip-check as a plain list"
    return comments


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_checkov_passes(checkov: dict[tuple[str, bool], Any], framework: str) -> None:
    report = checkov[(framework, True)]
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, report["results"].get("parsing_errors")
    assert summary["resource_count"] > 0
    failures = _failures(report)
    assert not failures, f"{len(failures)} failed checkov checks:\n" + "\n".join(sorted(failures))
    # Every target was really scanned (a file checkov cannot parse is silently dropped).
    raw = checkov[(framework, False)]
    scanned = {Path(c["file_path"]).name for c in raw["results"].get("failed_checks", [])} | {
        Path(c["file_path"]).name for c in report["results"].get("passed_checks", [])
    }
    expected = (
        {f"{case}.yaml" for case in SCANNED_CASES} if framework == "kubernetes" else {f.name for f in DOCKERFILES}
    )
    assert expected <= scanned, f"not scanned: {expected - scanned}"


def test_checkov_skips_are_justified_and_still_needed(checkov: dict[tuple[str, bool], Any]) -> None:
    skips = _skips()
    assert skips, ".checkov.yaml has no skip-check list"
    fired = {f["check_id"] for fw in FRAMEWORKS for f in checkov[(fw, False)]["results"].get("failed_checks", [])}
    for check_id, why in skips.items():
        assert why.startswith(check_id) and len(why) > len(check_id) + 40, (
            f"{check_id}: skip without a justification comment (start it with the check ID)"
        )
        assert check_id in fired, f"{check_id} is skipped but no longer fails: remove it from .checkov.yaml"


# ---- the properties behind the global skips ---------------------------------------------------


def test_skip_k8s_40_only_redis_runs_below_uid_10000(rendered: dict[str, Rendered]) -> None:
    for case in SCANNED_CASES:
        for obj, pod in rendered[case].churn_workloads():
            for c in containers(pod):
                uid = c.get("securityContext", {}).get("runAsUser", pod["securityContext"].get("runAsUser"))
                assert uid is not None and uid >= 10000, f"[{case}] {obj['metadata']['name']}: uid {uid}"


def test_skip_k8s_43_15_images_are_tagged(rendered: dict[str, Rendered]) -> None:
    # Immutable release tags: 1.2.3(-suffix), v1.2.3, and MinIO's RELEASE.<UTC timestamp>.
    version_tag = re.compile(r"v?\d+(\.\d+)+(-[a-z0-9.]+)?|RELEASE\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z")
    for case in SCANNED_CASES:
        for obj, pod in rendered[case].workloads():
            for c in containers(pod):
                where = f"[{case}] {obj['metadata']['name']}: {c['image']}"
                repo, tag, digest = split_image(c["image"])
                if digest:  # a digest names one image for good: nothing to re-pull
                    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), where
                    continue
                assert repo and tag not in {"", "latest"}, where
                # A mutable (non-version) tag such as `main` must be pulled every time.
                if not version_tag.fullmatch(tag):
                    assert c.get("imagePullPolicy") == "Always", where


def test_skip_k8s_21_nothing_is_deployed_to_default() -> None:
    files = sorted((REPO / "argocd").glob("application*.yaml"))
    apps = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    assert apps
    for app in apps:
        ns = app["spec"]["destination"].get("namespace")
        assert ns and ns != "default", f"{app['metadata']['name']}: destination namespace {ns!r}"


def _expand(image: str, args: dict[str, str]) -> str:
    """`${ARG}` / `$ARG` in a FROM line -> the ARG's default."""

    def sub(m: re.Match[str]) -> str:
        return args.get(m.group(1), m.group(0))

    return re.sub(r"\$\{?(\w+)\}?", sub, image)


def test_skip_docker_7_base_image_is_tagged() -> None:
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
        stages: set[str] = set()
        for image, stage in re.findall(r"^FROM (?:--platform=\S+ )?(\S+)(?: AS (\S+))?", text, re.M | re.I):
            resolved = _expand(image, args)
            if resolved not in stages and resolved != "scratch":  # scratch: the empty image, no tag to pin
                name, _, tag = resolved.rpartition(":")
                assert name and tag and tag != "latest" and "$" not in resolved, f"{dockerfile.name}: FROM {image}"
            if stage:
                stages.add(stage)
