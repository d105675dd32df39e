"""The three images, built the air-gapped way and run as the chart runs them.

Built with podman from a Debian-made base and a wheelhouse, with no network during the build. The
pods the chart renders (the demo seed Job, the daily CronJob, the API Deployment) then run in those
images with their own command, arguments, environment and security context, against a private
Redis and the S3 API emulator: the seed trains a model, the daily run scores yesterday and the drift
image reports on it, and the API image, read-only as UID 10001, serves a prediction.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from churn.layout import DRIFT_REPORT_JSON, PREDICTIONS_PARQUET, partition_dir
from churn.storage import read_table
from tests.support.images import (
    CACHE,
    IMAGES,
    BuiltImage,
    base_image,
    build,
    logs,
    pod_flags,
    prune_stale_layers,
    run_container,
    running_container,
)
from tests.support.objectstore import AWS_ENV, S3Server, s3_server, s3_settings
from tests.support.servers import HOST, RedisProcess, free_port
from tests.support.tools import CHART, Rendered, containers, helm_template, split_image

pytestmark = pytest.mark.deploy

SIZE_BUDGET_BYTES = {"api": 1_600_000_000, "ml": 1_600_000_000, "drift": 1_700_000_000}
"""A guard against an image silently doubling (a stray torch, a second numpy); README has the figures."""

DEMO = "demo.enabled=true,demo.users=400,demo.days=120,demo.seed=7"


@pytest.fixture(scope="module")
def images() -> dict[str, BuiltImage]:
    base = base_image()
    built = {name: build(name, base) for name in IMAGES}
    prune_stale_layers()
    report = CACHE / "images" / "sizes.json"
    report.write_text(json.dumps({n: b.size_bytes for n, b in built.items()}, indent=2))
    return built


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def _python(image: BuiltImage, code: str) -> str:
    proc = run_container(image.tag, ["python"], ["-c", code], [], {}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_images_hold_their_stack_and_nothing_else(images: dict[str, BuiltImage]) -> None:
    probe = (
        "import importlib.util as u, json, os; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "['feast', 'lightgbm', 'litestar', 'alibi_detect', 'churn', 'jobs.drift', 'service']} | {'uid': os.getuid()}))"
    )
    found = {name: json.loads(_python(img, probe).splitlines()[-1]) for name, img in images.items()}
    for name in ("api", "ml"):
        assert found[name]["feast"] and found[name]["lightgbm"] and found[name]["litestar"], found[name]
        assert not found[name]["alibi_detect"], f"{name} image holds alibi-detect"
    assert found["drift"]["alibi_detect"] and found["drift"]["jobs.drift"]
    assert not found["drift"]["feast"] and not found["drift"]["lightgbm"] and not found["drift"]["service"]
    assert {f["uid"] for f in found.values()} == {10001}, "every image runs as UID 10001 by default"
    # LightGBM loads its OpenMP runtime only when trained: prove the final stage has it
    _python(
        images["ml"],
        "import lightgbm as g, numpy as n; g.train({'verbose': -1}, g.Dataset(n.eye(20), n.arange(20) % 2), 2)",
    )


def test_image_sizes_stay_in_budget(images: dict[str, BuiltImage]) -> None:
    over = {n: b.size_bytes for n, b in images.items() if b.size_bytes > SIZE_BUDGET_BYTES[n]}
    assert not over, f"images over budget (bytes): {over}"


def _chart() -> Rendered:
    proc = helm_template(["-f", str(CHART / "values-staging.yaml"), "--set", DEMO])
    assert proc.returncode == 0, proc.stderr
    return Rendered("images", proc.stdout)


def _image_of(ref: str) -> str:
    """`<prefix>/api@sha256:…` or `<prefix>/api:tag` -> `api`."""
    return split_image(ref)[0].rsplit("/", 1)[-1]


def _pods(chart: Rendered, kind: str, needle: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    for obj, pod in chart.churn_workloads():
        if obj["kind"] == kind and needle in obj["metadata"]["name"]:
            return pod, [c for c in containers(pod) if _image_of(c["image"]) in IMAGES]
    raise AssertionError(f"no {kind} *{needle}* in the chart")


def _env(chart: Rendered, s3: S3Server, bucket: str, redis_url: str) -> dict[str, str]:
    """The chart's ConfigMap, with the addresses of this test's servers in place of the cluster's."""
    config = next(c for c in chart.of_kind("ConfigMap") if "CHURN_DATA_DIR" in c.get("data", {}))["data"]
    return {
        **config,
        **AWS_ENV,
        "CHURN_DATA_DIR": f"s3://{bucket}/staging",
        "CHURN_S3_ENDPOINT_URL": s3.endpoint,
        "CHURN_REDIS_URL": redis_url,
        "CHURN_PUSHGATEWAY_URL": "",
        "CHURN_FRESHNESS_MAX_HOURS": "0",
    }


