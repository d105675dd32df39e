"""Dockerfiles: hadolint at warning level, plus what the images promise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.support.env import REPO, require_tool
from tests.support.tools import CHART, run

pytestmark = pytest.mark.deploy

DOCKER = REPO / "docker"
IMAGES = ("api", "ml", "drift")


def _dockerfile(name: str) -> str:
    return (DOCKER / f"Dockerfile.{name}").read_text()


def _final_stage(text: str) -> str:
    return re.split(r"^FROM ", text, flags=re.M)[-1]


@pytest.mark.parametrize("name", IMAGES)
def test_hadolint(name: str) -> None:
    hadolint = require_tool("hadolint")
    proc = run([hadolint, "--failure-threshold", "warning", str(DOCKER / f"Dockerfile.{name}")])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", IMAGES)
def test_multistage_slim_nonroot(name: str) -> None:
    text = _dockerfile(name)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    froms = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, re.M)
    assert len(froms) >= 2, "multi-stage build expected"
    final = _final_stage(text)
    assert final.startswith("${PYTHON_IMAGE}")
    user = re.findall(r"^USER (\S+)", final, re.M)
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    assert re.match(r"\d+(:\d+)?$", user[-1]), "numeric USER so runAsNonRoot can verify it"
    assert "COPY --from=build /opt/venv /opt/venv" in final
    # no build tools / package caches in the final stage; a package manager only as the fallback
    # for LightGBM's OpenMP runtime on a base image without it
    assert not re.search(r"apk |gcc|build-essential|pip install", final)
    for line in re.findall(r"apt-get install[^&]*", final):
        assert line.split() == ["apt-get", "install", "-y", "--no-install-recommends", "libgomp1"], line
    if "apt-get" in final:
        assert "find_library('gomp')" in final and "rm -rf /var/lib/apt/lists/*" in final
    assert "CHURN_DATA_DIR=/data" in final


@pytest.mark.parametrize("name", IMAGES)
def test_wheels_come_from_one_replaceable_stage(name: str) -> None:
    """Every pip install reads the `wheelhouse` stage, never an index: an air-gapped build replaces that
    stage with `--build-context wheelhouse=DIR` (tests/deploy/test_images.py builds with no network)."""
    text = _dockerfile(name)
    stages = dict((stage, image) for image, stage in re.findall(r"^FROM (\S+) AS (\S+)", text, re.M))
    assert stages.get("wheelhouse") == "scratch"
    build = re.split(r"^FROM ", text, flags=re.M)[3]
    assert re.search(r"PIP_NO_INDEX=1", build) and re.search(r"PIP_FIND_LINKS=/wheels", build)
    installs = re.findall(r"^RUN (.*?)(?<!\\)$", build, re.M | re.S)
    pip = [r for r in installs if "pip install" in r]
    assert pip and all(r.startswith("--mount=type=bind,from=wheelhouse,target=/wheels") for r in pip), pip


@pytest.mark.parametrize("name", ["api", "ml"])
def test_main_images_install_the_hashed_lock(name: str) -> None:
    text = _dockerfile(name)
    assert "pip install --no-cache-dir --require-hashes -r requirements/main.txt" in text
    assert re.search(r"pip install --no-cache-dir --no-deps \.", text)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"CHURN_FEATURE_REPO={values['featureRepoPath']}" in text
    assert f"COPY --chown=root:root feature_repo {values['featureRepoPath']}" in text
    assert re.search(r'^ENTRYPOINT \["churn"\]', text, re.M)


def test_api_image_healthcheck() -> None:
    final = _final_stage(_dockerfile("api"))
    hc = re.search(r"^HEALTHCHECK .*?(?<!\\)$", final, re.M | re.S)
    assert hc, "API image needs a HEALTHCHECK"
    assert "http://127.0.0.1:8000/live" in hc.group(0) and '"python"' in hc.group(0)
    assert "curl" not in hc.group(0) and "wget" not in hc.group(0)
    assert re.search(r"^EXPOSE 8000$", final, re.M)
    assert re.search(r'^CMD \["serve"\]', final, re.M)


def test_drift_image_is_isolated() -> None:
    text = _dockerfile("drift")
    assert "--require-hashes -r /tmp/drift.txt" in text and "COPY requirements/drift.txt" in text
    assert "main.txt" not in text and "pip install --no-deps ." not in text
    copies = re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+) ", text, re.M)
    assert set(copies) == {"requirements/drift.txt", "churn", "jobs/drift", "feature_repo/__init__.py"}
    assert re.search(r'^ENTRYPOINT \["python", "-m", "jobs.drift"\]', text, re.M)
    lock = (REPO / "requirements" / "drift.txt").read_text().lower()
    assert not re.search(r"^feast\b", lock, re.M), "the drift lock must not contain feast"


def test_dockerignore() -> None:
    lines = {
        ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    }
    assert {".git", ".venv", ".venv-drift", "data", "**/__pycache__"} <= lines
    # what the Dockerfiles COPY must not be ignored
    for needed in (
        "churn",
        "jobs",
        "training",
        "service",
        "feature_repo",
        "requirements",
        "pyproject.toml",
        "README.md",
    ):
        assert needed not in lines, needed
    for path in Path(REPO / "docker").glob("Dockerfile.*"):
        for src in re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+) ", path.read_text(), re.M):
            assert src.split("/")[0] not in lines, f"{path.name}: {src} is excluded by .dockerignore"
