"""The Spark image (docker/Dockerfile.ml, target ``spark``), built the air-gapped way, run the way
the Spark Operator runs the chart's applications.

The operator starts a driver pod as ``<entrypoint> driver --class … <mainApplicationFile> ARGS``
with the pod's IP in ``SPARK_DRIVER_BIND_ADDRESS``, and executor pods as ``<entrypoint> executor``
configured by environment variables. Here a driver and an executor of the image, in containers of
their own, run the chart's application file together (a Spark master of the image hands the driver
no executor of its own) and must write the rows the DuckDB path wrote.

The Java the test image gets is Debian's (tests/support/images.jre_image), standing in for Eclipse
Temurin's, which these machines cannot pull; both put it at /opt/java/openjdk.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churn.layout import partition_dates, partition_dir
from churn.schema import FEATURE_VIEWS
from churn.settings import Settings
from tests.support.env import REPO
from tests.support.images import (
    BuiltImage,
    base_image,
    build,
    logs,
    pod_flags,
    podman,
    run_container,
    running_container,
)
from tests.support.servers import free_port, port_open
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


def _locked(name: str, lock: str = "spark.txt") -> str:
    """The version ``lock`` pins for ``name``."""
    text = (REPO / "requirements" / lock).read_text()
    return text.split(f"\n{name}==", 1)[1].split()[0]


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


def _writable_site(small_store: Settings, root: Path) -> tuple[Settings, dt.date]:
    """A copy of the small site without its newest date in any view, writable by the chart's user."""
    site = copy_site(small_store, root)
    newest = partition_dates(site.features_dir / "engagement")[-1]
    for view in FEATURE_VIEWS:
        shutil.rmtree(partition_dir(site.layout.feature_view_dir(view), newest))
    for path in [site.data_dir, *site.data_dir.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    return site, newest


def _wait_for_port(port: int, container: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not port_open(port):
        assert time.monotonic() < deadline, f"nothing listens on {port}:\n{logs(container)}"
        time.sleep(0.5)


def test_driver_and_executor_roles_run_the_chart_application_together(
    spark_image: BuiltImage, features_app: dict[str, Any], small_store: Settings, tmp_path: Path
) -> None:
    """Three containers of the image on one network, as on a cluster: a Spark master with no
    workers (so no executor can come from anywhere else), the driver role running the chart's
    application file as the operator's driver pod does (its user, security context, mounts), and the executor role with
    the variables Spark on Kubernetes gives an executor pod, which registers with that driver and
    runs its tasks. The build completes only through that executor, and writes DuckDB's rows. The
    settings name a master that does not exist: the driver keeps the one it was submitted with."""
    site, newest = _writable_site(small_store, tmp_path / "site")
    data = ["--volume", f"{site.data_dir}:/data:rw"]  # the bucket, as every pod sees it
    master_port, driver_port = free_port(), free_port()
    spark_class = "/opt/venv/lib/python3.11/site-packages/pyspark/bin/spark-class"
    master_args = ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                   "--port", str(master_port), "--webui-port", str(free_port())]  # fmt: skip
    driver_env = {
        "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",  # the operator's: the driver pod's IP
        "CHURN_DATA_DIR": "/data",
        "CHURN_ENGINE": "spark",
        "CHURN_SPARK_MASTER": "spark://nowhere.invalid:7077",
    }
    driver_args = ["driver", "--master", f"spark://127.0.0.1:{master_port}",
                   "--conf", "spark.driver.host=127.0.0.1", "--conf", f"spark.driver.port={driver_port}",
                   "--conf", "spark.sql.shuffle.partitions=3",
                   "--class", "org.apache.spark.deploy.PythonRunner",
                   features_app["spec"]["mainApplicationFile"],
                   "features", "build"]  # fmt: skip
    executor_env = {
        "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@127.0.0.1:{driver_port}",
        "SPARK_EXECUTOR_ID": "1",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_EXECUTOR_MEMORY": "1g",
        "SPARK_APPLICATION_ID": "spark-churn-features",
        "SPARK_EXECUTOR_POD_IP": "127.0.0.1",
        "SPARK_EXECUTOR_POD_NAME": "churn-features-exec-1",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_JAVA_OPT_0": f"-Dspark.driver.port={driver_port}",
    }
    driver_flags = [*_driver_flags(features_app, tmp_path / "driver"), *data]
    with running_container(spark_image.tag, [spark_class], master_args, [], {}) as master:
        _wait_for_port(master_port, master)
        with running_container(spark_image.tag, None, driver_args, driver_flags, driver_env) as driver:
            _wait_for_port(driver_port, driver)
            with running_container(spark_image.tag, None, ["executor"], data, executor_env) as executor:
                code = podman("wait", driver, timeout=900).stdout.strip()
                driver_log = logs(driver)
                full = podman("logs", executor, check=False)
                executor_log = full.stdout + full.stderr
    assert code == "0", driver_log
    assert "Successfully registered with driver" in executor_log, executor_log
    assert re.search(r"Finished task .* in stage", executor_log) or "Running task" in executor_log, executor_log
    for view in FEATURE_VIEWS:
        want, got = view_rows(small_store, view, [newest]), view_rows(site, view, [newest])
        assert len(want) > 200
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=view)
