"""Alert rules: promtool check + unit tests on the very file the PrometheusRule embeds."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.contracts import contract_metrics
from tests.support.env import require_tool
from tests.support.tools import CHART, run

pytestmark = pytest.mark.deploy

ALERTS = CHART / "files" / "alerts.yaml"
ALERTS_TEST = CHART / "files" / "alerts_test.yaml"
REQUIRED = {
    "ChurnApiHighErrorRate": "churn_http_requests_total",
    "ChurnApiHighLatencyP99": "churn_http_request_duration_seconds_bucket",
    "ChurnDriftDetected": "churn_drift_detected",
    "ChurnModelTooOld": "churn_model_age_seconds",
    "ChurnBatchScoringMissed": "churn_batch_scoring_last_success_timestamp_seconds",
}


def _rules() -> dict[str, dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    proc = run([promtool, "check", "rules", str(ALERTS)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_test_rules() -> None:
    promtool = require_tool("promtool")
    proc = run([promtool, "test", "rules", ALERTS_TEST.name], cwd=ALERTS_TEST.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_required_alerts_and_thresholds() -> None:
    rules = _rules()
    assert REQUIRED.keys() <= rules.keys()
    for alert, metric in REQUIRED.items():
        assert metric in rules[alert]["expr"], alert
    assert "histogram_quantile(0.99" in rules["ChurnApiHighLatencyP99"]["expr"]
    assert re.search(r">\s*0\.1\b", rules["ChurnApiHighLatencyP99"]["expr"])
    assert re.search(r"==\s*1\b", rules["ChurnDriftDetected"]["expr"])
    assert re.search(r">\s*7\s*\*\s*86400", rules["ChurnModelTooOld"]["expr"])
    assert re.search(
        r"time\(\)\s*-\s*churn_batch_scoring_last_success_timestamp_seconds\s*>\s*26\s*\*\s*3600",
        rules["ChurnBatchScoringMissed"]["expr"],
    )


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        t["alertname"]
        for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert _rules().keys() <= tested, f"alerts without a firing unit test: {_rules().keys() - tested}"


def test_alert_metrics_are_in_the_contract() -> None:
    used = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for r in _rules().values()
        for m in re.findall(r"\bchurn_[a-z_]+", r["expr"])
    }
    assert used <= contract_metrics(), used - contract_metrics()


# ---- the daily run (Pushgateway) -----------------------------------------------------------------
DAILY = {
    "ChurnDailyStepFailed": "churn_daily_step_failed",
    "ChurnDailyRunMissing": "churn_daily_step_last_success_timestamp_seconds",
    "ChurnLandingDataMissing": "churn_landing_missing",
}


def _tests_of(alert: str) -> list[tuple[list[str], list]]:
    """(input series, expected alerts) of every unit-test evaluation of ``alert``."""
    out = []
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        series = [s["series"] for s in case.get("input_series", [])]
        out += [(series, t.get("exp_alerts", [])) for t in case.get("alert_rule_test", []) if t["alertname"] == alert]
    return out


def test_daily_run_alerts() -> None:
    rules = _rules()
    for alert, metric in DAILY.items():
        expr = rules[alert]["expr"]
        assert metric in expr and 'job="churn_daily"' in expr, alert
        tests = _tests_of(alert)
        assert [t for t in tests if t[1]], f"{alert}: no firing case"
        assert [t for t in tests if not t[1] and any(metric in s for s in t[0])], f"{alert}: no quiet case"
        # The metric entirely absent: the run-missing alert fires, the others stay quiet.
        absent = [exp for series, exp in tests if not any(metric in s for s in series)]
        assert absent, f"{alert}: no case without the metric"
        if alert == "ChurnDailyRunMissing":
            assert any(absent), "an absent metric must fire ChurnDailyRunMissing"
        else:
            assert not any(absent), f"{alert} must stay quiet without its metric"
    missing = rules["ChurnDailyRunMissing"]["expr"]
    assert "absent(" in missing and 'step="housekeeping"' in missing
    assert re.search(r">\s*26\s*\*\s*3600", missing)
    assert re.search(r"==\s*1\b", rules["ChurnDailyStepFailed"]["expr"])
    assert re.search(r"==\s*1\b", rules["ChurnLandingDataMissing"]["expr"])
