"""The API re-exports the jobs' textfile metrics (drift, batch scoring) for the alerts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from churn.io import write_json_atomic, write_text_atomic
from churn.job_metrics import JobMetricsCollector
from tests.support.settings import make_settings


def test_latest_drift_and_scoring_metrics_are_served(tmp_path):
    settings = make_settings(tmp_path)
    registry = CollectorRegistry()
    registry.register(JobMetricsCollector(settings))
    assert generate_latest(registry) == b""  # nothing yet: nothing served, no error

    write_text_atomic(
        settings.predictions_dir / "metrics.prom",
        "# HELP churn_batch_scoring_last_success_timestamp_seconds Last success.\n"
        "# TYPE churn_batch_scoring_last_success_timestamp_seconds gauge\n"
        "churn_batch_scoring_last_success_timestamp_seconds 1.7e+09\n",
    )
    for date, value in [("2026-11-01", 0), ("2026-11-02", 1)]:
        write_text_atomic(
            settings.drift_dir / f"date={date}" / "metrics.prom",
            f"# HELP churn_drift_detected Drift.\n# TYPE churn_drift_detected gauge\nchurn_drift_detected {value}\n",
        )
    write_json_atomic(settings.drift_dir / "latest.json", {"date": "2026-11-02", "drift_detected": True})
    text = generate_latest(registry).decode()
    assert "churn_batch_scoring_last_success_timestamp_seconds 1.7e+09" in text
    assert "churn_drift_detected 1.0" in text and "churn_drift_detected 0.0" not in text

    (settings.drift_dir / "date=2026-11-02" / "metrics.prom").write_text("not { valid")
    assert "churn_drift_detected" not in generate_latest(registry).decode()  # broken file skipped


def test_latest_interventions_report_metrics_are_served(tmp_path):
    settings = make_settings(tmp_path)
    registry = CollectorRegistry()
    registry.register(JobMetricsCollector(settings))
    layout = settings.layout
    for since, value in [("2026-10-01", 0.01), ("2026-11-01", 0.04)]:
        write_text_atomic(
            layout.intervention_reports_dir / f"since={since}" / "metrics.prom",
            "# HELP churn_intervention_uplift Uplift.\n# TYPE churn_intervention_uplift gauge\n"
            f'churn_intervention_uplift{{action="support_outreach"}} {value}\n',
        )
    write_json_atomic(layout.intervention_reports_latest, {"since": "2026-11-01"})
    text = generate_latest(registry).decode()
    assert 'churn_intervention_uplift{action="support_outreach"} 0.04' in text and "0.01" not in text
    write_json_atomic(layout.intervention_reports_latest, {"since": "yesterday"})  # hand-edited: ignored
    assert "churn_intervention_uplift" not in generate_latest(registry).decode()
