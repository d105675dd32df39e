"""Re-export the batch jobs' Prometheus textfiles on the API's /metrics.

The jobs (batch scoring, drift) run as Kubernetes CronJobs and write their metrics in the text
exposition format next to their outputs on the shared volume. Pods of finished Jobs cannot be
scraped and the volume is not a node's textfile directory, so the API — which mounts the same
volume and is scraped anyway — serves the latest of those files at scrape time. This is what the
"drift detected" and "batch scoring missed" alerts read.
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
