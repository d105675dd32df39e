"""The Helm chart: lint, render, schema-validate, and check what the rendered objects promise."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from churn.settings import Settings
from tests.support.contracts import contract_commands, contract_drift_options, contract_metrics, contract_routes
from tests.support.env import REPO, require_tool
from tests.support.images import TARGETS
from tests.support.tools import (
    CASES,
    CHART,
    CHURN,
    SUBMIT_COMMAND,
    VALUES_FILES,
    Rendered,
    churn_containers,
    containers,
    helm_template,
    run,
    split_image,
    values_for,
)

pytestmark = pytest.mark.deploy

# Kubernetes versions the manifests are validated against (kubernetes-validate schemas).
KUBE_VERSIONS = ("1.30.0", "1.34.0")
S3_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
WEBHOOK_KEYS = {"CHURN_INTERVENTION_WEBHOOK_URL", "CHURN_INTERVENTION_WEBHOOK_SECRET"}
SECRET_KEYS = {
    "CHURN_REDIS_URL",
    "CHURN_ADMIN_TOKEN",
    "CHURN_CONSOLE_TOKEN",
    "CHURN_FEAST_REGISTRY_URL",
    *S3_KEYS,
    *WEBHOOK_KEYS,
}
# CHURN_DATA_DIR of the --set cases (the values-file cases derive it from their values).
SET_CASE_DATA_DIRS = {"all-features": "s3://churn-platform", "minimal": "s3://acme-ml/churn/eu"}


# ---- lint & schema validation ------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_helm_lint_strict(case: str) -> None:
    helm = require_tool("helm")
    proc = run([helm, "lint", "--strict", str(CHART), *CASES[case]])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubernetes_validate_strict(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    """Every native object of every rendering validates strictly against the Kubernetes schemas."""
    kv = require_tool("kubernetes-validate")
    jobs = []
    for case, r in rendered.items():
        path = tmp_path / f"{case}.yaml"
        path.write_text(yaml.safe_dump_all(r.native(), sort_keys=False))
        jobs += [(case, version, path) for version in KUBE_VERSIONS]

    def validate(job: tuple[str, str, Path]) -> tuple[str, str, int, str]:
        case, version, path = job
        proc = run([kv, "--strict", "--quiet", "-k", version, str(path)])
        return case, version, proc.returncode, proc.stdout + proc.stderr

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(validate, jobs))
    failures = [f"[{c} @ {v}]\n{out}" for c, v, rc, out in results if rc != 0]
    assert not failures, "\n".join(failures)


def test_crd_objects_are_structurally_valid(rendered: dict[str, Rendered]) -> None:
    """kubernetes-validate has no schema for ServiceMonitor/PrometheusRule: check them here."""
    r = rendered["all-features"]
    monitors = {sm["metadata"]["labels"]["app.kubernetes.io/component"]: sm for sm in r.of_kind("ServiceMonitor")}
    assert set(monitors) == {"api", "pushgateway"}
    for component, sm in monitors.items():
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        svc = r.one("Service", sm["metadata"]["name"])
        svc_labels = svc["metadata"]["labels"]
        for k, v in sm["spec"]["selector"]["matchLabels"].items():
            assert svc_labels.get(k) == v, f"ServiceMonitor selector {k}={v} does not match the {component} Service"
        port_names = {p["name"] for p in svc["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            assert ep["port"] in port_names
            assert ep["path"] == "/metrics" and "/metrics" in contract_routes()
            assert re.fullmatch(r"\d+[smh]", ep["interval"])
            # Pushed series keep their job="churn_daily" label (the alerts select on it).
            assert ep.get("honorLabels", False) is (component == "pushgateway")

    rule = r.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    plain = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == {"groups": plain["groups"]}, "PrometheusRule must embed files/alerts.yaml verbatim"
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for rl in group["rules"]:
            assert set(rl) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
            assert rl["alert"] and rl["expr"] and rl["labels"]["severity"] in {"warning", "critical"}


def test_values_schema_rejects_secrets_and_bad_values() -> None:
    for bad in (
        ["--set", "config.CHURN_ADMIN_TOKEN=oops"],
        ["--set", "config.CHURN_REDIS_URL=redis://x:6379/0"],
        ["--set", "config.CHURN_FEAST_REGISTRY_URL=postgresql://x"],
        ["--set", "config.CHURN_ONLINE_STORE=memcached"],
        ["--set", "existingSecret="],
        ["--set", "persistence.size=10Gi"],  # the shared volume is gone for good
        ["--set", "storage.bucket=Not_A_Bucket"],
        ["--set", "storage.bucket="],
        ["--set", "storage.endpointUrl=minio:9000"],
        ["--set", "config.CHURN_DATA_DIR=/data"],
        ["--set", "config.CHURN_LOCAL_DIR=/data"],
        ["--set", "scratch.mountPath=/tmp"],
        ["--set", "daily.schedule=daily"],
        ["--set", "cronJobs.score.enabled=true"],  # one chained daily run, no per-step CronJobs
        ["--set", "unknownTopLevel=1"],
    ):
        proc = helm_template(bad)
        assert proc.returncode != 0, f"values.schema.json accepted {bad}"
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["type"] == "object" and schema["properties"]


# ---- what the rendered objects promise ---------------------------------------------------------
def _config(r: Rendered) -> dict[str, str]:
    return next(d for d in r.of_kind("ConfigMap") if d["metadata"]["name"].endswith("-config"))["data"]


@pytest.mark.parametrize("case", list(CASES))
def test_api_deployment_probes_service_hpa(rendered: dict[str, Rendered], case: str) -> None:
    r = rendered[case]
    dep = next(
        d for d in r.of_kind("Deployment") if d["metadata"]["labels"].get("app.kubernetes.io/component") == "api"
    )
    pod = dep["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    cfg = _config(r)
    assert ports["http"] == int(cfg["CHURN_PORT"]) == 8000
    assert api["command"] == ["churn"] and api["args"][0] == "serve"
    assert split_image(api["image"])[0].endswith("/api")

    routes = contract_routes()
    assert {"/live", "/ready"} <= routes
    assert api["livenessProbe"]["httpGet"] == {"path": "/live", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert api["startupProbe"]["httpGet"]["path"] in routes

    strategy = dep["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0

    svc = r.one("Service", dep["metadata"]["name"])
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert all(p["targetPort"] == "http" for p in svc["spec"]["ports"])

    hpas = r.of_kind("HorizontalPodAutoscaler")
    if case == "minimal":
        assert not hpas and dep["spec"]["replicas"] >= 1
    else:
        (hpa,) = hpas
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": dep["metadata"]["name"],
        }
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert "replicas" not in dep["spec"], "with an HPA the Deployment must not pin replicas"
        assert api["resources"]["requests"]["cpu"], "CPU utilization target needs a CPU request"

    pdbs = r.of_kind("PodDisruptionBudget")
    for pdb in pdbs:
        assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    if case == "production":
        assert pdbs


@pytest.mark.parametrize("case", list(CASES))
def test_security_contexts(rendered: dict[str, Rendered], case: str) -> None:
    r = rendered[case]
    for sa in r.of_kind("ServiceAccount"):
        # Only a Spark driver's account hands pods a token (the driver creates its executors); the
        # daily pod's Spark submitter mounts a projected one in its own container (test_spark_chart).
        driver = sa["metadata"]["name"].endswith("-spark-driver")
        assert sa["automountServiceAccountToken"] is driver, sa["metadata"]["name"]
    for obj, pod in r.workloads():
        where = f"[{case}] {obj['kind']}/{obj['metadata']['name']}"
        assert pod.get("automountServiceAccountToken") is False, where
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc.get("runAsUser", 1) != 0, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in containers(pod):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"] and c["resources"]["limits"], where
        if obj["metadata"]["labels"].get("app.kubernetes.io/name") != "redis":
            for c in containers(pod):
                tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert tmp and tmp[0]["name"] in tmp_volumes, f"{where}: /tmp must be an emptyDir"


def _churn_workloads(r: Rendered) -> list[tuple[dict, dict]]:
    """(object, pod spec) of the churn workloads: the API and the batch jobs (not Redis/MinIO/...)."""
    return [
        (obj, pod)
        for obj, pod in r.workloads()
        if obj["metadata"]["labels"].get("app.kubernetes.io/component") in {"api", "job"}
    ]


def _data_dir(case: str) -> str:
    if case in SET_CASE_DATA_DIRS:
        return SET_CASE_DATA_DIRS[case]
    storage = values_for(case)["storage"]
    prefix = storage["prefix"].strip("/")
    return f"s3://{storage['bucket']}" + (f"/{prefix}" if prefix else "")


def _env(r: Rendered, container: dict) -> dict[str, object]:
    """A container's environment: ConfigMap envFrom first, then env (a value or its valueFrom)."""
    out: dict[str, object] = {}
    for source in container.get("envFrom", []):
        out.update(r.one("ConfigMap", source["configMapRef"]["name"])["data"])
    for e in container.get("env", []):
        out[e["name"]] = e.get("value", e.get("valueFrom"))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_churn_workloads_use_object_storage_and_local_scratch(rendered: dict[str, Rendered], case: str) -> None:
    """CHURN_DATA_DIR is the configured s3:// URL in every churn container, CHURN_LOCAL_DIR a per-pod
    emptyDir, and no churn pod mounts a PersistentVolumeClaim (or any other shared volume)."""
    r = rendered[case]
    data_dir = _data_dir(case)
    assert re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]+[a-z0-9](/[^/\s]+)*", data_dir), data_dir
    cm_name = next(d for d in r.of_kind("ConfigMap") if d["metadata"]["name"].endswith("-config"))["metadata"]["name"]
    seen = 0
    for obj, pod in _churn_workloads(r):
        vols = {v["name"]: v for v in pod["volumes"]}
        for v in vols.values():
            assert set(v) - {"name"} <= {"emptyDir", "configMap", "projected"}, (
                f"[{case}] {obj['metadata']['name']}: volume {v['name']} is not pod-local: {v}"
            )
        for c in churn_containers(pod):
            where = f"[{case}] {obj['metadata']['name']}/{c['name']}"
            assert {"configMapRef": {"name": cm_name}} in c["envFrom"], f"{where}: no CHURN_* ConfigMap"
            env = _env(r, c)
            assert env["CHURN_DATA_DIR"] == data_dir, where
            local = env["CHURN_LOCAL_DIR"]
            assert isinstance(local, str) and local.startswith("/") and local != "/tmp", where
            mounts = [m for m in c["volumeMounts"] if m["mountPath"] == local]
            assert len(mounts) == 1, f"{where}: nothing mounted at CHURN_LOCAL_DIR={local}"
            assert "emptyDir" in vols[mounts[0]["name"]], f"{where}: CHURN_LOCAL_DIR must be an emptyDir"
            assert not data_dir.startswith(local) and not [m for m in c["volumeMounts"] if m["mountPath"] == "/data"]
            seen += 1
    assert seen >= 3
    cfg = _config(r)
    if case in VALUES_FILES:
        storage = values_for(case)["storage"]
        assert cfg["AWS_REGION"] == cfg["AWS_DEFAULT_REGION"] == storage["region"]
        if storage["endpointUrl"]:
            assert cfg["CHURN_S3_ENDPOINT_URL"] == storage["endpointUrl"]
    if case == "production":
        assert cfg["CHURN_S3_ENDPOINT_URL"] == "", "production talks to AWS S3"
    if case == "minimal":
        assert cfg["CHURN_S3_ENDPOINT_URL"] == "https://s3.eu-central-1.example.com"
        assert cfg["AWS_REGION"] == "eu-central-1"


