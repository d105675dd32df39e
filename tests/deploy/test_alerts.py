"""Alert rules: promtool check + unit tests on the very file the PrometheusRule embeds, and what the
unit tests must cover (firing, quiet, metric absent, replicas, namespaces)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support.contracts import contract_metrics
from tests.support.env import require_tool
from tests.support.tools import CHART, Rendered, helm_template, run, values_for

pytestmark = pytest.mark.deploy

ALERTS = CHART / "files" / "alerts.yaml"
ALERTS_TEST = CHART / "files" / "alerts_test.yaml"
# The job label the API's ServiceMonitor gives its targets, which the rules select on.
API_JOB = "churn-api"
# Every alert and the series it judges (a name, or a name with label matchers): each needs a
# unit-test case without them.
METRIC = {
    "ChurnApiDown": f'up{{job="{API_JOB}"}}',
    "ChurnApiHighErrorRate": "churn_http_requests_total",
    "ChurnApiHighLatencyP99": "churn_http_request_duration_seconds_bucket",
    "ChurnModelTooOld": "churn_model_age_seconds",
    "ChurnModelReloadFailed": "churn_model_reload_total",
    "ChurnDriftDetected": "churn_drift_detected",
    "ChurnBatchScoringMissed": "churn_batch_scoring_last_success_timestamp_seconds",
    "ChurnDailyStepFailed": "churn_daily_step_failed",
    "ChurnDailyRunMissing": "churn_daily_step_last_success_timestamp_seconds",
    "ChurnLandingDataMissing": "churn_landing_missing",
    "ChurnDataStale": "churn_landing_latest_day_timestamp_seconds",
    "ChurnChallengerErrors": "churn_challenger_errors_total",
    "ChurnShadowDropping": "churn_shadow_dropped_total",
    "ChurnPredictionLogLosing": "churn_prediction_log_records_total",
    "ChurnJobFailed": "kube_job_failed",
    "ChurnRedisMemoryHigh": "redis_memory_used_bytes",
}
# Alerts whose metric missing altogether is itself the problem; the others stay quiet without it.
FIRES_WHEN_ABSENT = {"ChurnApiDown", "ChurnModelTooOld", "ChurnBatchScoringMissed", "ChurnDailyRunMissing"}
# Gauges every API replica reports alike (and the reload counter every replica moves at once).
REPLICATED = {"ChurnModelTooOld", "ChurnDriftDetected", "ChurnBatchScoringMissed", "ChurnModelReloadFailed"}
AGGREGATIONS = "sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values"


def _rules() -> dict[str, dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def _series(case: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """(metric name, labels) of every input series of a unit-test case."""
    out = []
    for s in case.get("input_series", []):
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?", s["series"].strip())
        assert m, s["series"]
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out.append((m.group(1), labels))
    return out


def _is(series: tuple[str, dict[str, str]], selector: str) -> bool:
    name, labels = series
    sel_name, _, matchers = selector.partition("{")
    return name == sel_name and all(labels.get(k) == v for k, v in re.findall(r'(\w+)="([^"]*)"', matchers))


def _evals(alert: str) -> list[tuple[list[tuple[str, dict[str, str]]], list[dict]]]:
    """(input series, expected alerts) of every unit-test evaluation of ``alert``."""
    out = []
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        series = _series(case)
        out += [(series, t.get("exp_alerts") or []) for t in case.get("alert_rule_test", []) if t["alertname"] == alert]
    return out


# ---- promtool ----------------------------------------------------------------------------------
def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    proc = run([promtool, "check", "rules", str(ALERTS)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_test_rules() -> None:
    promtool = require_tool("promtool")
    proc = run([promtool, "test", "rules", ALERTS_TEST.name], cwd=ALERTS_TEST.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- the rules ---------------------------------------------------------------------------------
def test_required_alerts_and_thresholds() -> None:
    rules = _rules()
    assert rules.keys() == METRIC.keys(), rules.keys() ^ METRIC.keys()
    for alert, metric in METRIC.items():
        assert re.search(rf"\b{re.escape(metric)}", rules[alert]["expr"]), alert
    assert "histogram_quantile(0.99" in rules["ChurnApiHighLatencyP99"]["expr"]
    assert re.search(r">\s*0\.1\b", rules["ChurnApiHighLatencyP99"]["expr"])
    assert re.search(r"==\s*1\b", rules["ChurnDriftDetected"]["expr"])
    assert re.search(r">\s*7\s*\*\s*86400", rules["ChurnModelTooOld"]["expr"])
    scoring = r"max by \(namespace\) \(churn_batch_scoring_last_success_timestamp_seconds\)"
    assert re.search(rf"time\(\)\s*-\s*{scoring}\s*>\s*26\s*\*\s*3600", rules["ChurnBatchScoringMissed"]["expr"])
    assert 'result="failed"' in rules["ChurnModelReloadFailed"]["expr"]
    assert 'condition="true"' in rules["ChurnJobFailed"]["expr"]
    assert 'table="events"' in rules["ChurnDataStale"]["expr"]
    down = rules["ChurnApiDown"]["expr"]
    assert re.search(r"\(up\{job=\"churn-api\"\}\)\s*==\s*0", down) and 'absent(up{job="churn-api"})' in down


def test_every_aggregation_keeps_the_namespace() -> None:
    """Staging and production never mix: every aggregation groups by namespace (or keeps it)."""
    for alert, rule in _rules().items():
        expr = rule["expr"]
        found = list(re.finditer(rf"\b({AGGREGATIONS})\b\s*(by|without)?\s*(\([^()]*\))?\s*\(", expr))
        assert found, f"{alert}: no aggregation by namespace (replicas would each fire)"
        for m in found:
            clause, labels = m.group(2), re.findall(r"\w+", m.group(3) or "")
            assert (clause == "by" and "namespace" in labels) or (clause == "without" and "namespace" not in labels), (
                f"{alert}: `{m.group(0)}` drops the namespace"
            )


def test_rules_select_the_api_by_its_fixed_job_label() -> None:
    for alert, rule in _rules().items():
        for labels in re.findall(r"\bup\{([^}]*)\}", rule["expr"]):
            assert labels == f'job="{API_JOB}"' or labels.startswith(f'job="{API_JOB}"'), (alert, labels)


def test_alert_metrics_are_in_the_contract() -> None:
    used = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for r in _rules().values()
        for m in re.findall(r"\bchurn_[a-z_]+", r["expr"])
    }
    assert used <= contract_metrics(), used - contract_metrics()


# ---- what the unit tests cover -----------------------------------------------------------------
def test_every_alert_fires_and_stays_quiet() -> None:
    for alert in _rules():
        evals = _evals(alert)
        assert [e for e in evals if e[1]], f"{alert}: no unit-test case where it fires"
        assert [e for e in evals if not e[1]], f"{alert}: no unit-test case where it stays quiet"


def test_every_alert_is_tested_without_its_metric() -> None:
    for alert, metric in METRIC.items():
        absent = [exp for series, exp in _evals(alert) if not any(_is(s, metric) for s in series)]
        assert absent, f"{alert}: no unit-test case without {metric}"
        if alert in FIRES_WHEN_ABSENT:
            assert any(absent), f"{alert} must fire when {metric} is missing"
        else:
            assert not any(absent), f"{alert} must stay quiet without {metric}"


def test_alerts_fire_per_namespace() -> None:
    """Each alert has a case with two namespaces in which only one fires, naming its namespace."""
    for alert in _rules():
        ok = False
        for series, exp in _evals(alert):
            spaces = {labels["namespace"] for _, labels in series if "namespace" in labels}
            fired = {a["exp_labels"].get("namespace") for a in exp}
            if exp and None not in fired and len(spaces) >= 2 and fired < spaces:
                ok = True
        assert ok, f"{alert}: no case where one namespace fires and another stays quiet"


def test_replicated_metrics_fire_once() -> None:
    """Three replicas reporting the same gauge in one namespace make one alert, not three."""
    for alert in REPLICATED:
        metric = METRIC[alert]
        ok = False
        for series, exp in _evals(alert):
            pods: dict[str, set[str]] = {}
            for name, labels in series:
                if _is((name, labels), metric) and "pod" in labels:
                    pods.setdefault(labels["namespace"], set()).add(labels["pod"])
            for ns, replicas in pods.items():
                if len(replicas) >= 3 and [a["exp_labels"].get("namespace") for a in exp] == [ns]:
                    ok = True
        assert ok, f"{alert}: no case where three replicas of one namespace fire exactly once"


# ---- the daily run (Pushgateway) -----------------------------------------------------------------
DAILY = {
    "ChurnDailyStepFailed": "churn_daily_step_failed",
    "ChurnDailyRunMissing": "churn_daily_step_last_success_timestamp_seconds",
    "ChurnLandingDataMissing": "churn_landing_missing",
    "ChurnDataStale": "churn_landing_latest_day_timestamp_seconds",
}


def test_daily_run_alerts() -> None:
    rules = _rules()
    for alert, metric in DAILY.items():
        expr = rules[alert]["expr"]
        assert metric in expr and 'job="churn_daily"' in expr, alert
    missing = rules["ChurnDailyRunMissing"]["expr"]
    assert "absent(" in missing and 'step="housekeeping"' in missing
    assert re.search(r">\s*26\s*\*\s*3600", missing)
    assert re.search(r"==\s*1\b", rules["ChurnDailyStepFailed"]["expr"])
    assert re.search(r"==\s*1\b", rules["ChurnLandingDataMissing"]["expr"])


# ---- what the chart gives Prometheus -------------------------------------------------------------
def test_service_monitor_gives_the_api_the_job_label_the_rules_select(rendered: dict[str, Rendered]) -> None:
    r = rendered["all-features"]
    monitors = {sm["metadata"]["labels"]["app.kubernetes.io/component"]: sm for sm in r.of_kind("ServiceMonitor")}
    api = monitors["api"]
    for ep in api["spec"]["endpoints"]:
        assert {"action": "replace", "targetLabel": "job", "replacement": API_JOB} in ep.get("relabelings", [])


def test_selector_labels_default_to_kube_prometheus_stack(rendered: dict[str, Rendered]) -> None:
    """ServiceMonitors and PrometheusRule carry the label kube-prometheus-stack selects on."""
    for case in ("all-features", "staging", "production"):
        r = rendered[case]
        objs = [*r.of_kind("ServiceMonitor"), *r.of_kind("PrometheusRule")]
        assert len(objs) == 3, case  # API and Pushgateway ServiceMonitors, the PrometheusRule
        for obj in objs:
            assert obj["metadata"]["labels"].get("release") == "kube-prometheus-stack", (case, obj["kind"])
    env = values_for("production")["metrics"]["prometheusRule"]["labels"]
    assert rendered["production"].one("PrometheusRule")["metadata"]["labels"].items() >= env.items()


def test_selector_labels_are_configurable() -> None:
    proc = helm_template(
        [
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.pushgateway.enabled=true",
            "--set",
            "metrics.serviceMonitor.labels.release=prom,metrics.prometheusRule.labels.release=prom",
            "--set",
            "metrics.prometheusRule.labels.role=alert-rules",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    r = Rendered("override", proc.stdout)
    monitors = r.of_kind("ServiceMonitor")
    assert len(monitors) == 2
    for sm in monitors:
        assert sm["metadata"]["labels"]["release"] == "prom"
    rule = r.one("PrometheusRule")["metadata"]["labels"]
    assert rule["release"] == "prom" and rule["role"] == "alert-rules"
