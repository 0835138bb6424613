"""The slos-serve policy: decisions and reasons, tiers, best-effort tier, ablations, can_admit."""

import copy

import pytest

from sloserve.core.plan import AdmitReason, EventKind
from sloserve.core.request import Request, Tier
from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.core.slo import DecodeSegment
from sloserve.metrics.attainment import stage_attained
from sloserve.perf.paper import Line, PaperLinesModel
from sloserve.sim.engine import SimulatedEngine

PERF = PaperLinesModel("toy", (Line(1e-4, 0.0, 0.01),))  # 10 ms + 0.1 ms per token


def sched(kv_tokens=100_000, **opts):
    return create_scheduler("slos-serve", SchedulerContext(PERF, kv_tokens, 16), opts)


def req(rid, arrival=0.0, prompt=200, output=20, ttft=0.5, tpot_ms=50.0, **kw):
    return Request(rid, arrival, prompt, output, ttft, (DecodeSegment(tpot_ms),), **kw)


def run(s, requests, until=60.0):
    """Tiny driver: add arrivals, schedule, execute, advance; returns token times per request."""
    engine = SimulatedEngine(PERF)
    pending = sorted(requests, key=lambda r: r.arrival_s)
    times: dict[str, list[float]] = {r.request_id: [] for r in requests}
    decisions = {}
    t = 0.0
    while (pending or s.has_work()) and t < until:
        while pending and pending[0].arrival_s <= t + 1e-12:
            r = pending.pop(0)
            decisions[r.request_id] = s.add(r, t)
        plan = s.schedule(t)
        if plan.is_empty:
            t = pending[0].arrival_s if pending else (plan.wakeup_s or until)
            continue
        res = engine.execute(plan, s.requests)
        t += res.step_s
        for ev in s.on_step_done(plan, res, t):
            if ev.kind in (EventKind.FIRST_TOKEN, EventKind.TOKENS):
                times[ev.request_id] += [ev.time_s] * ev.num_tokens
    return times, decisions


def attained(r, times):
    return stage_attained(r.arrival_s, r.ttft_slo_s, r.segments, times[r.request_id], tolerance=0.0)


def test_light_load_admits_all_and_meets_every_slo():
    s = sched()
    rs = [req(f"r{i}", arrival=0.05 * i, tpot_ms=50.0 if i % 2 else 100.0) for i in range(10)]
    times, dec = run(s, rs)
    assert all(d.reason is AdmitReason.ADMITTED and d.slack_s > 0 for d in dec.values())
    assert all(r.tier is Tier.SLO and attained(r, times) for r in rs)
    assert s.reasons["admitted"] == 10


def test_overload_sends_the_rest_to_best_effort_and_admitted_never_miss():
    s = sched()
    rs = [req(f"r{i}", prompt=1500, ttft=0.3, output=30) for i in range(8)]
    times, dec = run(s, rs)
    admitted = [r for r in rs if dec[r.request_id].admitted]
    best = [r for r in rs if dec[r.request_id].reason is AdmitReason.BEST_EFFORT]
    assert admitted and best and len(admitted) + len(best) == 8
    assert all(attained(r, times) for r in admitted)
    assert all(r.tier is Tier.BEST_EFFORT for r in best)
    assert all(len(times[r.request_id]) == r.output_tokens for r in best)  # still served
    assert "no_time" in dec[best[0].request_id].detail and s.reasons["best_effort_no_time"] == len(best)


def test_reject_mode_rejects_with_a_reason():
    s = sched(unadmitted="reject")
    rs = [req(f"r{i}", prompt=1500, ttft=0.3) for i in range(8)]
    decs = [s.add(r, 0.0) for r in rs]
    rejected = [r for r, d in zip(rs, decs) if not d.accepted]
    assert rejected and all(r.tier is Tier.REJECTED for r in rejected)
    assert {d.reason for d in decs if not d.accepted} == {AdmitReason.NO_TIME}
    assert all(r.request_id not in s.requests for r in rejected)