@pytest.mark.parametrize("case", list(CASES))
def test_config_and_secrets(rendered: dict[str, Rendered], case: str) -> None:
    r = rendered[case]
    assert not r.of_kind("Secret"), "the chart must never render a Secret (existingSecret only)"
    cfg = _config(r)
    values = values_for(case if case in VALUES_FILES else "default")
    assert cfg["CHURN_ONLINE_STORE"] == "redis"
    assert cfg["CHURN_FEATURE_REPO"] == values["featureRepoPath"] == "/app/feature_repo"
    assert not ({"CHURN_ADMIN_TOKEN", "CHURN_FEAST_REGISTRY_URL"} & cfg.keys())
    redis_enabled = case in {"all-features", "staging"}
    assert ("CHURN_REDIS_URL" in cfg) == redis_enabled
    for key in cfg:
        assert re.fullmatch(r"CHURN_[A-Z0-9_]+|AWS_(DEFAULT_)?REGION|HOME|MPLCONFIGDIR|NUMBA_CACHE_DIR", key), key
    assert not (S3_KEYS & cfg.keys())
    for obj, pod in _churn_workloads(r):
        for c in churn_containers(pod):
            env = c.get("env", [])
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
            # the pod's own namespace, by which the daily run groups its pushed metrics
            fields = {
                e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in env if "fieldRef" in e.get("valueFrom", {})
            }
            assert fields == {"CHURN_NAMESPACE": "metadata.namespace"}, f"{obj['metadata']['name']}/{c['name']}"
            assert set(refs) == SECRET_KEYS, f"{obj['metadata']['name']}/{c['name']}"
            for key, ref in refs.items():
                assert ref["name"] == values["existingSecret"] and ref["key"] == key
            assert refs["CHURN_REDIS_URL"]["optional"] is redis_enabled
            # Workload identity (IRSA, GKE) needs no keys: the S3 credentials are optional.
            assert refs["AWS_ACCESS_KEY_ID"]["optional"] is refs["AWS_SECRET_ACCESS_KEY"]["optional"] is True
            # Needed only by a webhook sink, which the settings refuse to start without them.
            assert all(refs[k]["optional"] is True for k in WEBHOOK_KEYS)
            assert all("value" not in e or e["name"] not in SECRET_KEYS for e in c.get("env", []))


