"""The embedded runtime's SGLang-compatible load view, without a server (runtime/loads.py,
runtime/sglang_metrics.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from sloserve.runtime.loads import LoadsQueryError, LoadTracker, RateWindow, loads_prometheus, select
from sloserve.runtime.sglang_metrics import ITL_BUCKETS_S, BulkHistogram, chunk_gaps_s


def state(replica: int, prompt: int, out: int):
    return SimpleNamespace(replica=replica, prompt_ids=[1] * prompt, num_out=out)


def test_snapshot_splits_running_and_waiting_per_replica():
    tracker = LoadTracker(dp_size=2, block_size=16, kv_tokens=1024)
    states = [state(0, 100, 5), state(0, 40, 0), state(1, 30, 0), state(-1, 50, 0)]  # -1: not routed yet
    stats = {0: {"kv_used_blocks": 8, "kv_capacity_blocks": 64}}
    r0, r1 = tracker.snapshot(states, stats, now_s=0.0)
    assert (r0["num_running_reqs"], r0["num_waiting_reqs"], r0["num_waiting_uncached_tokens"]) == (1, 1, 40)
    assert (r0["num_used_tokens"], r0["max_total_num_tokens"], r0["token_usage"]) == (128, 1024, 0.125)
    assert r0["num_total_tokens"] == 168 and r0["queues"]["waiting"] == 1
    assert (r1["num_running_reqs"], r1["num_waiting_reqs"], r1["max_total_num_tokens"]) == (0, 1, 1024)


def test_gen_throughput_counts_tokens_of_ended_requests():
    tracker = LoadTracker(dp_size=1, block_size=16, kv_tokens=1024)
    live = state(0, 10, 20)
    tracker.snapshot([live], {}, now_s=0.0)
    live.num_out = 40
    tracker.request_done(live, {"type": "length"}, 0)  # it ends: its 40 tokens stay counted
    (load,) = tracker.snapshot([], {}, now_s=2.0)
    assert load["gen_throughput"] == 10.0


def test_rate_window_keeps_about_its_window():
    w = RateWindow(window_s=5.0)
    assert w.rate(0.0, 0) == 0.0
    for t in range(1, 21):
        rate = w.rate(float(t), 100 * t)
    assert rate == 100.0 and w.samples[0][0] >= 14.0  # old samples dropped
    assert w.rate(21.0, 0) == 0.0  # a count that went back never gives a negative rate


def test_include_sections_follow_sglang():
    load = {"dp_rank": 0, "num_used_tokens": 3, "queues": {"waiting": 1}, "disaggregation": {"mode": "null"}}
    assert select(load, None) == load and select(load, {"all"}) == load
    assert select(load, {"core"}) == {"dp_rank": 0, "num_used_tokens": 3}
    assert select(load, {"core", "disagg"}) == {"dp_rank": 0, "num_used_tokens": 3, "disaggregation": {"mode": "null"}}
    with pytest.raises(LoadsQueryError, match="bogus"):
        select(load, {"bogus"})


def test_prometheus_format_names_and_skips_non_numbers():
    loads = [{"dp_rank": 1, "token_usage": 0.5, "decode_moments": None, "disaggregation": {"mode": "null", "x": 2}}]
    text = loads_prometheus(loads)
    assert 'sglang_token_usage{dp_rank="1"} 0.5' in text and 'sglang_disagg_x{dp_rank="1"} 2' in text
    assert "decode_moments" not in text and "mode" not in text and "sglang_dp_rank" not in text


def test_chunk_gaps_spread_each_chunk_over_its_tokens():
    # first token at 1.0; then one token at 1.5; then three tokens together at 2.1
    gaps = chunk_gaps_s([1.0, 1.5, 2.1, 2.1, 2.1])
    np.testing.assert_allclose(gaps, [0.5, 0.2, 0.2, 0.2])
    assert chunk_gaps_s([3.0]).size == 0 and chunk_gaps_s([2.0, 2.0]).size == 0


def test_bulk_histogram_matches_prometheus_histogram():
    values = np.array([0.001, 0.002, 0.0021, 0.05, 0.1, 7.0, 9.0])
    labels = {"model_name": "m", "engine_type": "unified"}
    ours = CollectorRegistry()
    bulk = BulkHistogram("x_seconds", "doc", labels, ITL_BUCKETS_S)
    ours.register(bulk)
    bulk.observe_many(values)
    ref = CollectorRegistry()
    hist = Histogram("x_seconds", "doc", list(labels), buckets=ITL_BUCKETS_S, registry=ref)
    for v in values:
        hist.labels(**labels).observe(v)

    def lines(reg):
        return sorted(line for line in generate_latest(reg).decode().splitlines() if "_created" not in line)

    assert lines(ours) == lines(ref)
