"""What a gateway reads from a server (``/v1/loads``, ``/metrics``), for the e2e and integration tests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def loads(server, query: str = "", timeout_s: float = 30.0) -> dict:
    resp = httpx.get(server.url + "/v1/loads" + query, timeout=timeout_s)
    assert resp.status_code == 200, resp.text
    return resp.json()


def samples(server, name: str, timeout_s: float = 30.0) -> dict[tuple, float]:
    """``{sorted label items: value}`` of every sample called ``name`` on /metrics."""
    text = httpx.get(server.url + "/metrics", timeout=timeout_s).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }
