"""Dockerfiles: hadolint at warning level, plus what the images promise."""

from __future__ import annotations

import fnmatch
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


def _stages(text: str) -> dict[str, str]:
    """Stage name (or index) -> its text from ``FROM`` on, in order."""
    out = {}
    for i, chunk in enumerate(re.split(r"^FROM ", text, flags=re.M)[1:]):
        m = re.match(r"\S+(?: AS (\S+))?", chunk)
        out[m.group(1) or str(i)] = chunk
    return out


def _final_stage(text: str, target: str | None = None) -> str:
    """The stage an image is (the last one, or ``target``); a stage that is only ``FROM <stage>``
    (a Dockerfile's default target naming another) is that stage."""
    stages = _stages(text)
    stage = stages[target] if target else list(stages.values())[-1]
    while (m := re.fullmatch(r"(\S+) AS \S+\s*", stage)) and m.group(1) in stages:
        stage = stages[m.group(1)]
    return stage


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
    installing = {n: s for n, s in _stages(text).items() if "pip install" in s}
    assert "build" in installing and "download" not in installing  # the download stage only downloads
    for name, stage in installing.items():
        assert re.search(r"PIP_NO_INDEX=1", stage) and re.search(r"PIP_FIND_LINKS=/wheels", stage), name
        installs = re.findall(r"^RUN (.*?)(?<!\\)$", stage, re.M | re.S)
        pip = [r for r in installs if "pip install" in r]
        assert all(r.startswith("--mount=type=bind,from=wheelhouse,target=/wheels") for r in pip), (name, pip)


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
            parts = src.split("/")
            for prefix in ("/".join(parts[: i + 1]) for i in range(len(parts))):
                hit = [p for p in lines if fnmatch.fnmatch(prefix, p)]
                assert not hit, f"{path.name}: {src} is excluded by .dockerignore ({hit})"


def test_spark_target_is_the_ml_image_plus_spark() -> None:
    """The chart's Spark image (ci.yml builds target `spark`): the ml stage as it is, plus a JRE from
    its own image, pyspark built in a stage of its own, and the entrypoint; no package manager, no
    pip and no user switch in the image itself."""
    text = _dockerfile("ml")
    stages = _stages(text)
    assert _final_stage(text) == stages["ml"]  # the default target stays the ml image
    spark = _final_stage(text, "spark")
    assert spark.startswith("ml AS spark")
    assert "COPY --from=jre /opt/java/openjdk /opt/java/openjdk" in spark
    assert "COPY --from=spark-build /opt/site/ /opt/venv/lib/python3.11/site-packages/" in spark
    assert not re.search(r"apt-get|pip |^USER ", spark, re.M)
    assert re.search(r'^ENTRYPOINT \["/opt/spark-entrypoint.sh"\]', spark, re.M)
    assert "--require-hashes" in stages["spark-build"] and "requirements/spark.txt" in stages["spark-build"]
    assert re.search(r"^ARG JRE_IMAGE=eclipse-temurin:17-jre$", text, re.M)


def _pins(lock: str) -> dict[str, str]:
    text = (REPO / "requirements" / lock).read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M))


def test_the_spark_lock_pins_what_the_tests_run() -> None:
    """requirements/spark.txt is compiled against dev.txt (its header), so the image carries the
    pyspark the Spark tests run and pip-audit checks with dev.txt; a recompiled dev.txt must bring
    spark.txt along."""
    spark, dev = _pins("spark.txt"), _pins("dev.txt")
    assert "pyspark" in spark
    assert {k: dev.get(k) for k in spark} == spark
    assert re.search(r"^--no-binary pyspark$", (REPO / "requirements" / "spark.txt").read_text(), re.M)
