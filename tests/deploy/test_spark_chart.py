"""spark.enabled: the daily run's Spark-sized steps as Spark Operator applications.

No cluster runs here, so this renders the chart and reasons about the result: what each
SparkApplication runs (the ml image, the CLI with CHURN_ENGINE=spark, the bucket through s3a, the
sizes in values), that the chain still runs every daily step once and in order with each
application waited for, who may do what against the API, which pods may talk to which. The
submitter script runs for real, against a stand-in ``kubectl`` that plays the Spark Operator's
states (no API server can run here).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from churn.policies import DAILY_STEPS
from feature_repo.store import s3a_conf
from tests.support.tools import (
    CASES,
    CHART,
    SUBMIT_COMMAND,
    Rendered,
    containers,
    helm_template,
    render_cases,
    values_for,
)

pytestmark = pytest.mark.deploy

CASE = "spark"  # tests/support/tools.py CASES: spark on, an https endpoint, 5 executors of 16g
SCRIPT = CHART / "files" / "spark-submit.sh"


@pytest.fixture(scope="module")
def r() -> Rendered:
    return render_cases({CASE: CASES[CASE]})[CASE]


def _daily_pod(r: Rendered) -> dict:
    (cj,) = r.of_kind("CronJob")
    return cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _steps_of(args: list[str]) -> list[str]:
    """The DAILY_STEPS a `churn daily [--from A] [--to B]` runs."""
    first = args[args.index("--from") + 1] if "--from" in args else DAILY_STEPS[0]
    last = args[args.index("--to") + 1] if "--to" in args else DAILY_STEPS[-1]
    return list(DAILY_STEPS[DAILY_STEPS.index(first) : DAILY_STEPS.index(last) + 1])


def test_the_chain_runs_every_daily_step_once_in_order(r: Rendered) -> None:
    apps = r.spark_applications()
    assert set(apps) == {"features", "retrain"}
    ran = []
    for c in containers(_daily_pod(r)):
        if c["command"] == SUBMIT_COMMAND:
            (step,) = c["args"]
            ran += _steps_of(apps[step]["spec"]["arguments"])
        elif c["command"] == ["churn"]:
            ran += _steps_of(c["args"])
        else:
            assert c["command"] == ["python", "-m", "jobs.drift"]
            ran.append("drift")
    assert ran == list(DAILY_STEPS)
    assert set(_steps_of(apps["features"]["spec"]["arguments"])) >= {"build", "materialize"}
    assert "retrain" in _steps_of(apps["retrain"]["spec"]["arguments"])  # the training set on Spark


def test_applications_run_the_spark_image_with_the_bucket_and_the_sizes(r: Rendered) -> None:
    tag = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    image = f"ghcr.io/techitfactory/churn-platform/spark:{tag}"  # the chart's Spark image
    cm = next(d for d in r.of_kind("ConfigMap") if d["metadata"]["name"].endswith("-config"))
    for step, app in r.spark_applications().items():
        spec = app["spec"]
        assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2" and app["kind"] == "SparkApplication"
        assert (spec["type"], spec["mode"], spec["image"]) == ("Python", "cluster", image), step
        assert spec["restartPolicy"] == {"type": "Never"}  # the daily Job's retries redo the chain
        assert spec["executor"]["instances"] == 5 and spec["executor"]["memory"] == "16g"
        assert spec["driver"]["memory"] == values_for("default")["spark"]["driver"]["memory"]
        # the driver's session takes its s3a settings from the platform's one rule, fed by the ConfigMap
        conf = spec["sparkConf"] | s3a_conf(cm["data"]["CHURN_S3_ENDPOINT_URL"])
        assert conf["spark.hadoop.fs.s3a.endpoint"] == "https://s3.eu-central-1.example.com"
        assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
        assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
        assert all(isinstance(v, str) for v in conf.values())  # sparkConf is a map of strings
        assert any(p.startswith("org.apache.hadoop:hadoop-aws:") for p in spec["deps"]["packages"])
        for role in ("driver", "executor"):
            pod = spec[role]
            env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["env"]}
            assert env["CHURN_ENGINE"] == "spark", (step, role)
            assert {"configMapRef": {"name": cm["metadata"]["name"]}} in pod["envFrom"]
            assert {"AWS_ACCESS_KEY_ID", "CHURN_REDIS_URL"} <= env.keys()
            assert pod["podSecurityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["allowPrivilegeEscalation"] is False
            assert pod["labels"]["app.kubernetes.io/component"] == "spark"
            scratch = cm["data"]["CHURN_LOCAL_DIR"]
            assert scratch in {m["mountPath"] for m in pod["volumeMounts"]}
        assert {v["name"] for v in spec["volumes"]} >= {m["name"] for m in spec["driver"]["volumeMounts"]}
        assert all("emptyDir" in v for v in spec["volumes"])  # nothing shared but the bucket


def test_the_application_runs_the_cli_the_ml_image_installs() -> None:
    """mainApplicationFile is the CLI module inside the ml image's venv (docker/Dockerfile.ml)."""
    main = values_for("default")["spark"]["mainApplicationFile"]
    dockerfile = (CHART.parents[1] / "docker" / "Dockerfile.ml").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile and "python -m venv /opt/venv" in dockerfile
    assert "COPY cli cli" in dockerfile
    assert main == "local:///opt/venv/lib/python3.11/site-packages/cli/main.py"
    assert 'if __name__ == "__main__":' in (CHART.parents[1] / "cli" / "main.py").read_text()


