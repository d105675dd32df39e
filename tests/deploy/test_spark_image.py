"""The Spark image (docker/Dockerfile.ml, target ``spark``), built the air-gapped way, run the way
the Spark Operator runs the chart's applications.

The operator starts a driver pod as ``<entrypoint> driver --class … <mainApplicationFile> ARGS``
with the pod's IP in ``SPARK_DRIVER_BIND_ADDRESS``, and executor pods as ``<entrypoint> executor``
configured by environment variables. Here the driver runs the chart's own application file and
arguments in local mode (no cluster) and must write the rows the DuckDB path wrote; the executor
mode must start Spark's Kubernetes executor backend, which then looks for its driver.

The Java the test image gets is Debian's (tests/support/images.jre_image), standing in for Eclipse
Temurin's, which these machines cannot pull; both put it at /opt/java/openjdk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churn.layout import partition_dates, partition_dir
from churn.schema import FEATURE_VIEWS
from churn.settings import Settings
from tests.support.env import REPO
from tests.support.images import BuiltImage, base_image, build, pod_flags, run_container
from tests.support.servers import free_port
from tests.support.sites import copy_site, view_rows
from tests.support.tools import Rendered

pytestmark = pytest.mark.deploy

SIZE_BUDGET_BYTES = 2_400_000_000
"""The ml image's budget plus a JRE and pyspark's jars; README has the figures."""


@pytest.fixture(scope="module")
def spark_image() -> BuiltImage:
    return build("spark", base_image())


@pytest.fixture(scope="module")
def features_app(rendered: dict[str, Rendered]) -> dict[str, Any]:
    return rendered["spark"].spark_applications()["features"]


def _driver_flags(app: dict[str, Any], volumes: Path) -> list[str]:
    """What the operator gives the driver container: the application's user, security context and
    emptyDir mounts (tests.support.images.pod_flags reads them in a pod's shape)."""
    spec, driver = app["spec"], app["spec"]["driver"]
    pod = {"securityContext": driver["podSecurityContext"], "volumes": spec["volumes"]}
    container = {"securityContext": driver["securityContext"], "volumeMounts": driver["volumeMounts"]}
    return pod_flags(pod, container, volumes)


def test_the_image_is_the_ml_image_with_java_and_pyspark(spark_image: BuiltImage) -> None:
    probe = (
        "import importlib.metadata as m, importlib.util as u, json, os; "
        "print(json.dumps({'pyspark': m.version('pyspark'), 'feast': m.version('feast'), "
        "'alibi': u.find_spec('alibi_detect') is not None, 'uid': os.getuid(), "
        "'spark_home': os.environ['SPARK_HOME'], 'java_home': os.environ['JAVA_HOME']}))"
    )
    proc = run_container(spark_image.tag, ["python"], ["-c", probe], [], {}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(proc.stdout.splitlines()[-1])
    assert found["pyspark"] == _locked("pyspark") and found["feast"] == _locked("feast", "main.txt")
    assert not found["alibi"] and found["uid"] == 10001
    java = run_container(spark_image.tag, [f"{found['java_home']}/bin/java"], ["-version"], [], {}, timeout=120)
    assert java.returncode == 0 and 'version "17.' in java.stderr, java.stderr
    # Anything but driver/executor is the ml image's own interface: `churn ARGS`
    helped = run_container(spark_image.tag, None, ["features", "--help"], [], {}, timeout=120)
    assert helped.returncode == 0 and "build" in helped.stdout, helped.stdout + helped.stderr
    assert spark_image.size_bytes < SIZE_BUDGET_BYTES, spark_image.size_bytes


def _locked(name: str, lock: str = "spark.txt") -> str:
    text = (REPO / "requirements" / lock).read_text()
    return text.split(f"\n{name}==", 1)[1].split()[0]


def test_driver_mode_runs_the_applications_cli_and_writes_the_duckdb_rows(
    spark_image: BuiltImage, features_app: dict[str, Any], small_store: Settings, tmp_path: Path
) -> None:
    """The chart's application file, as its driver runs it, rebuilds the newest date of every view
    in local mode; the settings name a master that does not exist, so the build succeeds only if the
    driver keeps the master it was submitted with."""
    site = copy_site(small_store, tmp_path / "site")
    newest = partition_dates(site.features_dir / "engagement")[-1]
    for view in FEATURE_VIEWS:
        shutil.rmtree(partition_dir(site.layout.feature_view_dir(view), newest))
    for path in [site.data_dir, *site.data_dir.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the driver runs as the chart's non-root user
    spec = features_app["spec"]
    flags = [*_driver_flags(features_app, tmp_path / "volumes"), "--volume", f"{site.data_dir}:/data:rw"]
    env = {
        "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",  # the operator's: the driver pod's IP
        "CHURN_DATA_DIR": "/data",
        "CHURN_ENGINE": "spark",
        "CHURN_SPARK_MASTER": "spark://nowhere.invalid:7077",
    }
    args = ["driver", "--master", "local[1]", "--conf", "spark.sql.shuffle.partitions=3",
            "--class", "org.apache.spark.deploy.PythonRunner",
            spec["mainApplicationFile"], "features", "build"]  # fmt: skip
    proc = run_container(spark_image.tag, None, args, flags, env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    assert partition_dates(site.features_dir / "engagement")[-1] == newest
    for view in FEATURE_VIEWS:
        want, got = view_rows(small_store, view, [newest]), view_rows(site, view, [newest])
        assert len(want) > 200
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=view)


def test_executor_mode_starts_the_kubernetes_executor_backend(spark_image: BuiltImage, tmp_path: Path) -> None:
    """With the variables Spark gives an executor pod, the entrypoint starts Spark's Kubernetes
    executor backend, which asks the driver URL for its settings; no driver listens here, so it
    gives up with that address in its error."""
    port = free_port()
    env = {
        "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@127.0.0.1:{port}",
        "SPARK_EXECUTOR_ID": "1",
        "SPARK_EXECUTOR_CORES": "1",
        "SPARK_EXECUTOR_MEMORY": "512m",
        "SPARK_APPLICATION_ID": "spark-churn-test",
        "SPARK_EXECUTOR_POD_IP": "127.0.0.1",
        "SPARK_EXECUTOR_POD_NAME": "churn-features-exec-1",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_JAVA_OPT_0": f"-Dspark.driver.port={port}",
        "EXECUTOR_DRIVER_PROPS_FETCHER_MAX_ATTEMPTS": "1",
    }
    proc = run_container(spark_image.tag, None, ["executor"], [], env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "INFO KubernetesExecutorBackend: Started daemon" in out, out[-3000:]
    assert f"Failed to connect to /127.0.0.1:{port}" in out, out[-3000:]
