"""A lab process's /metrics, read as Prometheus reads it: prometheus_client's own text parser."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape(url: str) -> Iterator[Sample]:
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    for family in text_string_to_metric_families(response.text):
        yield from family.samples


def value(url: str, name: str, **labels: str) -> float | None:
    """The first sample named ``name`` carrying ``labels`` (others may differ); None if none."""
    for sample in scrape(url):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


def samples(url: str, name: str) -> list[Sample]:
    return [s for s in scrape(url) if s.name == name]
