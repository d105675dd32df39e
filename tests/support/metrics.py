"""Prometheus exposition text scraping."""

from __future__ import annotations

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics_of(text: str) -> Samples:
    """Prometheus exposition text → {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0.0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
