"""SLO tagging through custom_params: resolution, reporting, attainment, overload admission."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import httpx
import pytest

from sloserve.core.scheduler import SCHEDULERS
from sloserve.perf import get_model

POLICY = os.environ.get("SLOSERVE_TEST_POLICY", "fcfs")
MODEL = "opt-13b-tp2-a100"
PERF = get_model(MODEL)


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("--model", MODEL, "--policy", POLICY, "--time-scale", "0.05")


def gen(server, text: str, max_new: int = 8, **custom) -> dict:
    r = httpx.post(
        server.url + "/generate",
        timeout=30,
        json={"text": text, "sampling_params": {"max_new_tokens": max_new, "custom_params": custom}},
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_slo_class_resolves_slowdown_against_the_perf_model(server):
    text = "p" * 300
    meta = gen(server, text, slo_class="chatbot")["meta_info"]
    assert meta["slo_class"] == "chatbot" and meta["slo_tpot_ms"] == 100.0
    assert meta["slo_ttft_ms"] == pytest.approx(5.0 * PERF.zero_load_prefill_s(300) * 1e3)
    meta = gen(server, text, slo_class="chatbot", slo_ttft_slowdown=2.0, slo_tpot_ms=40)["meta_info"]
    assert meta["slo_ttft_ms"] == pytest.approx(2.0 * PERF.zero_load_prefill_s(300) * 1e3)
    assert meta["slo_tpot_ms"] == 40
    assert gen(server, text, slo_ttft_ms=123.0)["meta_info"]["slo_ttft_ms"] == pytest.approx(123.0)


def test_thinking_segment_by_token_count(server):
    meta = gen(server, "think", 30, slo_think_tpot_ms=20, slo_tpot_ms=80, slo_think_tokens=10)["meta_info"]
    assert meta["slo_think_tpot_ms"] == 20 and meta["slo_think_tokens"] == 10 and meta["reasoning_tokens"] == 10
    # deadlines: 9 thinking tokens at 20 ms and 20 answer tokens at 80 ms after the first token
    expected = max(meta["ttft_deadline_ms"], meta["ttft_ms"]) + 1.05 * (9 * 20 + 20 * 80)
    assert meta["last_token_deadline_ms"] == pytest.approx(expected, rel=1e-6)


def test_thinking_ends_at_the_marker(server):
    out = gen(server, "reason", 40, slo_class="reasoning")
    meta = out["meta_info"]
    assert "</think>" in out["text"]
    # the synthetic model stops thinking half way: 20 tokens then the 8-byte marker
    assert meta["slo_think_tokens"] == 28 == meta["reasoning_tokens"]
    assert meta["slo_think_tpot_ms"] == 50.0 and meta["slo_tpot_ms"] == 100.0
    custom = gen(server, "reason", 40, slo_think_tpot_ms=30, slo_think_tokens="</think>")["meta_info"]
    assert custom["slo_think_tokens"] == 28


def test_stages_and_program_ids(server):
    final = gen(
        server, "tool", 5, slo_class="tool-calling", slo_stage="final", slo_program_id="prog-7", slo_stage_index=2
    )["meta_info"]
    assert final["slo_stage"] == "final" and final["slo_program_id"] == "prog-7"
    assert final["slo_tpot_ms"] == 100.0  # the final round's TPOT
    middle = gen(server, "tool", 5, slo_class="tool-calling", slo_stage="tool_call")["meta_info"]
    assert middle["slo_tpot_ms"] == 50.0
    thinking = gen(server, "r", 5, slo_class="reasoning", slo_stage="thinking")["meta_info"]
    assert thinking["slo_tpot_ms"] == 50.0 and thinking["slo_think_tpot_ms"] is None


def test_upstream_arrival_stamp_counts_in_ttft(server):
    meta = gen(server, "late", 3, slo_arrival_s=time.time() - 0.5, slo_ttft_ms=100)["meta_info"]
    assert meta["ttft_ms"] >= 500 and meta["slo_met"] is False


def test_impossible_slo_is_reported_missed_and_lowers_attainment(server):
    assert gen(server, "easy", 4, slo_ttft_ms=5000, slo_tpot_ms=1000)["meta_info"]["slo_met"] is True
    meta = gen(server, "hard " * 100, 4, slo_ttft_ms=0.001)["meta_info"]
    assert meta["slo_met"] is False and meta["ttft_ms"] > 0.001
    text = httpx.get(server.url + "/metrics", timeout=5).text
    value = float(next(line for line in text.splitlines() if line.startswith("sloserve_slo_attainment ")).split()[1])
    assert 0 < value < 1


needs_slos = pytest.mark.skipif("slos-serve" not in SCHEDULERS.names(), reason="slos-serve policy not registered")


async def burst(url: str, n: int, prompt_len: int, custom: dict) -> list[tuple[int, dict]]:
    async def one(s, i):
        async with s.post(
            url + "/generate",
            json={"text": "x" * prompt_len, "sampling_params": {"max_new_tokens": 30, "custom_params": custom}},
        ) as r:
            return r.status, await r.json()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        return await asyncio.gather(*(one(s, i) for i in range(n)))


@needs_slos
def test_overload_gets_429_with_reject_on_overload(server_factory):
    srv = server_factory("--model", MODEL, "--policy", "slos-serve", "--time-scale", "1", "--reject-on-overload")
    results = asyncio.run(burst(srv.url, 80, 2000, {"slo_class": "coder"}))
    statuses = [s for s, _ in results]
    assert statuses.count(429) > 0 and statuses.count(200) > 0
    assert set(statuses) <= {200, 429}
    for status, body in results:
        if status == 429:
            assert "not admitted" in body["error"]["message"]
        else:
            assert body["meta_info"]["tier"] == "slo" and body["meta_info"]["admission"] == "admitted"
    metrics = httpx.get(srv.url + "/metrics", timeout=5).text
    assert 'sloserve_admissions_total{outcome="rejected"' in metrics


@needs_slos
def test_overload_goes_best_effort_by_default(server_factory):
    # without expiry (tested in test_runtime_limits.py): a busy host may leave a best-effort
    # request unstarted past its deadline, and this test is about the tier, not the deadline
    srv = server_factory("--model", MODEL, "--policy", "slos-serve", "--time-scale", "0.1", "--no-best-effort-expiry")
    results = asyncio.run(burst(srv.url, 40, 2000, {"slo_class": "coder"}))
    assert all(status == 200 for status, _ in results)
    tiers = [body["meta_info"]["tier"] for _, body in results]
    assert "best_effort" in tiers and "slo" in tiers
    asked = httpx.post(
        srv.url + "/generate",
        timeout=30,
        json={"text": "be", "sampling_params": {"max_new_tokens": 3, "custom_params": {"slo_best_effort": True}}},
    ).json()
    assert asked["meta_info"]["tier"] == "best_effort"


def test_report_has_the_schema_the_sglang_plugin_reports_too(server):
    """One schema for both backends (test/e2e checks the plugin against the same keys)."""
    from sloserve.metrics.report import SLO_REPORT_KEYS

    meta = gen(server, "schema", 4, slo_tpot_ms=500)["meta_info"]
    assert set(SLO_REPORT_KEYS) <= set(meta)
    assert all(meta[k] is None or isinstance(meta[k], (str, int, float, bool)) for k in SLO_REPORT_KEYS)
    assert meta["engine"] == "simulated" and meta["slo_met"] in (True, False)
