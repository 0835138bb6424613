"""Gateway compatibility of the SGLang backend: with the plugin installed, SGLang's own
``/v1/loads`` and SGLang-named Prometheus series still follow the load, and sloserve's per-tier
series are served beside them (the launcher adds ``--enable-metrics``)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2e_helpers import REQUEST_S, generate

from gateway_probe import loads, samples

pytestmark = pytest.mark.slow
REQUESTS = 8
OUTPUT_TOKENS = 160  # long enough for SGLang's decode-stats ticks (every 40 steps) to publish gauges


def lengths(finished: dict[tuple, float]) -> float:
    """Requests that ended at their max_new_tokens, over every tier."""
    return sum(v for k, v in finished.items() if dict(k)["finish"] == "length")


def test_plugin_keeps_sglang_loads_schema(plain, plugin):
    ours, theirs = loads(plugin), loads(plain)
    assert set(ours) == set(theirs) and len(ours["loads"]) == len(theirs["loads"]) == 1
    assert set(ours["loads"][0]) == set(theirs["loads"][0])
    assert "num_used_tokens" in loads(plugin, "?include=core")["loads"][0]


def test_loads_metrics_and_tier_series_follow_the_load_on_two_ranks(dp2):
    assert [x["dp_rank"] for x in loads(dp2)["loads"]] == [0, 1]
    finished_before = lengths(samples(dp2, "sloserve_requests_finished_total"))
    admitted_before = sum(samples(dp2, "sloserve_admissions_total").values())
    requests_before = sum(samples(dp2, "sglang:num_requests_total").values())
    seen = {"running": False, "used": False, "running_metric": False}

    def one(i: int):
        return generate(dp2, text=f"gateway {i} " * 10, max_new_tokens=OUTPUT_TOKENS, custom={"slo_tpot_ms": 1000.0})

    with ThreadPoolExecutor(REQUESTS) as pool:
        futures = [pool.submit(one, i) for i in range(REQUESTS)]
        deadline = time.monotonic() + REQUEST_S
        while not all(seen.values()) and not all(f.done() for f in futures) and time.monotonic() < deadline:
            body = loads(dp2, "?include=core")["loads"]
            seen["running"] |= sum(x["num_running_reqs"] for x in body) >= 1
            seen["used"] |= sum(x["num_used_tokens"] for x in body) > 0
            seen["running_metric"] |= sum(samples(dp2, "sglang:num_running_reqs").values()) >= 1
            time.sleep(0.2)
        results = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    assert all(seen.values()), seen
    ranks = {dict(k).get("dp_rank") for k in samples(dp2, "sglang:token_usage")}
    assert ranks == {"0", "1"}
    # one admission and one finish per request, summed over both ranks' scheduler processes
    assert lengths(samples(dp2, "sloserve_requests_finished_total")) == finished_before + REQUESTS
    assert sum(samples(dp2, "sloserve_admissions_total").values()) == admitted_before + REQUESTS
    assert sum(samples(dp2, "sglang:num_requests_total").values()) == requests_before + REQUESTS
    assert sum(samples(dp2, "sloserve_ttft_seconds_count").values()) >= REQUESTS
