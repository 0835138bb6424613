"""DistServe: prefill-only and decode-only replicas with a KV hand-off between them.

``drive_disagg`` is a two-replica discrete-event loop: arrivals go to the prefill replica; when
a request's first token appears there, it is released and, after the KV transfer time, added
to the decode replica, exactly as the simulator does for policy ``distserve``.
"""

from __future__ import annotations

import heapq

import numpy as np
import pytest
from test_policy_common import PERF, check_reserved, make_ctx, random_workload, req

from sloserve.core.plan import AdmitReason, EventKind
from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.core.topology import find_topology
from sloserve.policies.distserve import DistServeConfig
from sloserve.sim.engine import SimulatedEngine


def build(cfg: DistServeConfig, kv_tokens: int = 97648):
    topology = find_topology("distserve")
    assert topology is DistServeConfig and find_topology("sarathi") is None
    pname, dname = topology.prefill_policy, topology.decode_policy
    ctx = make_ctx(kv_tokens=kv_tokens)
    return (
        create_scheduler(pname, ctx, cfg.prefill_options()),
        create_scheduler(dname, SchedulerContext(PERF, kv_tokens, 16, replica_id=1), cfg.decode_options()),
    )


def drive_disagg(pre, dec, requests, cfg: DistServeConfig, max_steps=200_000):
    engines = {
        id(pre): SimulatedEngine(PERF, np.random.default_rng(0)),
        id(dec): SimulatedEngine(PERF, np.random.default_rng(1)),
    }
    busy = {id(pre): None, id(dec): None}  # (end_s, plan, result)
    queue = [(r.arrival_s, 0, k, "arrive", r) for k, r in enumerate(requests)]
    heapq.heapify(queue)
    log = {"pre": [], "dec": [], "handoff": {}, "first": {}, "finished": {}, "refused": set()}
    seq, t = len(requests), 0.0
    for _ in range(max_steps):
        for sched, tag in ((pre, "pre"), (dec, "dec")):
            if busy[id(sched)] is None:
                plan = sched.schedule(t)
                if not plan.is_empty:
                    check_reserved(sched, plan)
                    log[tag].append(
                        [
                            (i.request_id, i.num_tokens, sched.requests[i.request_id].num_output_tokens)
                            for i in plan.items
                        ]
                    )
                    res = engines[id(sched)].execute(plan, sched.requests)
                    busy[id(sched)] = (t + res.step_s, plan, res)
                    seq += 1
                    heapq.heappush(queue, (t + res.step_s, 1, seq, tag, sched))
        if not queue:
            return log
        t, _, _, kind, obj = heapq.heappop(queue)
        if kind == "arrive":
            if not pre.add(obj, t).accepted:
                log["refused"].add(obj.request_id)
        elif kind == "handoff":
            assert dec.add(obj, t).accepted
        else:
            _, plan, res = busy[id(obj)]
            busy[id(obj)] = None
            for ev in obj.on_step_done(plan, res, t):
                if ev.kind is EventKind.FINISHED:
                    log["finished"][ev.request_id] = t
                elif ev.kind is EventKind.FIRST_TOKEN and obj is pre:
                    log["first"][ev.request_id] = t
                    if ev.request_id in pre.requests:  # not finished by its first token
                        moved = pre.release(ev.request_id)
                        seq += 1
                        arrive = t + cfg.kv_transfer_s(moved.num_tokens)
                        log["handoff"][ev.request_id] = arrive
                        heapq.heappush(queue, (arrive, 0, seq, "handoff", moved))
    raise AssertionError("did not finish")


def test_never_mixes_prefill_and_decode_on_one_replica():
    cfg = DistServeConfig()
    pre, dec = build(cfg, kv_tokens=8000)
    requests = random_workload(80, rate=15.0, seed=4)
    log = drive_disagg(pre, dec, requests, cfg)
    assert log["pre"] and log["dec"]
    assert all(out == 0 for batch in log["pre"] for _, _, out in batch)  # prompts only
    assert all(out >= 1 for batch in log["dec"] for _, _, out in batch)  # decodes (or recompute)
    assert set(log["finished"]) == {r.request_id for r in requests}
    assert not pre.requests and not dec.requests
    assert pre.kv.used_blocks == 0 and dec.kv.used_blocks == 0
    for rid, arrive in log["handoff"].items():
        assert arrive >= log["first"][rid]
    multi = [r for r in requests if r.output_tokens > 1]
    assert set(log["handoff"]) == {r.request_id for r in multi}