def test_infeasible_slo_and_router_best_effort():
    s = sched()
    d = s.add(req("x", prompt=4000, ttft=0.2), 0.0)  # zero-load prefill 0.41 s > 0.2 s
    assert d.reason is AdmitReason.BEST_EFFORT and "infeasible_slo" in d.detail
    r = req("y")
    r.route_best_effort = True
    assert s.add(r, 0.0).reason is AdmitReason.BEST_EFFORT and r.tier is Tier.BEST_EFFORT
    assert s.can_admit(req("z", prompt=4000, ttft=0.2), 0.0).reason is AdmitReason.INFEASIBLE_SLO


def test_no_kv_when_reservations_exhaust_memory():
    s = sched(kv_tokens=1024)
    assert s.add(req("a", prompt=500, output=300, ttft=2.0), 0.0).admitted
    d = s.add(req("b", prompt=500, output=300, ttft=2.0), 0.0)
    assert d.reason is AdmitReason.BEST_EFFORT and "no_kv" in d.detail
    assert s.can_admit(req("c", prompt=500, output=300, ttft=2.0), 0.0).reason is AdmitReason.NO_KV


def _snapshot(s):
    reqs = {rid: copy.deepcopy(vars(r)) for rid, r in s.requests.items()}
    return (
        reqs,
        dict(s.reasons),
        s.kv.used_blocks,
        dict(s.kv._held),
        list(s.tiers.slo),
        list(s.tiers.be),
        dict(s.tiers.reserved),
        s.tiers.reserved_total,
        s.tiers.step_len_s,
        dict(s.tiers.inflight),
        s.tiers.inflight_end_s,
        s.tiers.first_step,
        s.tiers.slack_s,
        list(s.tiers.pending_events),
        dict(s.table.pred),
        dict(s.table.repace),
    )


def test_can_admit_is_side_effect_free_and_agrees_with_add():
    s = sched()
    for i in range(4):
        s.add(req(f"r{i}", prompt=800, ttft=0.4), 0.0)
    plan = s.schedule(0.0)
    assert not plan.is_empty
    new = req("new", arrival=0.01, prompt=800, ttft=0.4)
    before = _snapshot(s)
    new_before = copy.deepcopy(vars(new))
    d = s.can_admit(new, 0.01)
    assert _snapshot(s) == before and vars(new) == new_before
    assert s.add(new, 0.01).reason is (AdmitReason.ADMITTED if d.admitted else AdmitReason.BEST_EFFORT)


def test_best_effort_is_preempted_lifo_when_admitted_requests_need_kv():
    s = sched(kv_tokens=2048, idle_step_s=0.2)  # 128 blocks
    be1, be2 = req("be1", prompt=700, output=400, ttft=5.0), req("be2", prompt=700, output=400, ttft=5.0)
    for r in (be1, be2):
        r.route_best_effort = True
        s.add(r, 0.0)
    plan = s.schedule(0.0)
    s.on_step_done(plan, SimulatedEngine(PERF).execute(plan, s.requests), 0.2)
    assert s.kv.held_blocks("be1") == 44 and s.kv.held_blocks("be2") == 44
    slo = req("slo", arrival=0.2, prompt=1000, output=50, ttft=1.0, tpot_ms=200.0)
    assert s.add(slo, 0.2).admitted  # 66 blocks reserved; best-effort KV is reclaimable
    plan = s.schedule(0.2)
    preempted = [e.request_id for e in plan.events if e.kind is EventKind.PREEMPTED]
    assert preempted == ["be2"]  # the newest best-effort request goes first, and only it
    assert be2.num_computed_tokens == 0 and be2.num_preemptions == 1
    assert any(i.request_id == "slo" and i.num_tokens == 1000 for i in plan.items)


