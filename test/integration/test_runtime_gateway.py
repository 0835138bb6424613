"""Gateway compatibility of the embedded runtime: ``/v1/loads`` in SGLang's schema and
SGLang-named Prometheus series, following real load on a real server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway_probe import loads, samples

MODEL = "opt-13b-tp2-a100"
PROMPT_TOKENS = 900  # two prompts fill a replica's 2048-token pool: the third one waits
OUTPUT_TOKENS = 200
REQUESTS = 6
DEADLINE_S = 120.0
# what SGLang's model gateway deserialises from each loads[] entry (smg's SchedulerLoadSnapshot)
INT_FIELDS = ("dp_rank", "num_running_reqs", "num_waiting_reqs", "num_used_tokens", "max_total_num_tokens")
FLOAT_FIELDS = ("token_usage", "gen_throughput", "cache_hit_rate", "utilization")


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory(
        "--model", MODEL, "--policy", "fcfs", "--dp-size", "2", "--kv-tokens", "2048", "--max-seq-len", "2048"
    )


def generate(server) -> httpx.Response:
    body = {
        "input_ids": [i % 200 + 1 for i in range(PROMPT_TOKENS)],
        "sampling_params": {"max_new_tokens": OUTPUT_TOKENS, "ignore_eos": True},
    }
    return httpx.post(server.url + "/generate", json=body, timeout=DEADLINE_S)


def test_idle_loads_have_sglang_schema(server):
    body = loads(server)
    assert isinstance(body["timestamp"], str) and isinstance(body["version"], str)
    assert [load["dp_rank"] for load in body["loads"]] == [0, 1]
    for load in body["loads"]:
        assert all(type(load[k]) is int for k in INT_FIELDS), load
        assert all(type(load[k]) is float for k in FLOAT_FIELDS), load
        assert load["num_running_reqs"] == load["num_waiting_reqs"] == load["num_used_tokens"] == 0
        assert load["max_total_num_tokens"] == 2048 and load["queues"]["waiting"] == 0
        assert load["disaggregation"]["mode"] == "null"
    core = loads(server, "?include=core&dp_rank=1")["loads"]
    assert [load["dp_rank"] for load in core] == [1] and "queues" not in core[0]
    assert loads(server, "?dp_rank=7")["loads"] == []
    bad = httpx.get(server.url + "/v1/loads?include=core,bogus", timeout=10)
    assert bad.status_code == 400 and "bogus" in bad.json()["detail"]
    text = httpx.get(server.url + "/v1/loads?format=prometheus&include=core", timeout=10).text
    assert 'sglang_num_running_reqs{dp_rank="1"} 0' in text and "sglang_queues_waiting" not in text


def _busy_view(server) -> dict:
    """What the gateway sees now: summed over replicas, from /v1/loads and /metrics."""
    body = loads(server, "?include=core")["loads"]
    return {
        "running": sum(x["num_running_reqs"] for x in body),
        "waiting": sum(x["num_waiting_reqs"] for x in body),
        "used": sum(x["num_used_tokens"] for x in body),
        "throughput": sum(x["gen_throughput"] for x in body),
        "consistent": all(
            x["num_total_tokens"] == x["num_used_tokens"] + x["num_waiting_uncached_tokens"]
            and x["token_usage"] == round(x["num_used_tokens"] / x["max_total_num_tokens"], 4)
            for x in body
        ),
        "queue_metric": sum(samples(server, "sglang:num_queue_reqs").values()),
        "running_metric": sum(samples(server, "sglang:num_running_reqs").values()),
        "usage_metric": max(samples(server, "sglang:token_usage").values()),
    }


def test_loads_and_sglang_metrics_follow_the_load(server):
    seen = {k: False for k in ("running", "waiting", "used", "throughput", "queue", "run_metric", "usage_metric")}
    with ThreadPoolExecutor(REQUESTS) as pool:
        futures = [pool.submit(generate, server) for _ in range(REQUESTS)]
        deadline = time.monotonic() + DEADLINE_S
        while not all(seen.values()) and not all(f.done() for f in futures) and time.monotonic() < deadline:
            view = _busy_view(server)
            assert view["consistent"], view
            seen["running"] |= view["running"] >= 1
            seen["waiting"] |= view["waiting"] >= 1  # a prompt that does not fit yet waits, no first token
            seen["used"] |= view["used"] >= PROMPT_TOKENS
            seen["throughput"] |= view["throughput"] > 0
            seen["queue"] |= view["queue_metric"] >= 1
            seen["run_metric"] |= view["running_metric"] >= 1
            seen["usage_metric"] |= view["usage_metric"] > 0
            time.sleep(0.05)
        results = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert all(seen.values()), seen
    idle = _busy_view(server)
    assert (idle["running"], idle["waiting"], idle["queue_metric"], idle["running_metric"]) == (0, 0, 0, 0)


def test_request_series_count_every_finished_request(server):
    label = (("engine_type", "unified"), ("is_streaming", "false"), ("model_name", MODEL))
    before = samples(server, "sglang:num_requests_total").get(label, 0.0)
    tokens_before = samples(server, "sglang:generation_tokens_total").get(label, 0.0)
    itl_before = sum(samples(server, "sglang:inter_token_latency_seconds_count").values())
    assert generate(server).status_code == 200
    assert samples(server, "sglang:num_requests_total")[label] == before + 1
    assert samples(server, "sglang:generation_tokens_total")[label] == tokens_before + OUTPUT_TOKENS
    assert samples(server, "sglang:prompt_tokens_total")[label] >= PROMPT_TOKENS
    assert samples(server, "sglang:time_to_first_token_seconds_count")[label] >= 1
    assert samples(server, "sglang:e2e_request_latency_seconds_count")[label] >= 1
    gaps = sum(samples(server, "sglang:inter_token_latency_seconds_count").values()) - itl_before
    assert 0 < gaps <= OUTPUT_TOKENS - 1  # one latency per token after the first chunk
    per_rank = samples(server, "sglang:max_total_num_tokens")
    assert {dict(k)["dp_rank"] for k in per_rank} == {"0", "1"} and set(per_rank.values()) == {2048.0}
    # sloserve's own per-tier series are still there, unchanged
    assert samples(server, "sloserve_requests_finished_total")
