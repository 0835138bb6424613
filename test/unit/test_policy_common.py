"""Shared driver for the baseline policy tests, and properties every baseline must have.

``drive`` is the simulator loop in miniature (arrivals, schedule, simulated engine, step done)
so the policies are tested against the real engine and KV pool, not fakes. The tests here
run every baseline through overloaded, memory-starved workloads and check conservation
(every request finishes or is refused, none is lost or stuck), that every scheduled token
has KV reserved, that all KV is freed at the end, and that bad options fail clearly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

from sloserve.core.plan import EventKind, StepPlan
from sloserve.core.request import Request
from sloserve.core.scheduler import Scheduler, SchedulerContext, create_scheduler
from sloserve.core.slo import DecodeSegment
from sloserve.perf.presets import get_model
from sloserve.sim.engine import SimulatedEngine

BASELINES = ["vllm-v0", "vllm", "vllm-8192", "sarathi", "sarathi-512", "sarathi-2048", "sglang", "edf"]
PERF = get_model("opt-13b-tp2-a100")


def make_ctx(kv_tokens: int = 97648, block: int = 16, max_seq_len: int | None = None) -> SchedulerContext:
    return SchedulerContext(
        perf=PERF, kv_capacity_tokens=kv_tokens, block_size_tokens=block, max_seq_len_tokens=max_seq_len
    )


def make_sched(name: str, options: dict | None = None, **ctx_kw) -> Scheduler:
    return create_scheduler(name, make_ctx(**ctx_kw), options)


def req(
    rid: str, arrival: float, prompt: int, output: int, ttft_s: float = 1.0, tpot_ms: float = 100.0, **kw
) -> Request:
    return Request(rid, arrival, prompt, output, ttft_s, (DecodeSegment(tpot_ms),), **kw)


@dataclass
class Trace:
    plans: list[StepPlan] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # start time of each plan
    finished: dict[str, float] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)  # rejected at add, or aborted by the policy
    preempted: list[str] = field(default_factory=list)
    first_token: dict[str, float] = field(default_factory=dict)
    end_s: float = 0.0


def check_reserved(sched: Scheduler, plan: StepPlan) -> None:
    """Every scheduled item must have KV for the tokens it computes."""
    for item in plan.items:
        r = sched.requests[item.request_id]
        assert item.num_tokens >= 1
        assert item.num_tokens <= r.remaining_compute_tokens
        assert sched.kv.held_blocks(r.request_id) >= sched.kv.blocks_for(r.num_computed_tokens + item.num_tokens)


def drive(
    sched: Scheduler, requests: list[Request], on_plan: Callable | None = None, max_steps: int = 200_000, seed: int = 0
) -> Trace:
    """Run ``requests`` through ``sched`` on the simulated engine until all are done."""
    engine = SimulatedEngine(sched.ctx.perf, np.random.default_rng(seed))
    pending = sorted(requests, key=lambda r: r.arrival_s)
    trace = Trace()
    t, i = 0.0, 0
    for _ in range(max_steps):
        while i < len(pending) and pending[i].arrival_s <= t:
            if not sched.add(pending[i], t).accepted:
                trace.refused.add(pending[i].request_id)
            i += 1
        plan = sched.schedule(t)
        _record_events(trace, plan.events)
        if plan.is_empty:
            if i < len(pending):
                t = max(t, pending[i].arrival_s)
                continue
            assert not sched.has_work(), f"stuck with {sorted(sched.requests)} resident"
            trace.end_s = t
            return trace
        check_reserved(sched, plan)
        if on_plan is not None:
            on_plan(sched, plan, t)
        trace.plans.append(plan)
        trace.times.append(t)
        result = engine.execute(plan, sched.requests)
        t += result.step_s
        _record_events(trace, sched.on_step_done(plan, result, t))
    raise AssertionError("did not finish within max_steps")


def _record_events(trace: Trace, events) -> None:
    for ev in events:
        if ev.kind is EventKind.FINISHED:
            trace.finished[ev.request_id] = ev.time_s
        elif ev.kind is EventKind.FIRST_TOKEN:
            trace.first_token.setdefault(ev.request_id, ev.time_s)
        elif ev.kind is EventKind.PREEMPTED:
            trace.preempted.append(ev.request_id)
        elif ev.kind in (EventKind.REJECTED, EventKind.ABORTED):
            trace.refused.add(ev.request_id)


def random_workload(n: int, rate: float, seed: int, max_prompt: int = 1500, max_output: int = 400) -> list[Request]:
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))
    prompts = rng.integers(1, max_prompt, n)
    outputs = rng.integers(1, max_output, n)
    tpots = rng.choice([50.0, 100.0], n)
    return [
        req(f"r{k}", float(arrivals[k]), int(prompts[k]), int(outputs[k]), tpot_ms=float(tpots[k])) for k in range(n)
    ]


def assert_conserved(sched: Scheduler, requests: list[Request], trace: Trace) -> None:
    ids = {r.request_id for r in requests}
    assert set(trace.finished) | trace.refused == ids
    assert not set(trace.finished) & trace.refused
    assert not sched.requests and sched.kv.used_blocks == 0
    for r in requests:
        if r.request_id in trace.finished:
            assert r.num_output_tokens == r.output_tokens and r.is_finished


# ---------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", BASELINES)
def test_conservation_under_kv_pressure(name):
    # 4096 tokens of KV for ~60 requests of up to ~1.9k tokens arriving fast: heavy preemption.
    sched = make_sched(name, kv_tokens=4096)
    requests = random_workload(60, rate=20.0, seed=1)
    trace = drive(sched, requests)
    assert_conserved(sched, requests, trace)
    assert len(trace.finished) == 60  # nothing here is too long for 4096 tokens
    assert trace.preempted, "this workload must force preemption"


@pytest.mark.parametrize("name", BASELINES)
def test_conservation_with_too_long_requests(name):
    sched = make_sched(name, kv_tokens=8192, max_seq_len=1024)
    requests = random_workload(30, rate=5.0, seed=2, max_prompt=900, max_output=300)
    trace = drive(sched, requests)
    assert_conserved(sched, requests, trace)
    too_long = {r.request_id for r in requests if r.prompt_tokens + r.output_tokens > 1024}
    assert too_long and trace.refused == too_long
    assert sched.stats()["reasons"]["too_long"] == len(too_long)


@pytest.mark.parametrize("name", BASELINES)
def test_abort_frees_kv_everywhere(name):
    sched = make_sched(name, kv_tokens=4096)
    requests = [req(f"a{k}", 0.0, 300, 50) for k in range(5)]
    for r in requests:
        sched.add(r, 0.0)
    engine = SimulatedEngine(PERF)
    plan = sched.schedule(0.0)
    sched.on_step_done(plan, engine.execute(plan, sched.requests), 0.1)
    for r in requests:
        assert sched.abort(r.request_id, 0.2)
    assert not sched.abort("a0", 0.3)  # already gone
    assert sched.kv.used_blocks == 0 and not sched.requests
    assert sched.schedule(0.3).is_empty


@pytest.mark.parametrize("name", BASELINES)
def test_deterministic(name):
    def run():
        sched = make_sched(name, kv_tokens=6000)
        trace = drive(sched, random_workload(40, rate=10.0, seed=3))
        return [(p.items, p.events) for p in trace.plans], trace.finished

    assert run() == run()


@pytest.mark.parametrize("name", BASELINES)
def test_unknown_option_fails_clearly(name):
    with pytest.raises(ValueError, match="unknown option"):
        make_sched(name, {"no_such_option": 1})


@pytest.mark.parametrize(
    "name, options",
    [
        ("vllm", {"token_budget": 0}),
        ("vllm", {"max_num_seqs": -1}),
        ("vllm-8192", {"token_budget": 1.5}),
        ("vllm", {"long_prefill_token_threshold": -1}),
        ("vllm-v0", {"max_num_batched_tokens": 0}),
        ("vllm-v0", {"watermark": 1.0}),
        ("sarathi", {"token_budget": "fast"}),
        ("sarathi", {"token_budget": 0}),
        ("sarathi-512", {"max_num_seqs": 0}),
        ("sglang", {"chunked_prefill_size": 0}),
        ("sglang", {"init_new_token_ratio": 0.0}),
        ("sglang", {"schedule_conservativeness": -1.0}),
        ("sglang", {"page_size": 0}),
        ("edf", {"token_budget": 0}),
        ("distserve-prefill", {"max_tokens_per_batch": 0}),
        ("distserve-decode", {"max_batch_size": 0}),
    ],
)
def test_bad_option_values_fail(name, options):
    with pytest.raises(ValueError):
        make_sched(name, options)


@pytest.mark.parametrize("name", BASELINES + ["distserve-prefill", "distserve-decode"])
def test_configs_are_frozen_with_help(name):
    sched = make_sched(name)
    cfg = sched.config
    assert dataclasses.is_dataclass(cfg)
    for f in dataclasses.fields(cfg):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, dataclasses.fields(cfg)[0].name, 1)