def test_best_effort_request_is_promoted_at_the_next_replan():
    s = sched(kv_tokens=3000, stretch_steps=False)  # 399-token steps: "b" cannot finish its prefill
    assert s.add(req("a", prompt=1000, output=1000, ttft=5.0), 0.0).admitted
    b = req("b", prompt=900, output=1000, ttft=5.0)
    assert "no_kv" in s.add(b, 0.0).detail
    assert s.add(req("c", prompt=100, output=1, ttft=5.0), 0.0).admitted
    assert b.tier is Tier.BEST_EFFORT  # arrivals do not re-offer best effort: nothing was freed
    assert s.abort("a", 0.0)
    plan = s.schedule(0.0)
    res = SimulatedEngine(PERF).execute(plan, s.requests)
    assert "c" in res.finished and b.num_output_tokens == 0
    s.on_step_done(plan, res, res.step_s)  # the completion re-plans and re-offers "b"
    assert b.tier is Tier.SLO and s.reasons["promoted"] == 1
    plan = s.schedule(res.step_s)
    assert any(e.kind is EventKind.TIER and e.request_id == "b" and e.tier == "slo" for e in plan.events)
    s.config = type(s.config)(**{**vars(s.config), "promote_best_effort": False})
    d = req("d", prompt=900, output=1000, ttft=5.0)
    assert not s.add(d, 0.0).admitted and d.tier is Tier.BEST_EFFORT


def test_timer_replan_defers_decisions_to_the_timer():
    s = sched(replan_interval_s=0.1)
    r = req("r", arrival=0.03)
    d = s.add(r, 0.03)
    assert d.reason is AdmitReason.QUEUED and r.tier is Tier.PENDING
    plan = s.schedule(0.03)  # first call fires the timer (next_replan starts at 0)
    assert r.tier is Tier.SLO
    s2 = sched(replan_interval_s=0.1)
    s2.next_replan_s = 0.1
    r2 = req("r2", arrival=0.03)
    s2.add(r2, 0.03)
    plan = s2.schedule(0.03)
    assert plan.is_empty and plan.wakeup_s == pytest.approx(0.1)
    plan = s2.schedule(0.1)
    assert r2.tier is Tier.SLO and not plan.is_empty
    assert any(e.kind is EventKind.TIER for e in plan.events)


def test_admit_all_and_fixed_batch_ablations():
    s = sched(admit_all=True)
    rs = [req(f"r{i}", prompt=1500, ttft=0.3) for i in range(6)]
    assert all(s.add(r, 0.0).admitted for r in rs)
    s2 = sched(fixed_batch_tokens=256)
    for r in [req(f"r{i}", prompt=600, ttft=2.0) for i in range(3)]:
        s2.add(r, 0.0)
    assert 0 < s2.schedule(0.0).num_tokens <= 256
    # a TPOT tighter than the fixed step (10 ms + 25.6 ms) cannot be admitted
    assert not s2.can_admit(req("tight", tpot_ms=30.0, ttft=2.0), 0.0).admitted


def test_unknown_lengths_reserve_max_new_tokens_or_predict():
    s = sched(kv_tokens=4096, output_length="reserve")
    r = req("u", prompt=100, output=50, output_tokens_known=False, max_new_tokens=3000)
    assert s.lengths.mem_blocks(r) == s.kv.blocks_for(3100)
    learned = sched(kv_tokens=4096)  # the default plans a learned length, below the cap
    assert learned.config.output_length == "learn" and learned.lengths.mem_blocks(r) < s.kv.blocks_for(3100)
    p = sched(kv_tokens=4096, output_length="predict", predict_prior_tokens=64)
    u = req("u", prompt=100, output=300, output_tokens_known=False, max_new_tokens=3000, ttft=1.0)
    assert p.lengths.planned_output(u) == 64
    times, dec = run(p, [u])
    assert dec["u"].admitted and len(times["u"]) == 300
    assert p.reasons["length_overrun"] >= 2  # 64 -> 128 -> 256 -> 512
    assert p.lengths.out_stats["default"] == (1, 300)
    assert p.lengths.planned_output(req("v", output_tokens_known=False, max_new_tokens=3000)) == 450  # 1.5 x mean


def test_summary_publishes_admitted_load_and_stats():
    s = sched()
    s.add(req("a", slo_class="chat"), 0.0)
    s.add(req("b", slo_class="code"), 0.0)
    s.add(req("c", slo_class="chat"), 0.0)
    summ = s.summary(0.0)
    assert dict(summ.admitted_by_tier) == {"chat": 2, "code": 1} and summ.slack_s > 0
    assert s.stats()["num_slo"] == 3 and s.stats()["step_len_s"] == pytest.approx(0.05)


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="unknown option"):
        sched(nope=1)
    with pytest.raises(ValueError):
        sched(output_length="guess")
    with pytest.raises(ValueError):
        sched(max_candidates=0)
    with pytest.raises(ValueError, match="unadmitted"):
        sched(unadmitted="drop")
    with pytest.raises(ValueError, match="best_effort_yield_kv"):
        sched(best_effort_yield_kv=1.5)


