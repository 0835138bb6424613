"""SGLang 0.5.23 default scheduler: prefill-first, chunked prefill, new-token-ratio KV admission,
retraction. Hand-built cases with exact batches, using 1-token KV blocks like SGLang's page 1."""

from __future__ import annotations

import numpy as np
import pytest
from test_policy_common import PERF, assert_conserved, drive, make_sched, random_workload, req

from sloserve.core.plan import EventKind
from sloserve.sim.engine import SimulatedEngine


def batches(trace):
    return [tuple((i.request_id, i.num_tokens) for i in p.items) for p in trace.plans]


def step(sched, t):
    plan = sched.schedule(t)
    res = SimulatedEngine(PERF, np.random.default_rng(0)).execute(plan, sched.requests)
    events = sched.on_step_done(plan, res, t + res.step_s)
    return plan, events, t + res.step_s


def test_defaults_follow_sglang_0_5_23():
    c = make_sched("sglang").config
    assert (c.chunked_prefill_size, c.max_prefill_tokens, c.enable_mixed_chunk) == (8192, 16384, False)
    s = make_sched("sglang")
    assert s.init_ratio == pytest.approx(0.7) and s.min_ratio == pytest.approx(0.098)
    assert s.ratio_decay == pytest.approx((0.7 - 0.098) / 600)


def test_prefill_first_decodes_stall():
    sched = make_sched("sglang", block=1)
    got = batches(drive(sched, [req("d", 0.0, 100, 8), req("p", 0.1, 300, 2)]))
    k = got.index((("p", 300),))
    assert got[0] == (("d", 100),) and got[k - 1] == (("d", 1),) and got[k + 1] == (("d", 1), ("p", 1))


def test_chunked_prompt_keeps_the_engine_until_done_and_shares_its_last_chunk():
    sched = make_sched("sglang", {"chunked_prefill_size": 256}, block=1)
    requests = [req("d", 0.0, 50, 30), req("long", 0.1, 600, 2), req("short", 0.1, 100, 2)]
    got = batches(drive(sched, requests))
    k = got.index((("long", 256),))
    assert got[k + 1] == (("long", 256),)  # the decode of d waits the whole time
    assert got[k + 2] == (("long", 88), ("short", 100))  # next chunk first, then the queue
    assert got[k + 3] == (("d", 1), ("long", 1), ("short", 1))


def test_without_chunking_max_prefill_tokens_splits_batches_but_admits_a_lone_long_prompt():
    sched = make_sched("sglang", {"chunked_prefill_size": None, "max_prefill_tokens": 1000}, block=1)
    requests = [req("a", 0.0, 600, 2), req("b", 0.0, 600, 2), req("huge", 0.0, 2500, 2)]
    got = batches(drive(sched, requests))
    assert got[:3] == [(("a", 600),), (("b", 600),), (("huge", 2500),)]


def _one_running(options=None, kv_tokens=2000):
    sched = make_sched("sglang", options, kv_tokens=kv_tokens, block=1)
    sched.add(req("r1", 0.0, 100, 1000), 0.0)
    _, _, t = step(sched, 0.0)
    return sched, t


@pytest.mark.parametrize("prompt, admitted", [(1099, True), (1100, False)])
def test_admission_counts_running_requests_future_tokens_times_the_ratio(prompt, admitted):
    sched, t = _one_running()
    # free 1900; r1 expects 999 more tokens * 0.7 = 699.3; r2 needs prompt + 100 + one page.
    sched.add(req("r2", t, prompt, 100), t)
    plan, _, _ = step(sched, t)
    got = [(i.request_id, i.num_tokens) for i in plan.items]
    assert got == ([("r2", prompt)] if admitted else [("r1", 1)])
    assert sched.batch_is_full is (not admitted)


def test_ignore_eos_reserves_the_full_remaining_output():
    for ignore_eos, admitted in ((True, False), (False, True)):
        sched, t = _one_running({"ignore_eos": ignore_eos})
        sched.add(req("r2", t, 800, 100), t)  # 800 + 101 < 1900 - 999 * ratio only if ratio < 1
        plan, _, _ = step(sched, t)
        assert [i.request_id for i in plan.items] == (["r2"] if admitted else ["r1"])