def _steps(pod: dict) -> list[tuple[str, list[str], list[str]]]:
    return [(c["image"], c["command"], c["args"]) for c in containers(pod)]


@pytest.mark.parametrize("case", list(CASES))
def test_jobs_run_the_contract_commands(rendered: dict[str, Rendered], case: str) -> None:
    r = rendered[case]
    values = values_for(case if case in VALUES_FILES else "default")
    (cj,) = r.of_kind("CronJob")  # one daily run: the steps chain in one pod, not on the clock
    assert cj["metadata"]["labels"]["churn-platform/job"] == "daily"
    spec = cj["spec"]
    if case in VALUES_FILES:
        assert spec["schedule"] == values["daily"]["schedule"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == values["jobs"]["backoffLimit"] and job["activeDeadlineSeconds"] > 0
    pod = job["template"]["spec"]
    # A failing init container fails the pod, so nothing after a failed step runs.
    assert pod["restartPolicy"] == "Never"
    assert job["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "job"
    ml, drift = ("/ml", ["churn"]), ("/drift", ["python", "-m", "jobs.drift"])
    expected_chain = [
        # ingest → build → apply → materialize → score → interventions (plan + send)
        (ml, ["daily", "--date", "yesterday", "--to", "interventions"]),
        (drift, ["--date", "yesterday", "--exit-zero"]),  # the drift image: alibi-detect never in the ML image
        (ml, ["daily", "--date", "yesterday", "--from", "retrain"]),  # retrain → housekeeping
    ]
    if case == "spark":  # the Spark-sized steps as SparkApplications, each waited for (test_spark_chart)
        submit = (split_image(values["spark"]["submitter"]["image"])[0], SUBMIT_COMMAND)
        expected_chain = [
            (ml, ["daily", "--date", "yesterday", "--to", "ingest"]),
            (submit, ["features"]),
            (ml, ["daily", "--date", "yesterday", "--from", "score", "--to", "interventions"]),
            expected_chain[1],
            (submit, ["retrain"]),
        ]
    assert len(containers(pod)) == len(expected_chain) and len(pod["containers"]) == 1
    for (image, command, args), ((repo, cmd), exp_args) in zip(_steps(pod), expected_chain, strict=True):
        assert split_image(image)[0].endswith(repo) and command == cmd and args == exp_args, (image, args)

    def churn_args(pod: dict) -> list[list[str]]:
        out = []
        for image, command, args in _steps(pod):
            assert command == ["churn"] and split_image(image)[0].endswith("/ml"), (image, command)
            out.append(args)
        return out

    seeds = [j for j in r.of_kind("Job") if j["metadata"]["labels"].get("app.kubernetes.io/component") == "job"]
    demo = values.get("demo", {}).get("enabled") or case == "all-features"
    if not demo:
        assert not seeds, "the seed Job is demo-only: production must not depend on it"
        return
    (seed,) = seeds
    assert seed["metadata"]["name"] == "churn-platform-seed"  # stable: Argo CD/Helm find the finished Job
    ann = seed["metadata"].get("annotations", {})
    # Runs once: no Helm/Argo CD hook (a PostSync hook would run on every sync), no TTL (Argo CD
    # would recreate a collected Job), kept by Helm when `lookup` stops rendering it.
    assert not [a for a in ann if a.startswith("helm.sh/hook") or a.startswith("argocd.argoproj.io/hook")], ann
    assert "ttlSecondsAfterFinished" not in seed["spec"]
    assert ann["helm.sh/resource-policy"] == "keep"
    assert "Replace=true" not in ann.get("argocd.argoproj.io/sync-options", "")
    assert seed["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    steps = churn_args(seed["spec"]["template"]["spec"])
    d = values["demo"]
    assert steps == [
        ["data", "generate", "--users", str(d["users"]), "--days", str(d["days"]), "--seed", str(d["seed"])],
        ["features", "build"],
        ["features", "apply"],
        ["features", "materialize"],
        ["train", "--promote"],
    ]


@pytest.mark.parametrize("case", list(CASES))
def test_minio_for_staging_only(rendered: dict[str, Rendered], case: str) -> None:
    """The optional MinIO: one pod on its own claim, the churn pods' S3 endpoint, the Secret's S3
    keys as its root credentials, and a one-shot Job creating storage.bucket."""
    r = rendered[case]
    components = [d["metadata"]["labels"].get("app.kubernetes.io/component", "") for d in r.docs]
    minio_objs = [c for c in components if c.startswith("minio")]
    if case not in {"staging", "all-features"}:
        assert not minio_objs, "MinIO is staging-only"
        return
    values = values_for(case if case in VALUES_FILES else "default")
    storage, cfg = values["storage"], _config(r)
    dep = r.one("Deployment", "churn-platform-minio")
    svc = r.one("Service", "churn-platform-minio")
    pvc = r.one("PersistentVolumeClaim", "churn-platform-minio")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = dep["spec"]["template"]["spec"]
    assert {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v} == {
        pvc["metadata"]["name"]
    }
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    port = svc["spec"]["ports"][0]["port"]
    assert cfg["CHURN_S3_ENDPOINT_URL"] == f"http://{svc['metadata']['name']}:{port}"
    (minio,) = pod["containers"]
    assert minio["image"].startswith(values["minio"]["image"]["repository"] + ":")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in minio["env"]}
    for var, key in (("MINIO_ROOT_USER", "AWS_ACCESS_KEY_ID"), ("MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY")):
        ref = env[var]["secretKeyRef"]
        assert ref["name"] == values["existingSecret"] and ref["key"] == key and not ref.get("optional")
    assert env["MINIO_SITE_REGION"] == cfg["AWS_REGION"] == storage["region"]
    assert minio["readinessProbe"]["httpGet"]["path"] == "/minio/health/ready"

    (job,) = [j for j in r.of_kind("Job") if j["metadata"]["labels"]["app.kubernetes.io/component"] == "minio-bucket"]
    assert job["metadata"]["name"] == "churn-platform-minio-bucket"
    ann = job["metadata"].get("annotations", {})
    assert not [a for a in ann if "hook" in a] and "ttlSecondsAfterFinished" not in job["spec"]
    assert job["spec"]["backoffLimit"] >= 5, "retries must outlast MinIO's start"
    (mc,) = job["spec"]["template"]["spec"]["containers"]
    assert mc["command"] == ["mc"] and mc["args"][-1] == f"local/{storage['bucket']}"
    assert "mb" in mc["args"] and "--ignore-existing" in mc["args"]
    mc_env = {e["name"]: e.get("value") for e in mc["env"]}
    assert mc_env["MC_HOST_local"] == f"http://$(MINIO_USER):$(MINIO_PASSWORD)@{svc['metadata']['name']}:{port}"
    names = [e["name"] for e in mc["env"]]
    assert names.index("MINIO_USER") < names.index("MC_HOST_local") > names.index("MINIO_PASSWORD")


@pytest.mark.parametrize("case", list(CASES))
def test_daily_metrics_reach_prometheus_through_the_pushgateway(rendered: dict[str, Rendered], case: str) -> None:
    """CHURN_PUSHGATEWAY_URL points at the in-chart Pushgateway where one is enabled (staging,
    production); its ServiceMonitor keeps the pushed labels. No volume carries job metrics."""
    r = rendered[case]
    cfg = _config(r)
    gws = [d for d in r.of_kind("Deployment") if d["metadata"]["name"] == "churn-platform-pushgateway"]
    if case in {"default", "minimal", "spark"}:
        assert not gws and cfg["CHURN_PUSHGATEWAY_URL"] == ""
        return
    (gw,) = gws
    svc = r.one("Service", gw["metadata"]["name"])
    assert svc["spec"]["selector"].items() <= gw["spec"]["template"]["metadata"]["labels"].items()
    port = svc["spec"]["ports"][0]["port"]
    assert cfg["CHURN_PUSHGATEWAY_URL"] == f"http://{svc['metadata']['name']}:{port}"
    assert gw["spec"]["replicas"] == 1 and gw["spec"]["strategy"]["type"] == "Recreate"
    (c,) = gw["spec"]["template"]["spec"]["containers"]
    assert "--persistence.file=/data/metrics" in c["args"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    claims = [v for v in gw["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert bool(claims) == (case == "production")


def test_external_pushgateway() -> None:
    """metrics.pushgateway.url: no in-chart Pushgateway; the jobs may reach that port only."""
    url = "http://pushgateway.monitoring.svc:9091"
    proc = helm_template(["--set", f"metrics.pushgateway.enabled=true,metrics.pushgateway.url={url}"])
    assert proc.returncode == 0, proc.stderr
    r = Rendered("external-pushgateway", proc.stdout)
    assert _config(r)["CHURN_PUSHGATEWAY_URL"] == url
    assert not [d for d in r.docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "pushgateway"]
    jobs = r.one("NetworkPolicy", "churn-platform-jobs")
    assert [rl for rl in jobs["spec"]["egress"] if _ports(rl) == {(9091, "TCP")}]


def _invocations(rendered: dict[str, Rendered]) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    """(churn argument lists, drift argument lists) used anywhere in any rendering."""
    churn, drift = set(), set()
    for r in rendered.values():
        for app in r.spark_applications().values():  # a driver runs the CLI with these arguments
            churn.add(tuple(app["spec"]["arguments"]))
        for _obj, pod in _churn_workloads(r):
            for c in churn_containers(pod):
                if c["command"] == ["churn"]:
                    churn.add(tuple(c["args"]))
                elif c["command"] == ["python", "-m", "jobs.drift"]:
                    drift.add(tuple(c["args"]))
                else:
                    pytest.fail(f"unexpected command {c['command']}")
    return churn, drift


def _match(args: tuple[str, ...], commands: dict[tuple[str, ...], set[str]]) -> tuple[str, ...] | None:
    for n in range(len(args), 0, -1):
        if args[:n] in commands:
            return args[:n]
    return None


def test_commands_are_in_the_contract(rendered: dict[str, Rendered]) -> None:
    commands = contract_commands()
    assert ("features", "build") in commands and ("train",) in commands and ("serve",) in commands
    churn, drift = _invocations(rendered)
    for args in churn:
        path = _match(args, commands)
        assert path, f"`churn {' '.join(args)}` is not a command of docs/contracts.md"
        flags = {a for a in args if a.startswith("--")}
        assert flags <= commands[path], (
            f"`churn {' '.join(args)}`: options {flags - commands[path]} not in the contract"
        )
    for args in drift:
        assert {a for a in args if a.startswith("--")} <= contract_drift_options(), args


def test_commands_exist_in_the_cli(rendered: dict[str, Rendered]) -> None:
    """`churn <cmd> --help` and `python -m jobs.drift --help` exit 0 and list every option the chart
    passes. A missing command, entry point or environment is a failure, never a skip."""
    assert CHURN.exists(), f"{CHURN} not installed (make setup): the chart's commands cannot be checked"
    drift_python = Settings.from_env(env={}).drift_python_path
    commands = contract_commands()
    churn, drift = _invocations(rendered)
    by_path: dict[tuple[str, ...], set[str]] = {}
    for args in churn:
        path = _match(args, commands)
        assert path
        by_path.setdefault(path, set()).update(a for a in args if a.startswith("--"))
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("FORCE_COLOR", None)

    def check(path: tuple[str, ...]) -> tuple[tuple[str, ...], int, str]:
        proc = run([str(CHURN), *path, "--help"], env=env, cwd=tempfile.gettempdir(), timeout=120)
        return path, proc.returncode, proc.stdout + proc.stderr

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(check, sorted(by_path)))
    failures = []
    for path, rc, out in results:
        name = "churn " + " ".join(path)
        if rc != 0:
            failures.append(f"`{name} --help` exited {rc}:\n{out[-2000:]}")
            continue
        missing = [f for f in by_path[path] if f not in out]
        if missing:
            failures.append(f"`{name} --help` does not list {missing}")

    if drift:
        if not (REPO / "jobs" / "drift" / "__main__.py").exists():
            failures.append("jobs/drift/__main__.py missing: the chart runs `python -m jobs.drift`")
        elif not drift_python.exists():
            failures.append(f"drift env missing ({drift_python}): run `make setup-drift`")
        else:
            proc = run([str(drift_python), "-m", "jobs.drift", "--help"], cwd=REPO, env=env)
            if proc.returncode != 0:
                failures.append(f"`python -m jobs.drift --help` exited {proc.returncode}:\n{proc.stderr[-2000:]}")
            else:
                for flags in drift:
                    missing = [f for f in flags if f.startswith("--") and f not in proc.stdout]
                    if missing:
                        failures.append(f"`python -m jobs.drift --help` does not list {missing}")

    assert not failures, "\n".join(failures)


def _pod_labels(obj: dict) -> dict[str, str]:
    tmpl = obj["spec"]["template"] if obj["kind"] != "CronJob" else obj["spec"]["jobTemplate"]["spec"]["template"]
    return tmpl["metadata"]["labels"]


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels + In/NotIn/Exists matchExpressions) matches the labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        ok = {
            "In": present and value in e.get("values", []),
            "NotIn": not present or value not in e.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[e["operator"]]
        if not ok:
            return False
    return True


def _ports(rule: dict) -> set[tuple[int, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


@pytest.mark.parametrize("case", ["default", "staging", "all-features", "production"])
def test_network_policies(rendered: dict[str, Rendered], case: str) -> None:
    r = rendered[case]
    values = values_for(case if case in VALUES_FILES else "default")
    pols = {p["metadata"]["name"]: p for p in r.of_kind("NetworkPolicy")}
    by_component = {
        p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component"): p
        for p in pols.values()
        if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "churn-platform"
    }
    api, jobs = by_component["api"], by_component["job"]
    cfg = _config(r)
    np = values["networkPolicy"]
    redis_port = np["redisPort"]
    minio_on = case in {"staging", "all-features"}
    dns = {(53, "UDP"), (53, "TCP")}
    storage = {(9000, "TCP")} if minio_on else {(p, "TCP") for p in np["objectStorage"]["ports"]}
    assert (443, "TCP") in storage or minio_on
    pushgateway_on = case in {"staging", "production", "all-features"}
    pushgateway = {(values["metrics"]["pushgateway"]["port"], "TCP")} if pushgateway_on else set()

    # The API: ingress only on its port.
    assert set(api["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for rule in api["spec"]["ingress"]:
        assert rule["ports"] == [{"port": int(cfg["CHURN_PORT"]), "protocol": "TCP"}]
    # Jobs: no ingress. API and jobs: egress only to DNS, Redis and the object store.
    assert jobs["spec"]["ingress"] == [] and set(jobs["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for pol in (api, jobs):
        rules = pol["spec"]["egress"]
        for rule in rules:
            # Only the daily run pushes metrics; the API does not even reach the Pushgateway.
            assert _ports(rule) <= dns | {(redis_port, "TCP")} | storage | (pushgateway if pol is jobs else set()), rule
        (store_rule,) = [rl for rl in rules if _ports(rl) == storage]
        if minio_on:  # exactly the MinIO pod, nothing on the internet
            minio = r.one("Deployment", "churn-platform-minio")
            assert all(_selects(peer["podSelector"], _pod_labels(minio)) for peer in store_rule["to"])
            assert not [rl for rl in rules if (443, "TCP") in _ports(rl)]
        else:
            assert store_rule.get("to", []) == np["objectStorage"]["to"]
    # Every pod of the release (the vendored Redis has its own policy) is selected by exactly one.
    for obj, _pod in r.workloads():
        labels = _pod_labels(obj)
        if labels.get("app.kubernetes.io/name") == "redis":
            continue
        selected = [n for n, p in pols.items() if _selects(p["spec"]["podSelector"], labels)]
        assert len(selected) == 1, f"{obj['metadata']['name']} is selected by {selected}, not by exactly one policy"
    if pushgateway_on:  # the jobs reach exactly the Pushgateway pod; it accepts pushes and scrapes only
        (push_rule,) = [rl for rl in jobs["spec"]["egress"] if _ports(rl) == pushgateway]
        gw = r.one("Deployment", "churn-platform-pushgateway")
        assert all(_selects(peer["podSelector"], _pod_labels(gw)) for peer in push_rule["to"])
        gw_pol = by_component["pushgateway"]
        assert gw_pol["spec"]["egress"] == []
        assert all(_ports(rl) == pushgateway for rl in gw_pol["spec"]["ingress"])
    else:
        assert "pushgateway" not in by_component
    if minio_on:
        minio_pol = by_component["minio"]
        assert minio_pol["spec"]["egress"] == []
        (ingress,) = minio_pol["spec"]["ingress"]
        assert _ports(ingress) == {(9000, "TCP")}
        callers = {
            _pod_labels(o)["app.kubernetes.io/component"]
            for o, _ in r.workloads()
            if any(_selects(f["podSelector"], _pod_labels(o)) for f in ingress["from"])
        }
        assert callers == {"api", "job", "minio-bucket"}
    else:
        assert "minio" not in by_component
    if case == "all-features":
        redis_pol = pols["churn-platform-redis"]
        assert redis_pol["spec"]["ingress"][0]["ports"] == [{"port": 6379, "protocol": "TCP"}]
        for pol in (api, jobs):
            redis_rule = [rl for rl in pol["spec"]["egress"] if rl["ports"][0]["port"] == redis_port][0]
            assert redis_rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "redis"


def test_a_webhook_sink_opens_egress_to_it_for_the_jobs_only() -> None:
    proc = helm_template(
        [
            "--set",
            "config.CHURN_INTERVENTION_SINKS=webhook\\,export,networkPolicy.interventionsWebhook.port=8443",
            "--set-json",
            'networkPolicy.interventionsWebhook.to=[{"ipBlock":{"cidr":"203.0.113.0/24"}}]',
        ]
    )
    assert proc.returncode == 0, proc.stderr
    r = Rendered("webhook", proc.stdout)
    assert _config(r)["CHURN_INTERVENTION_SINKS"] == "webhook,export"
    pols = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in r.of_kind("NetworkPolicy")}
    (rule,) = [rl for rl in pols["job"]["spec"]["egress"] if _ports(rl) == {(8443, "TCP")}]
    assert rule["to"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    assert not [rl for rl in pols["api"]["spec"]["egress"] if (8443, "TCP") in _ports(rl)]
    default = Rendered("default", helm_template([]).stdout)
    (jobs,) = [p for p in default.of_kind("NetworkPolicy") if p["metadata"]["name"].endswith("-jobs")]
    assert len(jobs["spec"]["egress"]) == len(pols["job"]["spec"]["egress"]) - 1  # no sink, no rule


def test_helm_dependency_build_is_offline(tmp_path: Path) -> None:
    """The vendored Redis subchart satisfies the dependency: nothing is fetched or duplicated."""
    helm = require_tool("helm")
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    proc = run([helm, "dependency", "build", str(copy)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (copy / "charts").iterdir()) == ["redis"]


def test_vendored_redis_subchart(rendered: dict[str, Rendered]) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    dep = next(d for d in chart["dependencies"] if d["name"] == "redis")
    assert dep["condition"] == "redis.enabled"
    sub = yaml.safe_load((CHART / "charts" / "redis" / "Chart.yaml").read_text())
    assert sub["name"] == "redis" and sub["version"] == dep["version"]
    assert dep.get("repository", "file://charts/redis") == "file://charts/redis"  # vendored, no fetch
    assert not [d for d in rendered["default"].docs if d["metadata"]["labels"].get("app.kubernetes.io/name") == "redis"]
    r = rendered["all-features"]
    svc = r.one("Service", "churn-platform-redis")
    assert _config(r)["CHURN_REDIS_URL"] == f"redis://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}/0"
    r.one("Deployment", "churn-platform-redis")


def test_dashboard_configmap(rendered: dict[str, Rendered]) -> None:
    """The Grafana sidecar finds the dashboard by configurable labels; it shows one environment
    (namespace) at a time, from a chosen data source, and only metrics the contract names."""
    dashboards = values_for("default")["dashboards"]
    (cm,) = [d for d in rendered["default"].of_kind("ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert dashboards["labels"] and cm["metadata"]["labels"].items() >= dashboards["labels"].items()
    assert cm["metadata"].get("annotations", {}) == dashboards["annotations"]
    (payload,) = cm["data"].values()
    dash = json.loads(payload)
    assert dash["uid"] and dash["title"]

    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ns = variables["namespace"]
    assert ns["type"] == "query" and ns["datasource"]["uid"] == "${datasource}"
    assert re.fullmatch(r"label_values\(.*,\s*namespace\)", ns["query"]["query"]), ns["query"]
    assert not ns.get("includeAll") and not ns.get("multi"), "one environment at a time, never a sum of two"

    # Every series selector of every query is narrowed to the chosen namespace.
    not_metrics = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}
    not_metrics |= {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile"}
    token = re.compile(
        r"\b(?:by|without|on|ignoring)\s*\([^)]*\)|\"[^\"]*\"|\[[^\]]*\]|\b([a-zA-Z_:][\w:]*)\b(\s*\{[^}]*\})?(\s*\()?"
    )
    targets = [(p["title"], t) for p in dash["panels"] for t in p.get("targets", [])]
    assert targets
    used: set[str] = set()
    for title, t in targets:
        assert t["datasource"]["uid"] == "${datasource}", title
        selectors = [
            (m.group(1), m.group(2) or "")
            for m in token.finditer(t["expr"])
            if m.group(1) and not m.group(3) and m.group(1) not in not_metrics
        ]
        assert selectors, (title, t["expr"])
        for name, matchers in selectors:
            assert 'namespace=~"$namespace"' in matchers, f"{title}: {name} is not narrowed to $namespace"
            used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    unknown = {m for m in used if m.startswith("churn_")} - contract_metrics()
    assert not unknown, f"dashboard uses metrics not in docs/contracts.md: {unknown}"

    # The sidecar label and folder annotation follow the values.
    proc = helm_template(["--set", "dashboards.labels.grafana_dashboard=churn", "--set", "dashboards.annotations.x=y"])
    assert proc.returncode == 0, proc.stderr
    override = Rendered("override", proc.stdout).of_kind("ConfigMap")
    (cm,) = [d for d in override if d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "churn"
    assert cm["metadata"]["annotations"] == {**dashboards["annotations"], "x": "y"}


def test_images_match_dockerfiles(rendered: dict[str, Rendered]) -> None:
    """Every churn container of every rendering names an image CI builds (docker/Dockerfile.<key>),
    runs that image's ENTRYPOINT, and every module of this repository its command imports, from the
    console script or `python -m` target down, is in that image where Python looks for it. So does
    every SparkApplication (spark.enabled): the Spark image, its entrypoint, and the CLI file it
    names as the application installed in it with everything the CLI imports."""
    image_values = values_for("default")["image"]
    repos = {f"{image_values['repositoryPrefix']}/{image_values[k]}": k for k in ("api", "ml", "drift", "spark")}
    ci = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    assert ci["jobs"]["images"]["strategy"]["matrix"]["image"] == list(repos.values()), "CI builds every image"
    images = {key: _image_contents(key) for key in repos.values()}
    missing_by_root: dict[tuple[str, str], list[str]] = {}
    seen = set()
    for case, r in rendered.items():
        for obj, pod in _churn_workloads(r):
            for c in churn_containers(pod):
                where = f"[{case}] {obj['metadata']['name']}/{c['name']}: {c['image']}"
                repo = re.sub(r"(@[^/]*|:[^/:]*)$", "", c["image"])
                assert repo in repos, f"{where}: not an image CI builds"
                key = repos[repo]
                image = images[key]
                assert c["command"] == image["entrypoint"], (
                    f"{where}: runs {c['command']}, image runs {image['entrypoint']}"
                )
                if c["command"][:2] == ["python", "-m"]:
                    root = c["command"][2]
                else:
                    assert c["command"][0] in image["scripts"], f"{where}: no `{c['command'][0]}` in the image"
                    root = image["scripts"][c["command"][0]].split(":")[0]
                if (key, root) not in missing_by_root:
                    missing_by_root[key, root] = _missing_modules(image, root)
                assert not missing_by_root[key, root], f"{where}: the image lacks {missing_by_root[key, root]}"
                seen.add(key)
        for step, app in r.spark_applications().items():
            where = f"[{case}] SparkApplication {step}: {app['spec']['image']}"
            key = repos.get(re.sub(r"(@[^/]*|:[^/:]*)$", "", app["spec"]["image"]))
            assert key == "spark", f"{where}: not the Spark image CI builds"
            assert images[key]["entrypoint"] == ["/opt/spark-entrypoint.sh"], where
            assert "/opt/spark-entrypoint.sh" in images[key]["files"], where
            main = app["spec"]["mainApplicationFile"].removeprefix("local://")
            site = "/opt/venv/lib/python3.11/site-packages/"
            assert main.startswith(site) and images[key]["files"].get(main.replace(site, "/site-packages/")), where
            module = main.removeprefix(site).removesuffix(".py").replace("/", ".")
            assert not _missing_modules(images[key], module), f"{where}: the image lacks what {module} imports"
            seen.add(key)
    assert seen == set(repos.values()), f"no container runs {set(repos.values()) - seen}"


# ---- images: what a rendered container runs must exist in the image it names ------------------
FIRST_PARTY_ROOTS = ("churn", "cli", "jobs", "training", "service", "feature_repo")


def _dockerfile_stages(path: Path) -> list[dict]:
    """Stages of a Dockerfile: {"name", "instructions": [(INSTRUCTION, args)], ...} in order."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        if not buf and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        lines.append(buf + raw)
        buf = ""
    stages: list[dict] = []
    for line in lines:
        instr, _, args = line.strip().partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            words = args.split()
            name = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else str(len(stages))
            stages.append({"name": name, "base": words[0], "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((instr, args.strip()))
    return stages


def _flags(words: list[str]) -> tuple[dict[str, str], list[str]]:
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words


def _stage_files(stage: dict) -> tuple[dict[str, Path], dict[str, str], str, list[str]]:
    """What a stage copies from the build context ({image path: repo path}), its ENV, WORKDIR and
    the stages or named contexts it copies from (``COPY --from``)."""
    files: dict[str, Path] = {}
    env: dict[str, str] = {}
    workdir = "/"
    copied_from: list[str] = []
    for instr, args in stage["instructions"]:
        if instr == "WORKDIR":
            workdir = args if args.startswith("/") else f"{workdir.rstrip('/')}/{args}"
        elif instr == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
        elif instr in {"COPY", "ADD"}:
            flags, words = _flags(shlex.split(args))
            if "from" in flags:
                copied_from.append(flags["from"])
                continue
            *srcs, dest = words
            if not dest.startswith("/"):
                dest = f"{workdir.rstrip('/')}/{dest}"
            into_dir = dest.endswith("/") or len(srcs) > 1
            for src in srcs:
                local = REPO / src
                if local.is_dir():
                    for f in local.rglob("*"):
                        if f.is_file() and "__pycache__" not in f.parts:
                            files[f"{dest.rstrip('/')}/{f.relative_to(local)}"] = f
                elif local.is_file():
                    files[f"{dest.rstrip('/')}/{local.name}" if into_dir else dest] = local
    return files, env, workdir, copied_from


def _first_party_imports(path: Path, package: str) -> set[str]:
    """First-party modules a file imports, statically or by a dotted module name in a string
    (an importlib registry), with relative imports resolved against ``package``."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"[a-z_]+(\.[a-z_0-9]+)+", node.value):
                names.add(node.value)
    return {n for n in names if n.split(".")[0] in FIRST_PARTY_ROOTS and _repo_module(n)}


def _repo_module(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_closure(root: str) -> dict[str, Path]:
    """Every first-party module reachable by imports from ``root``, with its file."""
    seen: dict[str, Path] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        path = _repo_module(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo += sorted(_first_party_imports(path, package))
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)  # importing a.b runs a/__init__.py first
    return seen


def _image_contents(key: str) -> dict:
    """The image CI builds as ``key`` (the final stage of docker/Dockerfile.<key>, or the target
    tests.support.images.TARGETS names), with the stages it is built FROM: ENTRYPOINT, ENV, WORKDIR,
    the repo files it holds at their image paths, and the importable roots (PYTHONPATH, WORKDIR,
    the installed project)."""
    dockerfile, target = TARGETS.get(key, (key, None))
    stages = _dockerfile_stages(REPO / "docker" / f"Dockerfile.{dockerfile}")
    by_name = {s["name"]: s for s in stages}
    chain = [by_name[target] if target else stages[-1]]
    while chain[0]["base"] in by_name:
        chain.insert(0, by_name[chain[0]["base"]])
    final = {"name": chain[-1]["name"], "instructions": [i for s in chain for i in s["instructions"]]}
    files, env, workdir, copied_from = _stage_files(final)
    entrypoint = ([json.loads(a) for i, a in final["instructions"] if i == "ENTRYPOINT"] or [None])[-1]
    installed: dict[str, Path] = {}  # module file -> repo file, for `pip install .` in a copied stage
    scripts: dict[str, str] = {}
    for name in copied_from:
        stage = by_name.get(name)
        if stage is None:
            continue  # a named build context (e.g. a wheelhouse), not a stage
        s_files, _env, s_workdir, _ = _stage_files(stage)
        project = any(i == "RUN" and re.search(r"pip install\b[^&;|]*\s\.(\s|$)", a) for i, a in stage["instructions"])
        if project:
            pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
            scripts = pyproject["project"]["scripts"]
            include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
            prefix = s_workdir.rstrip("/") + "/"
            for image_path, repo_path in s_files.items():
                rel = image_path.removeprefix(prefix)
                if image_path.startswith(prefix) and any(fnmatch.fnmatch(rel.split("/")[0], p) for p in include):
                    installed["/site-packages/" + rel] = repo_path
    roots = [p for p in env.get("PYTHONPATH", "").split(":") if p] + [workdir]
    return {
        "entrypoint": entrypoint,
        "env": env,
        "files": {**files, **installed},
        "roots": [*roots, "/site-packages"],
        "scripts": scripts if "/opt/venv/bin" in env.get("PATH", "") else {},
    }


def _missing_modules(image: dict, root_module: str) -> list[str]:
    """First-party modules reachable from ``root_module`` that the image cannot import."""
    missing = []
    for name, repo_path in sorted(_module_closure(root_module).items()):
        rel = repo_path.relative_to(REPO).as_posix()
        if any(image["files"].get(f"{root.rstrip('/')}/{rel}") == repo_path for root in image["roots"]):
            continue
        # A package directory without its __init__.py still imports, as a namespace package.
        if repo_path.name == "__init__.py":
            pkg = rel.rsplit("/", 1)[0] + "/"
            if any(f.startswith(f"{root.rstrip('/')}/{pkg}") for root in image["roots"] for f in image["files"]):
                continue
        missing.append(f"{name} ({rel})")
    return missing


def _digest_values(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    digests = {key: "sha256:" + hashlib.sha256(key.encode()).hexdigest() for key in ("api", "ml", "drift", "spark")}
    path = tmp_path / "digests.yaml"
    path.write_text(yaml.safe_dump({"image": {"digests": digests}}))
    return path, digests


@pytest.mark.parametrize("case", list(CASES))
def test_images_pinned_by_digest_when_set(case: str, tmp_path: Path) -> None:
    """With image.digests set, every churn container (API, daily chain, seed) is <repo>@<its digest>:
    what CI tested, and a new build is a new reference that rolls the pods."""
    path, digests = _digest_values(tmp_path)
    proc = helm_template([*CASES[case], "-f", str(path), "--set", "demo.enabled=true"])
    assert proc.returncode == 0, proc.stderr
    image = values_for("default")["image"]
    r = Rendered(case, proc.stdout)
    seen = set()
    refs = [
        (f"{obj['metadata']['name']}/{c['name']}", c["image"])
        for obj, pod in _churn_workloads(r)
        for c in churn_containers(pod)
    ] + [(f"SparkApplication {step}", app["spec"]["image"]) for step, app in r.spark_applications().items()]
    for where, ref in refs:
        repo, _, digest = ref.partition("@")
        key = next(k for k in digests if repo == f"{image['repositoryPrefix']}/{image[k]}")
        assert digest == digests[key], f"[{case}] {where}: {ref}"
        seen.add(key)
    assert seen == set(digests) - (set() if r.spark_applications() else {"spark"})


@pytest.mark.parametrize("case", list(CASES))
def test_images_fall_back_to_the_tag(rendered: dict[str, Rendered], case: str) -> None:
    """As each case's values say: <repo>@<digest> where one is set, else <repo>:<image.tag>, or
    :<appVersion> when the tag is empty."""
    image = values_for(case if case in VALUES_FILES else "default")["image"]
    tag = str(image["tag"] or yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
    expected = {
        f"{image['repositoryPrefix']}/{image[k]}" + (f"@{image['digests'][k]}" if image["digests"][k] else f":{tag}")
        for k in ("api", "ml", "drift", "spark")
    }
    refs = {c["image"] for _obj, pod in _churn_workloads(rendered[case]) for c in churn_containers(pod)}
    refs |= {app["spec"]["image"] for app in rendered[case].spark_applications().values()}
    assert refs and refs <= expected, refs


def test_values_schema_rejects_bad_digests() -> None:
    good = "sha256:" + "0" * 64
    assert helm_template(["--set", f"image.digests.api={good}"]).returncode == 0
    for bad in (
        f"image.digests.api={good[:-1]}",
        f"image.digests.api={good.upper()}",
        "image.digests.ml=latest",
        f"image.digests.drift=sha512:{'0' * 64}",
        f"image.digests.web={good}",
    ):
        proc = helm_template(["--set", bad])
        assert proc.returncode != 0, f"values.schema.json accepted {bad}"