def test_stretched_step_uses_banked_slack_and_ends_before_every_decode_deadline():
    s = sched()
    d = req("d", prompt=50, output=400, ttft=2.0, tpot_ms=50.0)  # first token early: 2 s banked
    times, _ = run(s, [d], until=0.2)
    assert d.num_output_tokens >= 1 and d.next_token_deadline_s > 1.5
    big = req("big", arrival=0.2, prompt=2000, output=5, ttft=1.0, tpot_ms=50.0)
    assert s.add(big, 0.2).admitted
    now = max(times["d"])
    plan = s.schedule(now)
    end = now + PERF.plan_time_s(plan)
    assert plan.num_tokens > PERF.max_tokens_within_s(0.05)  # longer than one 50 ms step
    assert {i.request_id for i in plan.items} == {"d", "big"}
    assert end <= d.next_token_deadline_s and end <= big.ttft_deadline_s
    assert s.reasons["stretched_steps"] + (s.tiers.first_step is None) >= 1


def test_steps_are_trimmed_to_the_exact_batch_time():
    class AttnModel(PaperLinesModel):
        """The token cap ignores attention; the exact time charges 1e-7 s per attention pair."""

        def batch_time_s(self, num_tokens, spec_steps=0, kv_read_tokens=0, attn_pairs=0.0, num_requests=0):
            return super().batch_time_s(num_tokens, spec_steps) + 1e-7 * attn_pairs

    perf = AttnModel("attn", (Line(1e-4, 0.0, 0.01),))
    s = create_scheduler("slos-serve", SchedulerContext(perf, 100_000, 16), {"stretch_steps": False})
    s.add(req("p", prompt=3000, ttft=5.0, tpot_ms=50.0), 0.0)
    plan = s.schedule(0.0)
    assert 0 < plan.num_tokens < 399 and perf.plan_time_s(plan) <= 0.05


def test_a_ttft_shorter_than_the_step_is_served_by_a_shorter_first_step():
    s = sched()
    long = req("long", prompt=100, output=200, ttft=1.0, tpot_ms=100.0)  # L = 100 ms
    short = req("short", arrival=0.3, prompt=50, output=5, ttft=0.05, tpot_ms=100.0)
    times, dec = run(s, [long, short])
    assert dec["short"].admitted and attained(short, times) and attained(long, times)


def test_summary_publishes_prefill_backlog_and_rate_for_summary_only_routers():
    from sloserve.core.request import Request
    from sloserve.core.scheduler import SchedulerContext, create_scheduler
    from sloserve.core.slo import DecodeSegment
    from sloserve.perf import get_model

    perf = get_model("opt-13b-tp2-a100")
    sched = create_scheduler("slos-serve", SchedulerContext(perf, 97648))
    idle = sched.summary(0.0)
    assert idle.prefill_backlog_tokens == 0
    assert idle.prefill_tokens_per_s == perf.max_tokens_within_s(0.1) / 0.1
    req = Request("a", 0.0, 700, 50, 5.0, (DecodeSegment(100),), slo_class="chatbot")
    assert sched.add(req, 0.0).accepted
    busy = sched.summary(0.0)
    assert busy.prefill_backlog_tokens == 700
    assert 0 < busy.prefill_tokens_per_s


def _be_tokens(s, until):
    """Drive ``s`` until ``until``; per step, (best-effort tokens scheduled, step seconds)."""
    engine, t, out = SimulatedEngine(PERF), 0.0, []
    while s.has_work() and t < until:
        plan = s.schedule(t)
        if plan.is_empty:
            break
        res = engine.execute(plan, s.requests)
        out.append((sum(i.num_tokens for i in plan.items if i.request_id.startswith("be")), res.step_s))
        t += res.step_s
        s.on_step_done(plan, res, t)
    return out


