"""EDF over the next token deadline, under a token budget."""

from __future__ import annotations

import numpy as np
from test_policy_common import PERF, assert_conserved, drive, make_sched, random_workload, req

from sloserve.core.plan import EventKind
from sloserve.sim.engine import SimulatedEngine


def step(sched, t):
    plan = sched.schedule(t)
    res = SimulatedEngine(PERF, np.random.default_rng(0)).execute(plan, sched.requests)
    sched.on_step_done(plan, res, t + res.step_s)
    return plan, t + res.step_s


def items(plan):
    return [(i.request_id, i.num_tokens) for i in plan.items]


def test_earliest_ttft_deadline_goes_first_and_chunks_the_rest():
    sched = make_sched("edf", {"token_budget": 100})
    sched.add(req("lax", 0.0, 80, 3, ttft_s=10.0), 0.0)
    sched.add(req("urgent", 0.0, 80, 3, ttft_s=0.5), 0.0)
    plan, _ = step(sched, 0.0)
    assert items(plan) == [("urgent", 80), ("lax", 20)]


def test_a_decode_ahead_of_schedule_yields_to_an_urgent_prefill():
    sched = make_sched("edf", {"token_budget": 64})
    sched.add(req("d", 0.0, 10, 50, ttft_s=5.0, tpot_ms=1000.0), 0.0)  # banks slack fast
    t = 0.0
    for _ in range(3):
        _, t = step(sched, t)
    sched.add(req("p", t, 64, 2, ttft_s=0.2), t)
    plan, _ = step(sched, t)
    assert items(plan) == [("p", 64)]  # the decode's next deadline is seconds away


def test_a_decode_due_first_goes_before_a_lax_prefill():
    sched = make_sched("edf", {"token_budget": 64})
    sched.add(req("d", 0.0, 10, 50, ttft_s=0.1, tpot_ms=20.0), 0.0)
    _, t = step(sched, 0.0)
    sched.add(req("p", t, 200, 2, ttft_s=10.0), t)
    plan, _ = step(sched, t)
    assert items(plan) == [("d", 1), ("p", 63)]


def test_kv_holder_preempts_the_latest_deadline_holder_only():
    sched = make_sched("edf", kv_tokens=64)  # 4 blocks
    sched.add(req("soon", 0.0, 16, 30, ttft_s=0.1, tpot_ms=20.0), 0.0)
    sched.add(req("later", 0.0, 16, 30, ttft_s=0.1, tpot_ms=500.0), 0.0)
    sched.add(req("mid", 0.0, 16, 30, ttft_s=0.1, tpot_ms=100.0), 0.0)
    t = 0.0
    preempted = []
    for _ in range(40):
        plan, t = step(sched, t)
        preempted += [e.request_id for e in plan.events if e.kind is EventKind.PREEMPTED]
        if preempted:
            break
    assert preempted[0] == "later"
    assert "soon" in [i.request_id for i in plan.items]


def test_new_requests_wait_for_memory_instead_of_evicting():
    sched = make_sched("edf", kv_tokens=64)
    sched.add(req("running", 0.0, 40, 3, ttft_s=5.0, tpot_ms=1000.0), 0.0)
    plan, t = step(sched, 0.0)
    sched.add(req("urgent", t, 40, 3, ttft_s=0.01), t)  # earlier deadline, but holds no KV
    plan, t = step(sched, t)
    assert items(plan) == [("running", 1)] and not plan.events


def test_budget_and_conservation_under_pressure():
    sched = make_sched("edf", {"token_budget": 256}, kv_tokens=6000)
    requests = random_workload(80, rate=25.0, seed=9)

    def check(s, plan, t):
        assert plan.num_tokens <= 256
        keys = [s.requests[i.request_id].next_token_deadline_s for i in plan.items]
        assert len(set(i.request_id for i in plan.items)) == len(keys)

    trace = drive(sched, requests, on_plan=check)
    assert_conserved(sched, requests, trace)
    assert trace.preempted
