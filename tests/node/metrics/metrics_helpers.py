"""Shared pieces of the metrics tests: a scrape read back with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from orc.node.metrics import NodeMetrics


def scrape(metrics: NodeMetrics, accept: str | None = None) -> dict[str, Metric]:
    """The `/metrics` body as Prometheus reads it: families by name (counters without `_total`)."""
    body, _ = metrics.render(accept)
    return {family.name: family for family in text_string_to_metric_families(body.decode("utf-8"))}


def value(metrics: NodeMetrics, sample: str, **labels: str) -> float | None:
    """One sample's value in a parsed scrape (None when absent), e.g. `orc_runs_total`, status="failed"."""
    for family in scrape(metrics).values():
        for found in family.samples:
            if found.name == sample and found.labels == labels:
                return found.value
    return None


def samples(metrics: NodeMetrics, sample: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample named `sample` in a parsed scrape, by its sorted labels."""
    return {tuple(sorted(found.labels.items())): found.value
            for family in scrape(metrics).values() for found in family.samples if found.name == sample}