def test_who_may_do_what_against_the_api(r: Rendered) -> None:
    pod = _daily_pod(r)
    submit_sa = pod["serviceAccountName"]
    assert submit_sa.endswith("-spark-submit") and pod["automountServiceAccountToken"] is False
    token_volume = next(v for v in pod["volumes"] if v["name"] == "spark-submit-token")
    assert {"serviceAccountToken"} <= {k for s in token_volume["projected"]["sources"] for k in s}
    for c in containers(pod):
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        assert ("spark-submit-token" in mounts) == (c["command"] == SUBMIT_COMMAND), c["name"]
    roles = {role["metadata"]["name"]: role["rules"] for role in r.of_kind("Role")}
    assert roles[submit_sa] == [
        {
            "apiGroups": ["sparkoperator.k8s.io"],
            "resources": ["sparkapplications"],
            "verbs": ["create", "get", "delete"],
        }
    ]
    driver_sa = next(iter(r.spark_applications().values()))["spec"]["driver"]["serviceAccount"]
    (driver_rule,) = roles[driver_sa]
    assert driver_rule["apiGroups"] == [""] and "pods" in driver_rule["resources"]
    assert "secrets" not in driver_rule["resources"]
    for name in (submit_sa, driver_sa):
        (binding,) = [b for b in r.of_kind("RoleBinding") if b["roleRef"]["name"] == name]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "churn"}]
    for app in r.spark_applications().values():  # the daily pod owns what it submitted
        (owner,) = app["metadata"]["ownerReferences"]
        assert owner["kind"] == "Pod" and owner["uid"] and owner["name"]


def test_network_policies_let_spark_pods_talk_to_each_other_and_the_api(r: Rendered) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in r.of_kind("NetworkPolicy")}
    spark = next(p for name, p in policies.items() if name.endswith("-spark"))
    app = r.spark_applications()["features"]
    for role in ("driver", "executor"):
        assert spark["podSelector"]["matchLabels"].items() <= app["spec"][role]["labels"].items()
    peers = [peer for rule in spark["ingress"] for peer in rule["from"]]
    assert peers == [{"podSelector": spark["podSelector"]}]
    api_ports = set(values_for("default")["spark"]["apiServer"]["ports"])
    jobs = next(p for name, p in policies.items() if name.endswith("-jobs"))
    for policy in (spark, jobs):
        ports = {p["port"] for rule in policy["egress"] for p in rule.get("ports", [])}
        assert api_ports <= ports


def test_the_spark_image_is_pinned_by_its_digest_like_the_others() -> None:
    """CI builds the Spark image beside the others (ci.yml's matrix) and pins its digest in
    image.digests.spark; the applications run exactly that."""
    digests = {k: "sha256:" + hashlib.sha256(k.encode()).hexdigest() for k in ("api", "ml", "drift", "spark")}
    sets = ",".join(f"image.digests.{k}={v}" for k, v in digests.items())
    proc = helm_template([*CASES[CASE], "--set", sets])
    assert proc.returncode == 0, proc.stderr
    for app in Rendered(CASE, proc.stdout).spark_applications().values():
        assert app["spec"]["image"] == f"ghcr.io/techitfactory/churn-platform/spark@{digests['spark']}"
    assert helm_template([*CASES[CASE], "--set", "image.digests.spark=latest"]).returncode != 0


