"""The batch jobs' Prometheus textfiles (batch scoring, drift) as one collector.

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

from churn.layout import DRIFT_METRICS
from churn.settings import Settings


class JobMetricsCollector(Collector):
    """Yields the metric families of the newest scoring and drift textfiles (if any)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def files(self) -> list[Path]:
        layout = self.settings.layout
        out = [layout.scoring_metrics]
        latest = layout.drift_latest
        try:
            date = json.loads(latest.read_text()).get("date")
        except (OSError, ValueError):
            date = None
        try:
            day = dt.date.fromisoformat(date) if isinstance(date, str) else None
        except ValueError:  # a hand-edited latest.json must not break /metrics
            day = None
        if day is not None:
            out.append(layout.drift(day) / DRIFT_METRICS)
        return [p for p in out if p.is_file()]

    def collect(self) -> Iterator:
        for path in self.files():
            try:
                text = path.read_text()
                families = list(text_string_to_metric_families(text))
            except (OSError, ValueError):
                continue  # a job mid-write or a broken file must never break the API's /metrics
            yield from families