def _run_pod(
    pod: dict[str, Any], ctrs: list[dict[str, Any]], images: dict[str, BuiltImage], env: dict[str, str], volumes: Path
) -> None:
    """Init containers then the main one, in order, each to success, sharing the pod's emptyDirs."""
    for c in ctrs:
        image = images[_image_of(c["image"])]
        proc = run_container(image.tag, c.get("command"), c.get("args", []), pod_flags(pod, c, volumes), env)
        assert proc.returncode == 0, (
            f"{c['name']} ({image.name}) exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )


def _http(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any] | str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:  # not listening (yet)
        return 0, str(err)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def test_chart_pods_seed_run_the_day_and_serve(images: dict[str, BuiltImage], s3: S3Server, tmp_path: Path) -> None:
    chart = _chart()
    bucket = s3.bucket()
    with RedisProcess() as redis:
        env = _env(chart, s3, bucket, f"{redis.url}/0")
        _run_pod(*_pods(chart, "Job", "seed"), images, env, tmp_path / "seed-pod")
        _run_pod(*_pods(chart, "CronJob", "daily"), images, env, tmp_path / "daily-pod")

        site = s3_settings(s3, bucket, tmp_path / "scratch", data_dir=env["CHURN_DATA_DIR"])
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        scored = read_table(partition_dir(site.predictions_dir, yesterday) / PREDICTIONS_PARQUET)
        assert scored.num_rows > 0
        report = json.loads((partition_dir(site.drift_dir, yesterday) / DRIFT_REPORT_JSON).read_text())
        assert report, "the drift image wrote an empty report"

        pod, (api,) = _pods(chart, "Deployment", "-api")
        port = free_port()  # the host network: the chart's port may be taken
        args = [str(port) if a == env["CHURN_PORT"] else a for a in api.get("args", [])]
        user = str(scored.column("user_id")[0].as_py())
        flags = pod_flags(pod, api, tmp_path / "api-pod")
        with running_container(
            images["api"].tag, api.get("command"), args, flags, {**env, "CHURN_PORT": str(port)}
        ) as name:
            base = f"http://{HOST}:{port}"
            deadline = time.monotonic() + 120
            while _http(f"{base}/ready")[0] != 200:
                assert time.monotonic() < deadline, f"API never ready:\n{logs(name)}"
                time.sleep(1)
            status, body = _http(f"{base}/predict", {"user_id": user})
            assert status == 200, body
            assert isinstance(body, dict) and 0.0 <= body["churn_probability"] <= 1.0 and body["user_id"] == user
            status, body = _http(f"{base}/predict", {"user_id": "no-such-user"})
            assert status == 404, body
            if env.get("CHURN_CONSOLE") == "on":  # staging: the operator console over the bucket
                status, page = _http(f"{base}/console")
                assert status == 200 and 'data-testid="at-risk-row"' in str(page), page
                status, page = _http(f"{base}/console/users/{user}")
                assert status == 200 and 'data-testid="live-probability"' in str(page), page