@pytest.mark.parametrize("yield_kv", [0.8, 1.0])
def test_best_effort_yields_the_engine_while_kv_binds_the_slo_tier(yield_kv):
    s = sched(kv_tokens=2048, best_effort_yield_kv=yield_kv, stretch_steps=False)  # 128 blocks
    slo = req("slo", prompt=1200, output=500, ttft=1.0, tpot_ms=200.0)  # 107 blocks: 84% reserved
    assert s.add(slo, 0.0).admitted
    be = req("be", prompt=300, output=5, ttft=5.0)
    be.route_best_effort = True
    s.add(be, 0.0)
    steps = _be_tokens(s, 200.0)
    served_while_slo = sum(n for n, _ in steps[: slo.num_output_tokens])
    assert slo.is_finished and be.is_finished
    if yield_kv < 1:
        # nothing for best effort until the admitted request is done; its steps stay short
        assert served_while_slo == 0
        decode_steps = [dt for n, dt in steps[1 : slo.output_tokens]]
        assert max(decode_steps) == pytest.approx(PERF.batch_time_s(1))
        assert slo.finish_s < be.first_token_s
    else:
        assert served_while_slo > 0 and be.finish_s < slo.finish_s


def test_best_effort_is_served_while_kv_is_not_binding():
    s = sched(kv_tokens=100_000)
    assert s.add(req("slo", prompt=1200, output=500, ttft=1.0, tpot_ms=200.0), 0.0).admitted
    be = req("be", prompt=300, output=5, ttft=5.0)
    be.route_best_effort = True
    s.add(be, 0.0)
    _be_tokens(s, 200.0)
    assert be.is_finished and be.finish_s < 2.0  # alongside the admitted request, not after it


SLOW = PaperLinesModel("slow", (Line(1e-4, 0.0, 0.08),))  # base step 80 ms > idle_step_s (50 ms)


@pytest.mark.parametrize("routed", [False, True])
def test_best_effort_alone_gets_steps_when_the_base_step_exceeds_idle_step(routed):
    """Defect C: only best-effort work queued and a batch-time model whose one-token step is
    longer than ``idle_step_s``: the idle step held no token, the plan stayed empty and the
    request starved forever. Best effort must get a step whenever nothing else runs."""
    s = create_scheduler("slos-serve", SchedulerContext(SLOW, 100_000, 16), {})
    assert SLOW.batch_time_s(1) > s.config.idle_step_s
    r = req("be", prompt=300, output=5, ttft=0.2, tpot_ms=50.0)  # TPOT below the base step: best effort
    if routed:
        r.route_best_effort = True
    assert s.add(r, 0.0).reason is AdmitReason.BEST_EFFORT and r.tier is Tier.BEST_EFFORT
    engine = SimulatedEngine(SLOW)
    t, steps = 0.0, 0
    while s.has_work() and steps < 100:
        plan = s.schedule(t)
        assert not plan.is_empty, "best-effort work left without a step"
        res = engine.execute(plan, s.requests)
        t += res.step_s
        s.on_step_done(plan, res, t)
        steps += 1
    assert r.is_finished and r.num_output_tokens == 5
    assert steps <= 6  # the prompt fits one idle step: a prefill, then one decode per step
    assert s.reasons["step_overdue"] == 0  # an idle step is not an overdue SLO step


def test_best_effort_alone_is_served_in_the_simulator_with_a_slow_base_step():
    from sloserve.core.slo import TTFTSLO, ProgramSpec, StageSpec  # noqa: PLC0415
    from sloserve.sim.config import SimConfig  # noqa: PLC0415
    from sloserve.sim.simulator import simulate  # noqa: PLC0415

    progs = [
        ProgramSpec(f"p{i}", 0.3 * i, "chat", (StageSpec(200, 8, TTFTSLO(absolute_ms=500.0), (DecodeSegment(50.0),)),))
        for i in range(4)
    ]
    out = simulate(progs, SimConfig(policy="slos-serve", kv_tokens=20_000), perf=SLOW).summary
    assert out["num_completed"] == 4 and out["num_unfinished"] == 0
    assert out["num_best_effort"] == 4
