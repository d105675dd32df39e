"""Prometheus metrics of the API, on a per-app :class:`CollectorRegistry`.

Names are fixed by ``docs/contracts.md`` (alerts and the Grafana dashboard use them). Labelled
children are resolved once and cached, so a request costs a handful of dict lookups and
``observe``/``inc`` calls, no label formatting.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# Fine-grained at the low end, where the p99 target of /predict lies (README).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.0075, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
READ_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
PROBABILITY_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 21))  # 0.05 … 1.0
FEATURE_AGE_BUCKETS = (
    3600, 6 * 3600, 12 * 3600, 86400, 1.5 * 86400, 2 * 86400, 3 * 86400, 7 * 86400, 30 * 86400,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST
# No ``*_created`` series: they double the exposition size and nothing here uses them.
disable_created_metrics()


def _in_process_values() -> None:
    """Keep metric values in process memory.

    Importing ``feast.metrics`` (Feast's feature server, materialization tracking) sets
    ``PROMETHEUS_MULTIPROCESS_DIR`` and, if prometheus_client is imported after it, switches every
    metric of the process to file-backed values keyed by name and labels — so two apps' registries
    would share values (and the directory vanishes when Feast's owner process exits). The API keeps
    one registry per app and one worker per pod (scale with replicas), so values stay in memory.
    """
    if values.ValueClass is not values.MutexValue:
        values.ValueClass = values.MutexValue


class ApiMetrics:
    """Every metric the API exports, registered on ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        _in_process_values()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "churn_http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.http_duration = Histogram(
            "churn_http_request_duration_seconds", "HTTP request latency (server side).",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.prediction_probability = Histogram(
            "churn_prediction_probability", "Predicted churn probabilities.",
            buckets=PROBABILITY_BUCKETS, registry=r,
        )  # fmt: skip
        self.predictions = Counter("churn_predictions", "Predictions by risk tier.", ["tier"], registry=r)
        self.online_read = Histogram(
            "churn_online_read_seconds", "Online feature store read latency (one call per request).",
            buckets=READ_BUCKETS, registry=r,
        )  # fmt: skip
        self.online_read_errors = Counter(
            "churn_online_read_errors", "Online feature store reads that failed (store unreachable).", registry=r
        )
        self.model_info = Info("churn_model", "The model currently serving.", registry=r)
        self.model_age = Gauge("churn_model_age_seconds", "Seconds since the serving model was trained.", registry=r)
        self.feature_age = Histogram(
            "churn_feature_age_seconds", "Age of the feature rows used for predictions.",
            buckets=FEATURE_AGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_reload = Counter("churn_model_reload", "Model (re)load attempts by result.", ["result"], registry=r)
        for result in ("success", "failed", "rejected", "unchanged"):
            self.model_reload.labels(result=result)
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._tier_children: dict[str, Counter] = {}

    # --- hot path helpers ------------------------------------------------------------------------
    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._http_children.get(key)
        if children is None:
            children = (
                self.http_requests.labels(route=route, method=method, status=str(status)),
                self.http_duration.labels(route=route, method=method),
            )
            self._http_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_prediction(self, probability: float, tier: str) -> None:
        child = self._tier_children.get(tier)
        if child is None:
            child = self._tier_children[tier] = self.predictions.labels(tier=tier)
        child.inc()
        self.prediction_probability.observe(probability)

    def set_model(self, version: str | None, kind: str = "", age: Callable[[], float] | None = None) -> None:
        self.model_info.info({"version": version or "none", "kind": kind})
        self.model_age.set_function(age or (lambda: float("nan")))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def monotonic() -> float:
    return time.perf_counter()
