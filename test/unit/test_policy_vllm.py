"""vLLM v0 (prefill-first, whole prompts) and v1 (token budget, running first) on hand-built cases."""

from __future__ import annotations

import numpy as np
from test_policy_common import PERF, assert_conserved, drive, make_sched, random_workload, req

from sloserve.core.plan import EventKind
from sloserve.sim.engine import SimulatedEngine


def batches(trace):
    return [tuple((i.request_id, i.num_tokens) for i in p.items) for p in trace.plans]


def step(sched, t):
    plan = sched.schedule(t)
    res = SimulatedEngine(PERF, np.random.default_rng(0)).execute(plan, sched.requests)
    sched.on_step_done(plan, res, t + res.step_s)
    return plan, t + res.step_s


# ---------------------------------------------------------------------------------- v0
def test_v0_decodes_stall_behind_a_prefill():
    sched = make_sched("vllm-v0")
    r1, r2 = req("r1", 0.0, 100, 6), req("r2", 0.1, 200, 3)
    trace = drive(sched, [r1, r2])
    got = batches(trace)
    # r1 prefills, decodes until r2 arrives, then r2's prefill runs ALONE: r1 skips that step.
    k = got.index((("r2", 200),))
    assert got[0] == (("r1", 100),)
    assert all(b == (("r1", 1),) for b in got[1:k])
    assert got[k + 1] == (("r1", 1), ("r2", 1))
    assert trace.times[k] >= 0.1
    # the stall is real time: r1's inter-token gap across r2's prefill is a whole prefill long
    assert trace.times[k + 1] - trace.times[k] >= PERF.batch_time_s(200) - 1e-12


def test_v0_batches_whole_prompts_up_to_max_num_batched_tokens():
    sched = make_sched("vllm-v0", {"max_num_batched_tokens": 2048})
    requests = [req("a", 0.0, 1000, 2), req("b", 0.0, 1000, 2), req("c", 0.0, 100, 2)]
    got = batches(drive(sched, requests))
    assert got[0] == (("a", 1000), ("b", 1000))  # c would make 2100 > 2048
    assert got[1] == (("c", 100),)  # prefill first again, before a and b decode
    assert got[2] == (("a", 1), ("b", 1), ("c", 1))


def test_v0_respects_max_num_seqs_and_rejects_too_long_prompts():
    sched = make_sched("vllm-v0", {"max_num_seqs": 2})
    requests = [req(f"s{k}", 0.0, 10, 3) for k in range(3)] + [req("long", 0.0, 3000, 2)]
    trace = drive(sched, requests)
    assert batches(trace)[0] == (("s0", 10), ("s1", 10))
    assert trace.refused == {"long"}  # 3000 > default max(max_seq_len, 2048)
    assert sched.stats()["reasons"]["too_long"] == 1
    assert all(len(p.items) <= 2 for p in trace.plans)


def test_v0_decode_short_of_kv_preempts_the_last_running_request():
    # 4 blocks of 16 tokens, no watermark blocks (1% of 4 rounds to 0).
    sched = make_sched("vllm-v0", kv_tokens=64)
    r1, r2 = req("r1", 0.0, 16, 40), req("r2", 0.0, 16, 40)
    trace = drive(sched, [r1, r2])
    assert trace.preempted[0] == "r2"
    first = next(p for p in trace.plans if p.events)
    assert [e.kind for e in first.events] == [EventKind.PREEMPTED]
    assert [i.request_id for i in first.items] == ["r1"]
    assert_conserved(sched, [r1, r2], trace)
    assert r2.num_preemptions >= 1 and r1.num_preemptions == 0


# ---------------------------------------------------------------------------------- v1
def test_v1_chunks_prefills_into_the_budget_running_first():
    sched = make_sched("vllm", {"token_budget": 100})
    got = batches(drive(sched, [req("r1", 0.0, 250, 2), req("r2", 0.0, 30, 2)]))
    assert got[:4] == [(("r1", 100),), (("r1", 100),), (("r1", 50), ("r2", 30)), (("r1", 1), ("r2", 1))]


