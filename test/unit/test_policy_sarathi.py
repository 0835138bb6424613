"""Sarathi-Serve: decode-first stall-free batches under a fixed or TPOT-derived token budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_policy_common import PERF, assert_conserved, drive, make_sched, random_workload, req

from sloserve.core.plan import EventKind
from sloserve.sim.engine import SimulatedEngine


def batches(trace):
    return [tuple((i.request_id, i.num_tokens) for i in p.items) for p in trace.plans]


def test_decode_first_then_stall_free_chunks():
    sched = make_sched("sarathi-512")
    got = batches(drive(sched, [req("d", 0.0, 100, 6), req("p", 0.05, 1000, 2)]))
    k = next(i for i, b in enumerate(got) if any(rid == "p" for rid, _ in b))
    assert got[0] == (("d", 100),)
    assert got[k] == (("d", 1), ("p", 511))  # the decode never waits for the prompt
    assert got[k + 1] == (("d", 1), ("p", 489))


def test_ongoing_prefill_goes_before_new_admissions():
    sched = make_sched("sarathi-512")
    got = batches(drive(sched, [req("a", 0.0, 700, 2), req("b", 0.0, 300, 2)]))
    assert got[0] == (("a", 512),)
    assert got[1] == (("a", 188), ("b", 300))
    assert got[2] == (("a", 1), ("b", 1))


@pytest.mark.parametrize("name, budget", [("sarathi-512", 512), ("sarathi-2048", 2048), ("sarathi", None)])
def test_never_exceeds_its_budget(name, budget):
    sched = make_sched(name, kv_tokens=30000)
    requests = random_workload(120, rate=40.0, seed=7)
    seen = []

    def check(s, plan, t):
        limit = budget if budget is not None else s.last_budget_tokens
        assert plan.num_tokens <= limit
        seen.append(plan.num_tokens == limit)

    trace = drive(sched, requests, on_plan=check)
    assert_conserved(sched, requests, trace)
    assert any(seen)  # the workload is heavy enough that the budget is actually reached


def test_budget_caps_decodes_when_more_run_than_the_budget():
    sched = make_sched("sarathi", {"token_budget": 4, "max_num_seqs": 16})
    requests = [req(f"r{k}", 0.0, 2, 20) for k in range(6)]
    trace = drive(sched, requests)
    assert all(p.num_tokens <= 4 for p in trace.plans)
    assert any(len(p.items) == 4 and p.num_tokens == 4 for p in trace.plans)  # 6 decodes, 4 run
    assert_conserved(sched, requests, trace)


def test_auto_budget_fits_the_tightest_tpot():
    sched = make_sched("sarathi")
    assert sched.budget_tokens() == 512  # nothing resident: fallback
    sched.add(req("loose", 0.0, 10, 5, tpot_ms=100.0), 0.0)
    loose = sched.budget_tokens()
    assert loose == PERF.max_tokens_within_s(0.1)
    assert loose == math.floor((0.1 - 0.03173174) / 7.2128e-5)
    sched.add(req("tight", 0.0, 10, 5, tpot_ms=50.0), 0.0)
    assert sched.budget_tokens() == PERF.max_tokens_within_s(0.05) < loose
    assert PERF.batch_time_s(sched.budget_tokens()) <= 0.05 < PERF.batch_time_s(sched.budget_tokens() + 1)
    sched.add(req("impossible", 0.0, 10, 5, tpot_ms=10.0), 0.0)
    assert sched.budget_tokens() == sched.config.min_auto_budget


def test_admission_reserves_kv_for_the_whole_prompt():
    sched = make_sched("sarathi-512")
    sched.add(req("p", 0.0, 1000, 3), 0.0)
    plan = sched.schedule(0.0)
    assert [(i.request_id, i.num_tokens) for i in plan.items] == [("p", 512)]
    assert sched.kv.held_blocks("p") == sched.kv.blocks_for(1000)


def test_admission_stops_at_the_first_prompt_that_does_not_fit():
    sched = make_sched("sarathi-512", kv_tokens=1024)  # 64 blocks, watermark 0
    for r in (req("a", 0.0, 600, 3), req("b", 0.0, 600, 3), req("c", 0.0, 10, 3)):
        sched.add(r, 0.0)
    plan = sched.schedule(0.0)
    assert [i.request_id for i in plan.items] == ["a"]  # b cannot get its whole prompt; c waits
    assert list(sched.waiting) == ["b", "c"]


def test_decode_short_of_kv_preempts_latest_arrival():
    sched = make_sched("sarathi-512", kv_tokens=64)
    requests = [req("old", 0.0, 16, 40), req("new", 0.001, 16, 40)]
    trace = drive(sched, requests)
    assert trace.preempted and trace.preempted[0] == "new"
    first = next(p for p in trace.plans if p.events)
    assert first.events[0].kind is EventKind.PREEMPTED
    assert "old" in [i.request_id for i in first.items]
    assert_conserved(sched, requests, trace)


def test_running_list_is_kept_in_arrival_order():
    sched = make_sched("sarathi-512")
    engine = SimulatedEngine(PERF, np.random.default_rng(0))
    for r in (req("late", 0.5, 10, 9), req("early", 0.1, 10, 9)):
        sched.add(r, 0.6)
    plan = sched.schedule(0.6)
    res = engine.execute(plan, sched.requests)
    sched.on_step_done(plan, res, 0.7)
    plan = sched.schedule(0.7)
    assert [i.request_id for i in plan.items] == ["early", "late"]