def test_batch_full_blocks_prefill_until_a_running_request_leaves():
    sched, t = _one_running()
    r2 = req("r2", t, 1100, 100)
    sched.add(r2, t)
    finished_r1 = None
    for k in range(1100):
        plan, events, t = step(sched, t)
        if any(i.request_id == "r2" for i in plan.items):
            break
        if any(e.kind is EventKind.FINISHED and e.request_id == "r1" for e in events):
            finished_r1 = k
        # after ~10 decode steps the decayed ratio would let r2 in, but the batch stays full
        assert sched.batch_is_full or finished_r1 == k
    assert finished_r1 == 998 and k == 999
    assert sched.new_token_ratio == pytest.approx(sched.min_ratio)  # fully decayed meanwhile


def test_ratio_decays_per_decode_step_and_resets_when_idle():
    sched, t = _one_running()
    for _ in range(10):
        _, _, t = step(sched, t)
    assert sched.new_token_ratio == pytest.approx(0.7 - 10 * (0.7 - 0.098) / 600)
    sched.abort("r1", t)
    assert sched.schedule(t).is_empty
    assert sched.new_token_ratio == pytest.approx(0.7)


def test_retraction_order_and_new_ratio():
    # clip 1 makes admission optimistic: all three fit, then decodes run out of KV together.
    sched = make_sched("sglang", {"clip_max_new_tokens": 1}, kv_tokens=300, block=1)
    for r in (req("a", 0.0, 100, 100), req("b", 0.0, 80, 100), req("c", 0.0, 60, 100)):
        sched.add(r, 0.0)
    plan, _, t = step(sched, 0.0)
    assert [(i.request_id, i.num_tokens) for i in plan.items] == [("a", 100), ("b", 80), ("c", 60)]
    for _ in range(200):
        plan, _, t = step(sched, t)
        if plan.events:
            break
    # equal outputs: the longest prompt goes first; one retraction frees enough.
    assert [(e.kind, e.request_id) for e in plan.events] == [(EventKind.PREEMPTED, "a")]
    assert [i.request_id for i in plan.items] == ["c", "b"]  # batch filtered to keep order
    a = sched.requests["a"]
    assert a.num_computed_tokens == 0 and list(sched.waiting)[-1] == "a"
    kept = [sched.requests["b"], sched.requests["c"]]
    # the ratio is estimated before this step's tokens are counted
    expect = (sum(r.num_output_tokens - 1 for r in kept) + 20 * 2) / (200 + 1)
    assert sched.new_token_ratio == pytest.approx(min(1.0, expect))
    assert sched.stats()["num_retractions"] == 1


def test_retraction_prefers_keeping_requests_with_more_output():
    sched = make_sched("sglang", {"clip_max_new_tokens": 1}, kv_tokens=300, block=1)
    sched.add(req("old", 0.0, 50, 200), 0.0)
    _, _, t = step(sched, 0.0)
    for _ in range(5):
        _, _, t = step(sched, t)
    sched.add(req("young", t, 50, 200), t)
    for _ in range(200):
        plan, _, t = step(sched, t)
        if plan.events:
            break
    assert [e.request_id for e in plan.events] == ["young"]


def test_mixed_chunk_lets_decodes_ride_along():
    sched = make_sched("sglang", {"enable_mixed_chunk": True, "chunked_prefill_size": 256}, block=1)
    got = batches(drive(sched, [req("d", 0.0, 50, 30), req("p", 0.1, 400, 2)]))
    k = next(i for i, b in enumerate(got) if ("p", 255) in b)
    assert got[k] == (("p", 255), ("d", 1))  # the chunk budget leaves one token per decode


def test_max_running_requests_caps_the_batch():
    sched = make_sched("sglang", {"max_running_requests": 2}, block=1)
    requests = [req(f"r{k}", 0.0, 10, 5) for k in range(4)]
    trace = drive(sched, requests)
    assert all(len(p.items) <= 2 for p in trace.plans)
    assert_conserved(sched, requests, trace)


def test_conservation_with_retractions_on_a_heavy_workload():
    sched = make_sched("sglang", {"chunked_prefill_size": 512}, kv_tokens=5000)
    requests = random_workload(80, rate=30.0, seed=11)
    trace = drive(sched, requests)
    assert_conserved(sched, requests, trace)
    assert sched.stats()["num_retractions"] > 0


def test_a_request_that_can_never_pass_admission_is_refused_up_front():
    sched = make_sched("sglang", kv_tokens=300, block=1)
    assert sched.add(req("edge", 0.0, 200, 100), 0.0).reason.value == "too_long"  # 200+100+1 >= 300
    assert sched.add(req("ok", 0.0, 200, 98), 0.0).accepted
