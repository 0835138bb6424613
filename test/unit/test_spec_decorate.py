"""Speculation for any policy: the decorator, KV for drafts, learning alpha, simulator runs."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.core.request import Request
from sloserve.core.scheduler import SCHEDULERS, SchedulerContext
from sloserve.core.slo import TTFTSLO, DecodeSegment, ProgramSpec, StageSpec
from sloserve.perf.presets import get_model
from sloserve.policies.fcfs import FCFSScheduler
from sloserve.sim import SimConfig, Simulator
from sloserve.sim.engine import SimulatedEngine
from sloserve.spec import SpecConfig, expected_tokens, speculative, speculative_policy

PERF = get_model("opt-13b-tp2-a100")


def _req(rid, prompt=100, output=50, tpot_ms=100.0, cls="c"):
    return Request(rid, 0.0, prompt, output, 10.0, (DecodeSegment(tpot_ms),), slo_class=cls)


def _sched(spec, kv_tokens=100_000):
    return speculative(FCFSScheduler)(SchedulerContext(PERF, kv_tokens, 16, spec=spec))


def _run(sched, engine, steps, now=0.0):
    for _ in range(steps):
        plan = sched.schedule(now)
        if plan.is_empty:
            break
        res = engine.execute(plan, sched.requests)
        now += res.step_s
        sched.on_step_done(plan, res, now)
    return now


def test_fixed_mode_adds_drafts_reserves_kv_and_sets_spec_steps():
    sched = _sched(SpecConfig(mode="fixed", fixed_len=4))
    for i in range(3):
        sched.add(_req(f"r{i}", output=50 if i else 3), 0.0)
    engine = SimulatedEngine(PERF, np.random.default_rng(0), default_alpha=0.8)
    plan = sched.schedule(0.0)
    assert all(it.spec_draft_tokens == 0 for it in plan.items)  # prefill: nothing to draft yet
    assert plan.spec_steps == 0
    res = engine.execute(plan, sched.requests)
    sched.on_step_done(plan, res, res.step_s)
    plan = sched.schedule(res.step_s)
    drafts = {it.request_id: it.spec_draft_tokens for it in plan.items}
    assert drafts == {"r0": 1, "r1": 3, "r2": 3}  # r0 has 2 tokens left: one draft at most
    assert plan.spec_steps == 3
    for it in plan.items:
        req = sched.requests[it.request_id]
        assert it.num_tokens == 1 + it.spec_draft_tokens
        assert sched.kv.held_blocks(it.request_id) >= sched.kv.blocks_for(req.num_computed_tokens + it.num_tokens)
    assert PERF.plan_time_s(plan) > PERF.batch_time_s(3, 0)  # the drafts cost time


def test_off_and_none_leave_the_plan_alone():
    for spec in (None, SpecConfig(mode="off")):
        sched = _sched(spec)
        sched.add(_req("a"), 0.0)
        engine = SimulatedEngine(PERF, np.random.default_rng(0), default_alpha=0.8)
        _run(sched, engine, 1)
        plan = sched.schedule(1.0)
        assert plan.spec_steps == 0 and plan.items[0].num_tokens == 1


def test_short_kv_verifies_fewer_drafts_instead_of_preempting():
    # 9 blocks of 16 tokens: two 60-token prompts take 4 blocks each after their prefill
    sched = _sched(SpecConfig(mode="fixed", fixed_len=8), kv_tokens=9 * 16)
    sched.add(_req("a", prompt=60, output=30), 0.0)
    sched.add(_req("b", prompt=60, output=30), 0.0)
    engine = SimulatedEngine(PERF, np.random.default_rng(0), default_alpha=0.8)
    _run(sched, engine, 1)
    plan = sched.schedule(1.0)
    drafts = {it.request_id: it.spec_draft_tokens for it in plan.items}
    assert drafts == {"a": 7, "b": 3}  # b gets what the last free block holds
    assert not plan.events  # nobody was preempted for drafts
    assert sched.kv.free_blocks == 0
    assert sched.stats()["spec"]["kv_short"] > 0


def test_online_estimate_learns_the_true_alpha_from_verify_steps():
    sched = _sched(SpecConfig(mode="fixed", fixed_len=4, alpha_prior=0.3, prior_strength=5))
    for i in range(8):
        sched.add(_req(f"r{i}", output=400), 0.0)
    engine = SimulatedEngine(PERF, np.random.default_rng(1), default_alpha=0.8)
    _run(sched, engine, 200)
    est = sched.spec_decorator.estimator
    assert est.class_alpha("c") == pytest.approx(0.8, abs=0.03)


def test_adaptive_decorator_never_stretches_a_step_past_a_due_token():
    sched = _sched(SpecConfig(mode="adaptive", alpha_prior=0.8, max_spec_len=6))
    for i in range(6):
        sched.add(_req(f"r{i}", output=300, tpot_ms=60.0), 0.0)
    engine = SimulatedEngine(PERF, np.random.default_rng(2), default_alpha=0.8)
    now = _run(sched, engine, 1)
    spec_steps = []
    for _ in range(100):
        plan = sched.schedule(now)
        if plan.is_empty:
            break
        due = min(sched.requests[it.request_id].next_token_deadline_s for it in plan.items)
        res = engine.execute(plan, sched.requests)
        if plan.spec_steps:
            assert now + res.step_s <= due + 1e-9
        spec_steps.append(plan.spec_steps)
        now += res.step_s
        sched.on_step_done(plan, res, now)
    assert max(spec_steps) >= 2


def _programs(n=40, rate=2.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    return [
        ProgramSpec(
            f"p{i}",
            float(t[i]),
            "chat",
            (
                StageSpec(
                    int(rng.integers(50, 800)),
                    int(rng.integers(20, 200)),
                    TTFTSLO(slowdown=5.0),
                    (DecodeSegment(100.0),),
                ),
            ),
        )
        for i in range(n)
    ]


def test_registered_speculative_baseline_runs_in_the_simulator_and_is_deterministic():
    name = speculative_policy("sarathi")
    assert name == "sarathi+spec" and "sarathi+spec" in SCHEDULERS.names()
    assert speculative_policy("sarathi") == name  # idempotent
    cfg = SimConfig(model="opt-13b-tp2-a100", policy=name, spec=SpecConfig(mode="fixed", fixed_len=3), alpha=0.8)
    a = Simulator(_programs(), cfg)
    ra = a.run()
    rb = Simulator(_programs(), cfg).run()
    assert ra.summary["num_completed"] == 40
    mean = ra.summary["mean_accepted_tokens_per_step"]
    assert mean == pytest.approx(expected_tokens(0.8, 3), rel=0.06)
    assert [r.token_times for r in ra.records] == [r.token_times for r in rb.records]
    stats = a.replicas[0].scheduler.stats()["spec"]
    assert stats["mode"] == "fixed" and stats["spec_batches"] > 0
    assert stats["alpha"]["chat"]["alpha"] == pytest.approx(0.8, abs=0.05)
    off = Simulator(_programs(), SimConfig(model="opt-13b-tp2-a100", policy=name, alpha=0.8)).run()
    assert off.summary["mean_accepted_tokens_per_step"] is None
    assert off.summary["sim_time_s"] > ra.summary["sim_time_s"] * 0.99


def test_goodput_mode_runs_and_speculates_at_light_load():
    name = speculative_policy("fcfs")
    cfg = SimConfig(model="opt-6.7b-a100", policy=name, spec=SpecConfig(mode="goodput", alpha_prior=0.8), alpha=0.8)
    res = Simulator(_programs(20, rate=0.5), cfg).run()
    assert res.summary["num_completed"] == 20
    assert res.summary["mean_accepted_tokens_per_step"] > 2.0