def test_v1_mixes_decodes_and_new_chunks_in_one_step():
    sched = make_sched("vllm", {"token_budget": 64})
    requests = [req("d", 0.0, 10, 50), req("p", 0.2, 200, 2)]
    trace = drive(sched, requests)
    got = batches(trace)
    k = next(i for i, b in enumerate(got) if any(rid == "p" for rid, _ in b))
    assert got[k] == (("d", 1), ("p", 63))  # decode first, then the rest of the budget
    assert got[k + 1] == (("d", 1), ("p", 63))
    assert all(sum(n for _, n in b) <= 64 for b in got)


def test_v1_preempts_the_tail_of_the_running_list_and_prepends_it():
    # 8 blocks: r1 and r2 take 2 each, r3 takes 4; r1's first decode needs a fresh block.
    sched = make_sched("vllm", kv_tokens=128)
    for r in (req("r1", 0.0, 32, 5), req("r2", 0.0, 32, 5), req("r3", 0.0, 64, 5), req("r4", 0.0, 16, 5)):
        sched.add(r, 0.0)
    plan, t = step(sched, 0.0)
    assert [(i.request_id, i.num_tokens) for i in plan.items] == [("r1", 32), ("r2", 32), ("r3", 64)]
    assert list(sched.waiting) == ["r4"]  # r4 did not fit: FCFS stops there
    plan, t = step(sched, t)
    assert [(e.kind, e.request_id) for e in plan.events] == [(EventKind.PREEMPTED, "r3")]
    assert [i.request_id for i in plan.items] == ["r1", "r2"]  # no new admission after a preemption
    assert list(sched.waiting) == ["r3", "r4"] and sched.requests["r3"].num_computed_tokens == 0
    assert sched.kv.held_blocks("r3") == 0


def test_v1_victim_is_the_request_itself_when_it_is_last():
    sched = make_sched("vllm", kv_tokens=32)
    for r in (req("r1", 0.0, 16, 5), req("r2", 0.0, 16, 5)):
        sched.add(r, 0.0)
    plan, t = step(sched, 0.0)
    plan, t = step(sched, t)  # both need a second block; only r1 gets one
    assert [(e.kind, e.request_id) for e in plan.events] == [(EventKind.PREEMPTED, "r2")]
    assert [i.request_id for i in plan.items] == ["r1"]


def test_vllm_8192_default_budget_takes_a_long_prompt_in_one_step():
    sched = make_sched("vllm-8192")
    assert sched.config.token_budget == 8192
    got = batches(drive(sched, [req("big", 0.0, 5000, 2)]))
    assert got[0] == (("big", 5000),)
    small = batches(drive(make_sched("vllm"), [req("big", 0.0, 5000, 2)]))
    assert small[:3] == [(("big", 2048),), (("big", 2048),), (("big", 904),)]


def test_v1_never_exceeds_budget_or_max_num_seqs():
    sched = make_sched("vllm", {"token_budget": 300, "max_num_seqs": 8}, kv_tokens=20000)
    requests = random_workload(80, rate=30.0, seed=5)

    def check(s, plan, t):
        assert plan.num_tokens <= 300
        assert len(s.running) <= 8

    trace = drive(sched, requests, on_plan=check)
    assert_conserved(sched, requests, trace)


def test_v0_drops_a_recompute_that_can_never_pass_the_watermark():
    sched = make_sched("vllm-v0", {"watermark": 0.1}, kv_tokens=160)  # 10 blocks, 1 watermark block
    r = req("grown", 0.0, 100, 60)
    assert sched.add(r, 0.0).accepted  # 160 tokens fit the pool, the prompt passes the watermark
    r.num_output_tokens = 59  # as if preempted after 59 tokens: 159 tokens to recompute
    plan = sched.schedule(0.0)
    assert plan.is_empty and [(e.kind, e.request_id) for e in plan.events] == [(EventKind.REJECTED, "grown")]
    assert not sched.requests and sched.stats()["reasons"]["no_kv"] == 1
