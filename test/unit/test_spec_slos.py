"""SLO-adaptive speculation inside the slos-serve planner (sloserve.spec.slos): invariant and gains."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.metrics.attainment import token_deadlines_s
from sloserve.sim import SimConfig, Simulator
from sloserve.spec import SpecConfig, speculative_policy
from sloserve.workloads import WorkloadConfig, build_workload

MODEL = "opt-13b-tp2-a100"


def _run(scenario, rate, spec, alpha, n=120, seed=0):
    wl = build_workload(WorkloadConfig(scenario=scenario, rate_rps=rate, num_requests=n, seed=seed))
    sim = Simulator(
        wl.programs, SimConfig(model=MODEL, policy=speculative_policy("slos-serve"), spec=spec, alpha=alpha, seed=seed)
    )
    return sim, sim.run()


def _late_tokens(rec):
    """Indices of tokens later than their exact deadline (no tolerance)."""
    d = token_deadlines_s(rec.arrival_s, rec.ttft_slo_s, rec.segments, rec.token_times, 0.0)
    return np.nonzero(np.asarray(rec.token_times) > d + 1e-9)[0]


@pytest.mark.parametrize(
    "scenario,rate,mode,alpha",
    [("coder", 2.5, "adaptive", 0.8), ("tool-calling", 0.8, "adaptive", 0.6), ("summarizer", 2.0, "fixed", 0.8)],
)
def test_admitted_decode_tokens_never_miss_and_ttft_misses_are_rare(scenario, rate, mode, alpha):
    spec = SpecConfig(mode=mode, alpha_prior=alpha, max_spec_len=6, fixed_len=4)
    sim, res = _run(scenario, rate, spec, alpha)
    admitted = [r for r in res.records if r.tier == "slo" and r.completed]
    assert len(admitted) > 30
    assert res.summary["mean_accepted_tokens_per_step"] > 1.5  # it did speculate
    ttft_late = 0
    for rec in admitted:
        late = _late_tokens(rec)
        assert not np.any(late >= 1), f"{rec.request_id}: decode token late"  # guaranteed
        ttft_late += int(late.size > 0)
    # the prefill budget is an expectation over random acceptance: misses must stay rare
    assert ttft_late <= max(1, len(admitted) // 50)
    stats = sim.replicas[0].scheduler.stats()
    assert stats["reasons"].get("spec_plan_won", 0) > 0


def test_adaptive_speculation_admits_more_than_none_on_coder():
    spec = SpecConfig(mode="adaptive", alpha_prior=0.8, max_spec_len=6)
    _, fast = _run("coder", 2.5, spec, 0.8)
    _, plain = _run("coder", 2.5, None, 0.8)
    assert plain.summary["mean_accepted_tokens_per_step"] is None
    assert fast.summary["attainment"] > plain.summary["attainment"] + 0.03


def test_speculative_policy_maps_slos_serve_to_the_planner_integration():
    from sloserve.spec.slos import SpecSLOsServeScheduler

    name = speculative_policy("slos-serve")
    from sloserve.core.scheduler import SCHEDULERS

    assert SCHEDULERS.get(name) is SpecSLOsServeScheduler
    sim, res = _run("coder", 1.0, SpecConfig(mode="off"), 0.8, n=30)
    assert res.summary["mean_accepted_tokens_per_step"] is None  # mode off: the plain planner
    assert sim.replicas[0].scheduler.stats()["reasons"].get("spec_plan_won", 0) == 0


def test_slack_drafts_under_a_plain_plan_keep_the_planners_step_end():
    from sloserve.spec.slos import NO_SPEC

    spec = SpecConfig(mode="adaptive", alpha_prior=0.8, max_spec_len=6)
    wl = build_workload(WorkloadConfig(scenario="chatbot", rate_rps=1.0, num_requests=40, seed=1))
    sim = Simulator(wl.programs, SimConfig(model=MODEL, policy=speculative_policy("slos-serve"), spec=spec, alpha=0.8))
    sched = sim.replicas[0].scheduler
    inner = sched.schedule
    checked = []

    def schedule(now_s):
        plan = inner(now_s)
        if plan.spec_steps and sched.spec_tiers is NO_SPEC:
            dues = [
                r.next_token_deadline_s
                for r in sched.tiers.slo.values()
                if r.num_output_tokens > 0 and r.remaining_compute_tokens == 1
            ]
            end = min([now_s + sched.tiers.step_len_s] + dues)
            assert now_s + sched.ctx.perf.plan_time_s(plan) <= end + 1e-9
            checked.append(plan.spec_steps)
        return plan

    sched.schedule = schedule
    res = sim.run()
    assert len(checked) > 20
    assert sched.stats()["reasons"]["spec_slack_steps"] == len(checked)
    for rec in res.records:
        if rec.tier == "slo" and rec.completed:
            assert not np.any(_late_tokens(rec) >= 1)


def _summarizer_with_drafts(past_the_executors_end: bool):
    """Exact engine, adaptive speculation, summarizer at 3 rps: (admitted misses, plans checked).
    ``past_the_executors_end`` (the control, the behaviour before): drafts may fill a step up to
    the step length and the decode deadlines, past the end the executor chose for it."""
    wl = build_workload(WorkloadConfig(scenario="summarizer", rate_rps=3.0, num_requests=100, seed=0, max_seq_len=2038))
    spec = SpecConfig(mode="adaptive", alpha_prior=0.7)
    config = SimConfig(
        policy=speculative_policy("slos-serve"),
        spec=spec,
        alpha=0.7,
        max_seq_len=2038,
        policy_options={"planning_tolerance": 0.05},
    )
    sim = Simulator(wl.programs, config)
    sched = sim.replicas[0].scheduler
    ex, inner_step, inner_schedule = sched.executor, sched.executor.step, sched.schedule
    checked, undecorated_s = [], [0.0]

    def step(now_s):
        plan = inner_step(now_s)
        undecorated_s[0] = ex.perf.plan_time_s(plan)  # forced decodes alone may run past the end
        if past_the_executors_end:
            ex.end_s = float("inf")
        return plan

    def schedule(now_s):
        plan = inner_schedule(now_s)
        if plan.spec_steps and not past_the_executors_end:
            assert now_s + sched.ctx.perf.plan_time_s(plan) <= max(ex.end_s, now_s + undecorated_s[0]) + 1e-9
            checked.append(plan.spec_steps)
        return plan

    ex.step, sched.schedule = step, schedule
    return sim.run().summary["num_admitted_slo_misses"], len(checked)


def test_drafts_keep_the_end_the_executor_chose():
    """A short first step promised to a tight TTFT (or a deadline step sized for the tail) ends
    by its end with drafts added too: admitted first tokens were late by the drafts' time (the
    summarizer misses docs/results.md once put down to speculation's TTFT). Control: drafts up
    to the step length and the decode deadlines, as before, let admitted requests miss."""
    misses, checked = _summarizer_with_drafts(False)
    assert checked > 50 and misses == 0
    assert _summarizer_with_drafts(True)[0] > 0
