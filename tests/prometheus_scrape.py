"""Scrape a Prometheus /metrics endpoint over HTTP and index its samples."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """Samples of one scrape, looked up by sample name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                self._samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        """Return the sample with exactly these labels, or None when absent."""
        return self._samples.get((name, frozenset(labels.items())))

    def names(self) -> set[str]:
        """Return every sample name in the scrape."""
        return {name for name, _ in self._samples}


def scrape(port: int) -> Scrape:
    """GET http://127.0.0.1:PORT/metrics and parse it.

    Raises:
        httpx.HTTPStatusError: the endpoint returned an error status.
    """
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    response.raise_for_status()
    return Scrape(response.text)