def test_handoff_delay_is_the_kv_transfer_time():
    cfg = DistServeConfig(kv_transfer_s_per_token=1e-3)
    pre, dec = build(cfg)
    r = req("r", 0.0, 500, 3)
    log = drive_disagg(pre, dec, [r], cfg)
    assert log["handoff"]["r"] == pytest.approx(log["first"]["r"] + 501 * 1e-3)
    assert cfg.kv_transfer_s(1000) == pytest.approx(1.0)


def test_prefill_batches_whole_prompts_up_to_the_token_limit():
    pre, _ = build(DistServeConfig(prefill_max_tokens_per_batch=1000, prefill_max_batch_size=2))
    for r in (req("a", 0.0, 400, 5), req("b", 0.0, 500, 5), req("c", 0.0, 50, 5), req("d", 0.0, 900, 5)):
        pre.add(r, 0.0)
    plan = pre.schedule(0.0)
    assert [(i.request_id, i.num_tokens) for i in plan.items] == [("a", 400), ("b", 500)]  # batch size 2
    assert pre.add(req("huge", 0.0, 1001, 5), 0.0).reason is AdmitReason.TOO_LONG


def test_prefill_replica_never_decodes_requests_awaiting_handoff():
    pre, _ = build(DistServeConfig())
    pre.add(req("a", 0.0, 100, 5), 0.0)
    plan = pre.schedule(0.0)
    res = SimulatedEngine(PERF).execute(plan, pre.requests)
    pre.on_step_done(plan, res, 0.1)
    assert pre.requests["a"].num_output_tokens == 1
    assert pre.schedule(0.1).is_empty  # held until the driver releases it
    assert pre.release("a") is not None and pre.kv.used_blocks == 0


def test_decode_replica_refuses_requests_without_their_first_token():
    _, dec = build(DistServeConfig())
    decision = dec.add(req("raw", 0.0, 100, 5), 0.0)
    assert decision.reason is AdmitReason.REJECTED and not dec.requests


def handed_over(rid, prompt, output):
    r = req(rid, 0.0, prompt, output)
    r.num_output_tokens, r.num_computed_tokens, r.first_token_s = 1, prompt, 0.05
    return r


def test_decode_replica_reserves_kv_on_add_and_queues_when_full():
    _, dec = build(DistServeConfig(), kv_tokens=256)  # 16 blocks
    dec.add(handed_over("a", 150, 20), 0.1)
    assert dec.kv.held_blocks("a") == dec.kv.blocks_for(151) and dec.running == ["a"]
    dec.add(handed_over("b", 150, 20), 0.1)  # does not fit next to a
    assert list(dec.waiting) == ["b"] and dec.kv.held_blocks("b") == 0
    plan = dec.schedule(0.1)
    assert [(i.request_id, i.num_tokens) for i in plan.items] == [("a", 1)]
    dec.abort("a", 0.2)
    plan = dec.schedule(0.2)
    assert [(i.request_id, i.num_tokens) for i in plan.items] == [("b", 1)]


def test_decode_replica_preempts_its_last_request_and_recomputes_it():
    _, dec = build(DistServeConfig(), kv_tokens=64)  # 4 blocks
    dec.add(handed_over("a", 16, 40), 0.0)
    dec.add(handed_over("b", 15, 40), 0.0)
    t, preempted, recompute = 0.0, [], []
    engine = SimulatedEngine(PERF)
    for _ in range(200):
        plan = dec.schedule(t)
        if plan.is_empty:
            break
        preempted += [e.request_id for e in plan.events]
        recompute += [
            (i.request_id, i.num_tokens, dec.requests[i.request_id].num_output_tokens)
            for i in plan.items
            if i.num_tokens > 1
        ]
        res = engine.execute(plan, dec.requests)
        t += res.step_s
        dec.on_step_done(plan, res, t)
    assert preempted[0] == "b"
    # b recomputes its whole context (prompt + tokens so far), never a bare prompt prefill
    assert recompute and all(rid == "b" and out >= 1 and n == 15 + out for rid, n, out in recompute)
    assert not dec.requests and dec.kv.used_blocks == 0


def test_distserve_config_options():
    cfg = DistServeConfig.from_options({"prefill_replicas": 2, "decode_replicas": 3})
    assert cfg.num_replicas == 5
    with pytest.raises(ValueError, match="unknown option"):
        DistServeConfig.from_options({"replicas": 2})
    with pytest.raises(ValueError):
        DistServeConfig(prefill_replicas=0)
    with pytest.raises(ValueError):
        DistServeConfig(kv_transfer_s_per_token=-1.0)
    pre, dec = build(DistServeConfig(prefill_max_tokens_per_batch=4096, decode_max_batch_size=7))
    assert pre.config.max_tokens_per_batch == 4096 and dec.config.max_batch_size == 7
