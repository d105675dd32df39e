"""The batch jobs' Prometheus textfiles (batch scoring, drift, interventions report) as one collector.

The jobs write their metrics in the text exposition format next to their outputs. Finished Jobs
cannot be scraped, so the metrics travel one of two ways, never both: on one machine (a local
data dir) the API serves the latest files at scrape time; in a cluster (object storage) the daily
run pushes them to the Pushgateway with its step metrics (``jobs.daily_metrics``), once however
many API replicas run. This is what the "drift detected" and "batch scoring missed" alerts read.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from churn.layout import DRIFT_METRICS, INTERVENTION_METRICS
from churn.settings import Settings


def _latest_date(pointer: Path, key: str) -> dt.date | None:
    """The date a ``latest.json`` pointer names; None when absent or hand-edited into nonsense."""
    try:
        value = json.loads(pointer.read_text()).get(key)
        return dt.date.fromisoformat(value) if isinstance(value, str) else None
    except (OSError, ValueError, AttributeError):  # a broken pointer must never break /metrics
        return None


class JobMetricsCollector(Collector):
    """Yields the metric families of the newest scoring and drift textfiles (if any)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def files(self) -> list[Path]:
        layout = self.settings.layout
        out = [layout.scoring_metrics]
        day = _latest_date(layout.drift_latest, "date")
        if day is not None:
            out.append(layout.drift(day) / DRIFT_METRICS)
        since = _latest_date(layout.intervention_reports_latest, "since")
        if since is not None:
            out.append(layout.intervention_report(since) / INTERVENTION_METRICS)
        return [p for p in out if p.is_file()]

    def collect(self) -> Iterator:
        for path in self.files():
            try:
                text = path.read_text()
                families = list(text_string_to_metric_families(text))
            except (OSError, ValueError):
                continue  # a job mid-write or a broken file must never break the API's /metrics
            yield from families
