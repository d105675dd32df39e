"""No volume is shared between pods: the chart must run on any number of nodes.

Every values file is rendered as is and with every optional component that brings its own volume
switched on; a PersistentVolumeClaim may then be mounted by one single-pod workload only (Redis,
MinIO, the Pushgateway each keep their own), and ReadWriteMany is never requested. Shared state
lives in the object store (CHURN_DATA_DIR=s3://...), see docs/cluster.md.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.tools import CHART, helm_template, parse_docs

pytestmark = pytest.mark.deploy

VALUES_FILES = ("values.yaml", "values-staging.yaml", "values-production.yaml")
# Everything optional that has (or may have) a volume of its own.
WITH_VOLUMES = (
    "redis.enabled=true,redis.persistence.enabled=true,minio.enabled=true,"
    "metrics.pushgateway.enabled=true,metrics.pushgateway.persistence.enabled=true"
)
RENDERINGS: dict[str, list[str]] = {
    **{vf: ["-f", str(CHART / vf)] for vf in VALUES_FILES},
    **{f"{vf}+volumes": ["-f", str(CHART / vf), "--set", WITH_VOLUMES] for vf in VALUES_FILES},
}
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    kind = obj["kind"]
    if kind == "Pod":
        return obj["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def _max_pods(obj: dict[str, Any], hpas: dict[tuple[str, str], int]) -> int:
    """How many pods of a workload may run at once (a DaemonSet: one per node, i.e. many)."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    if kind == "DaemonSet":
        return 2
    if kind in {"Deployment", "StatefulSet", "ReplicaSet"}:
        n = max(obj["spec"].get("replicas", 1), hpas.get((kind, name), 0))
        if kind == "Deployment" and obj["spec"].get("strategy", {}).get("type", "RollingUpdate") != "Recreate":
            n += 1  # a rolling update runs the new pod next to the old one
        return n
    if kind == "Job":
        return obj["spec"].get("parallelism", 1)
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"].get("parallelism", 1)
    return 1


def shared_volume_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every PVC mounted by more than one workload (or one workload with several pods), and every
    ReadWriteMany request, in a list of rendered objects."""
    problems: list[str] = []
    hpas = {
        (h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"]): h["spec"]["maxReplicas"]
        for h in docs
        if h.get("kind") == "HorizontalPodAutoscaler"
    }
    mounted_by: dict[str, list[tuple[str, int]]] = defaultdict(list)  # claim -> [(workload, pods)]
    for obj in docs:
        kind = obj.get("kind")
        where = f"{kind}/{obj.get('metadata', {}).get('name')}"
        if kind == "PersistentVolumeClaim" and "ReadWriteMany" in obj["spec"].get("accessModes", []):
            problems.append(f"{where} requests ReadWriteMany")
        if kind == "PersistentVolume" and "ReadWriteMany" in obj["spec"].get("accessModes", []):
            problems.append(f"{where} offers ReadWriteMany")
        if kind not in POD_KINDS:
            continue
        pods = _max_pods(obj, hpas)
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for v in _pod_spec(obj).get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        if kind == "StatefulSet":
            for tmpl in obj["spec"].get("volumeClaimTemplates", []):
                if "ReadWriteMany" in tmpl["spec"].get("accessModes", []):
                    problems.append(f"{where} volumeClaimTemplate {tmpl['metadata']['name']} requests ReadWriteMany")
                # One claim per replica: <template>-<statefulset>-<ordinal>, each mounted by one pod.
                for i in range(obj["spec"].get("replicas", 1)):
                    mounted_by[f"{tmpl['metadata']['name']}-{obj['metadata']['name']}-{i}"].append((where, 1))
        for claim in claims:
            mounted_by[claim].append((where, pods))
    for claim, users in sorted(mounted_by.items()):
        if sum(pods for _, pods in users) > 1:
            who = ", ".join(f"{w} ({p} pods at once)" if p > 1 else w for w, p in users)
            problems.append(f"PersistentVolumeClaim {claim} is mounted by {who}")
    return problems


@pytest.fixture(scope="module")
def renderings() -> dict[str, list[dict[str, Any]]]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = dict(zip(RENDERINGS, pool.map(helm_template, RENDERINGS.values()), strict=True))
    out = {}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"helm template [{name}] failed:\n{proc.stderr}"
        out[name] = parse_docs(proc.stdout)
    return out


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_no_volume_is_shared(renderings: dict[str, list[dict[str, Any]]], name: str) -> None:
    docs = renderings[name]
    assert [d for d in docs if d.get("kind") in POD_KINDS], "nothing rendered"
    problems = shared_volume_problems(docs)
    assert not problems, f"[{name}] shared volumes break on more than one node:\n" + "\n".join(problems)


def test_the_optional_volumes_are_really_rendered(renderings: dict[str, list[dict[str, Any]]]) -> None:
    """The +volumes renderings do contain claims (else the test above proves nothing for them)."""
    for vf in VALUES_FILES:
        claims = [d for d in renderings[f"{vf}+volumes"] if d.get("kind") == "PersistentVolumeClaim"]
        assert claims, f"{vf}+volumes renders no PersistentVolumeClaim"


def _deployment(name: str, claim: str, replicas: int = 1, strategy: str = "Recreate") -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": {"type": strategy},
            "template": {"spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}},
        },
    }


def _job(name: str, claim: str) -> dict[str, Any]:
    return {
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}}},
    }


def test_the_check_catches_the_old_design() -> None:
    """The previous chart - one claim for the API Deployment (HPA 2-6) and the Jobs, RWX in
    production - and smaller variants of it are all reported."""
    pvc = {"kind": "PersistentVolumeClaim", "metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}
    rwx = {"kind": "PersistentVolumeClaim", "metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteMany"]}}
    hpa = {
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "api"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "api"}, "maxReplicas": 6},
    }
    cronjob = {
        "kind": "CronJob",
        "metadata": {"name": "score"},
        "spec": {
            "jobTemplate": {
                "spec": {
                    "template": {"spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}
                }
            }
        },
    }
    sts = {
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"volumes": []}},
            "volumeClaimTemplates": [{"metadata": {"name": "x"}, "spec": {"accessModes": ["ReadWriteMany"]}}],
        },
    }
    assert shared_volume_problems([pvc, _deployment("api", "data"), _job("seed", "data")])
    assert shared_volume_problems([pvc, _deployment("api", "data"), cronjob])
    assert shared_volume_problems([pvc, _deployment("api", "data", replicas=2)])
    assert shared_volume_problems([pvc, _deployment("api", "data"), hpa])
    assert shared_volume_problems([pvc, _deployment("api", "data", strategy="RollingUpdate")])
    assert shared_volume_problems([rwx, _deployment("api", "data")])
    assert shared_volume_problems([sts])
    # One single-pod workload per claim (Redis, MinIO, Pushgateway) is fine.
    assert not shared_volume_problems([pvc, _deployment("redis", "data")])
    assert not shared_volume_problems([_deployment("a", "one"), _deployment("b", "two")])