def test_an_own_spark_image_is_pinned_by_digest_when_set() -> None:
    own = "spark.image.repository=registry.example.com/churn/ml-spark"
    digest = "sha256:" + "ab" * 32
    proc = helm_template([*CASES[CASE], "--set", f"{own},spark.image.digest={digest}"])
    assert proc.returncode == 0, proc.stderr
    for app in Rendered(CASE, proc.stdout).spark_applications().values():
        assert app["spec"]["image"] == f"registry.example.com/churn/ml-spark@{digest}"
    assert helm_template([*CASES[CASE], "--set", f"{own},spark.image.digest=latest"]).returncode != 0


def test_disabled_spark_renders_nothing_of_it() -> None:
    r = render_cases({"default": CASES["default"]})["default"]
    assert r.spark_applications() == {}
    assert not [c for c in containers(_daily_pod(r)) if c["command"] == SUBMIT_COMMAND]
    assert not [d for d in r.docs if "spark" in d["metadata"]["name"]]


# ---- the submitter, against a stand-in kubectl ----------------------------------------------------
STAND_IN = """#!/bin/sh
# kubectl as the submitter uses it: records each call, answers `get` from a queue of states.
echo "$*" >> "$WORK/calls"
case "$1" in
  create) cat > "$WORK/created.yaml" ;;
  get)
    case "$*" in *errorMessage*) printf 'driver container exited with 137 (OOMKilled)'; exit 0 ;; esac
    state=$(head -n 1 "$WORK/states"); [ "$(wc -l < "$WORK/states")" -gt 1 ] && sed -i 1d "$WORK/states"
    printf '%s' "$state" ;;
esac
"""


def _submit(r: Rendered, tmp_path: Path, states: list[str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    apps = tmp_path / "spark"
    apps.mkdir()
    cm = next(d for d in r.of_kind("ConfigMap") if d["metadata"]["name"].endswith("-spark"))
    for key, text in cm["data"].items():
        (apps / key).write_text(text)
    assert cm["data"]["submit.sh"] == SCRIPT.read_text()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(STAND_IN)
    (bin_dir / "kubectl").chmod(0o755)
    (tmp_path / "states").write_text("\n".join(states) + "\n")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "WORK": str(tmp_path),
        "SPARK_APPS_DIR": str(apps),
        "JOB_NAME": "churn-platform-daily-29400000-with-a-rather-long-suffix",
        "POD_NAME": "churn-platform-daily-29400000-x7k2p",
        "POD_UID": "8d3b6a43-6f5e-4b8a-9f0e-2f1d8a5c7e10",
        "SPARK_TIMEOUT_SECONDS": str(timeout),
        "SPARK_POLL_SECONDS": "0",
    }
    return subprocess.run(
        ["sh", str(apps / "submit.sh"), "features"], env=env, capture_output=True, text=True, timeout=60
    )


def test_submitter_waits_for_completion(r: Rendered, tmp_path: Path) -> None:
    proc = _submit(r, tmp_path, ["", "SUBMITTED", "RUNNING", "RUNNING", "SUCCEEDING", "COMPLETED"])
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    name = "churn-platform-daily-29400000-with-a-rat-features"
    # a retried pod first removes what its previous attempt submitted, then creates its own
    assert calls[0] == f"delete sparkapplication {name} --ignore-not-found --wait=true"
    assert calls[1] == "create -f -"
    assert sum(c.startswith(f"get sparkapplication {name}") for c in calls) == 6
    created = yaml.safe_load((tmp_path / "created.yaml").read_text())
    assert created["metadata"]["name"] == name and len(name) + len("-driver") <= 63
    assert created["metadata"]["ownerReferences"][0]["uid"] == "8d3b6a43-6f5e-4b8a-9f0e-2f1d8a5c7e10"
    assert "__" not in (tmp_path / "created.yaml").read_text()
    assert "COMPLETED" in proc.stdout


@pytest.mark.parametrize("state", ["FAILED", "SUBMISSION_FAILED"])
def test_submitter_fails_the_step_when_the_application_fails(r: Rendered, tmp_path: Path, state: str) -> None:
    proc = _submit(r, tmp_path, ["SUBMITTED", "RUNNING", state])
    assert proc.returncode == 1
    assert "OOMKilled" in proc.stderr and state in proc.stderr and "-driver" in proc.stderr


def test_submitter_gives_up_after_its_timeout_and_deletes_the_application(r: Rendered, tmp_path: Path) -> None:
    proc = _submit(r, tmp_path, ["RUNNING"], timeout=0)
    assert proc.returncode == 1 and "not finished" in proc.stderr
    assert (tmp_path / "calls").read_text().splitlines()[-1].startswith("delete sparkapplication")
