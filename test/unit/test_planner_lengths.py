"""Online output-length predictor (learn mode): quantiles per class and prompt bucket, the prior,
extension on overrun, and the policy's fallback (demotion) when an extension does not fit."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.core.plan import EventKind
from sloserve.core.request import Request, Tier
from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.core.slo import DecodeSegment
from sloserve.metrics.attainment import stage_attained
from sloserve.perf.paper import Line, PaperLinesModel
from sloserve.planner.lengths import LengthPredictor, prompt_bucket
from sloserve.sim.engine import SimulatedEngine

PERF = PaperLinesModel("toy", (Line(1e-4, 0.0, 0.01),))


def req(rid, prompt=200, output=100, cls="chat", max_new=2000, arrival=0.0, ttft=1.0, tpot_ms=50.0):
    return Request(
        rid,
        arrival,
        prompt,
        output,
        ttft,
        (DecodeSegment(tpot_ms),),
        slo_class=cls,
        output_tokens_known=False,
        max_new_tokens=max_new,
    )


def test_prior_until_enough_samples_then_the_bucket_quantile():
    p = LengthPredictor(quantile=0.9, min_samples=10)
    r = req("a", prompt=200)
    assert p.predict(r, prior=2000) == 2000  # nothing learned: the prior (max_new_tokens)
    for n in range(1, 10):
        p.observe("chat", 200, 10 * n)
    assert p.predict(r, 2000) == 2000  # 9 < min_samples
    p.observe("chat", 200, 100)
    assert p.predict(r, 2000) == 100  # 0.9 quantile of 10..100 ('higher' method)
    assert LengthPredictor(0.8, 10).predict(r, 2000) == 2000
    # another prompt bucket of the class: the class's pooled lengths until it has its own
    assert prompt_bucket(5000) != prompt_bucket(200)
    assert p.predict(req("b", prompt=5000), 2000) == 100
    for _ in range(10):
        p.observe("chat", 5000, 700)
    assert p.predict(req("b", prompt=5000), 2000) == 700
    assert p.predict(r, 2000) == 100  # the short-prompt bucket keeps its own
    assert p.predict(req("c", cls="code"), 1500) == 1500  # other class: its prior
    assert p.predict(req("d", max_new=50), 2000) == 50  # never above max_new_tokens


def test_extension_is_the_conditional_quantile_or_double():
    p = LengthPredictor(quantile=0.9, min_samples=8)
    rng = np.random.default_rng(0)
    lens = rng.integers(10, 400, size=200)
    for n in lens:
        p.observe("chat", 200, int(n))
    r = req("a")
    r.num_output_tokens = 300
    ext = p.extend(r)
    assert ext == int(np.quantile(lens[lens > 301], 0.9, method="higher")) and ext > 301
    r.num_output_tokens = 399  # almost nothing known beyond: double
    assert p.extend(r) == 798
    r.max_new_tokens = 500
    assert p.extend(r) == 500


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError):
        LengthPredictor(quantile=0)
    with pytest.raises(ValueError):
        create_scheduler("slos-serve", SchedulerContext(PERF, 10_000, 16), {"length_quantile": 1.5})


def drive(s, requests, until=200.0):
    engine = SimulatedEngine(PERF)
    pending = sorted(requests, key=lambda r: r.arrival_s)
    events, t = [], 0.0
    while (pending or s.has_work()) and t < until:
        while pending and pending[0].arrival_s <= t + 1e-12:
            s.add(pending.pop(0), t)
        plan = s.schedule(t)
        events += plan.events
        if plan.is_empty:
            t = pending[0].arrival_s if pending else until
            continue
        res = engine.execute(plan, s.requests)
        t += res.step_s
        events += s.on_step_done(plan, res, t)
    return events


def test_learn_mode_learns_plans_less_kv_and_extends_on_overrun():
    s = create_scheduler(
        "slos-serve", SchedulerContext(PERF, 100_000, 16), {"output_length": "learn", "length_min_samples": 5}
    )
    warm = [req(f"w{i}", output=40, arrival=0.5 * i) for i in range(5)]
    drive(s, warm)
    assert all(r.is_finished for r in warm)
    u = req("u", output=200, arrival=0.0)
    assert s.lengths.planned_output(u) == 40  # learned, not max_new_tokens (2000)
    assert s.lengths.mem_blocks(u) == s.kv.blocks_for(240)
    drive(s, [u])
    assert u.is_finished and u.num_output_tokens == 200 and u.tier is Tier.SLO
    assert s.reasons["length_overrun"] >= 1 and s.reasons["overrun_demoted"] == 0
    # reserve mode (negative control) plans max_new_tokens whatever it has seen
    r = create_scheduler("slos-serve", SchedulerContext(PERF, 100_000, 16), {"output_length": "reserve"})
    assert r.lengths.planned_output(req("v")) == 2000


def test_learn_mode_plans_the_median_by_default():
    # with the overrun step-down and re-admission a request that outruns its plan mostly keeps
    # its place, so the default plans the bucket's median (docs/planner.md §5, stop 33)
    s = create_scheduler("slos-serve", SchedulerContext(PERF, 100_000, 16), {"length_min_samples": 10})
    assert s.config.output_length == "learn"
    lens = np.arange(10, 101, 10)
    drive(s, [req(f"w{i}", output=int(n), arrival=0.5 * i) for i, n in enumerate(lens)])
    planned = s.lengths.planned_output(req("u"))
    assert planned == int(np.quantile(lens, 0.5, method="higher")) == 60
    assert planned < int(np.quantile(lens, 0.7, method="higher"))  # the old default planned 80


def overrun_setup(output: int = 600, **options):
    """128 KV blocks; two admitted requests of known length hold 114 of them (they finish at
    2.2 s), so the plan of ``a``, which outruns its learned 20 tokens, can grow 20 -> 40 -> 80
    tokens but not to 160 while they run."""
    s = create_scheduler(
        "slos-serve",
        SchedulerContext(PERF, 2048, 16),
        {"output_length": "learn", "length_min_samples": 2, "best_effort_yield_kv": 1.0, **options},
    )
    drive(s, [req(f"w{i}", prompt=100, output=20, arrival=0.3 * i, max_new=900) for i in range(2)])
    known = [Request(f"b{i}", 0.0, 700, 200, 2.0, (DecodeSegment(50.0),), slo_class="chat") for i in range(2)]
    return s, known, req("a", prompt=100, output=output, max_new=900, arrival=0.0, ttft=2.0)


def test_overrun_that_does_not_fit_demotes_to_best_effort_and_the_rest_keep_their_slos():
    # without re-admission it stays best effort once the known requests are gone (the test
    # after the next brings it back)
    s, known, a = overrun_setup(overrun_readmit=False)
    events = drive(s, known + [a])
    demoted = [e for e in events if e.kind is EventKind.TIER and e.reason == "overrun"]
    assert [e.request_id for e in demoted] == ["a"] and s.reasons["overrun_demoted"] == 1
    assert s.reasons["length_overrun"] >= 3
    assert a.tier is Tier.BEST_EFFORT and a.is_finished and a.num_output_tokens == 600  # still served
    for b in known:
        times = [
            e.time_s
            for e in events
            if e.request_id == b.request_id and e.kind in (EventKind.FIRST_TOKEN, EventKind.TOKENS)
            for _ in range(e.num_tokens)
        ]
        assert b.tier is Tier.SLO and b.is_finished and len(times) == 200
        assert stage_attained(b.arrival_s, b.ttft_slo_s, b.segments, times, tolerance=0.0)


def token_times(events, rid):
    return [
        e.time_s
        for e in events
        if e.request_id == rid and e.kind in (EventKind.FIRST_TOKEN, EventKind.TOKENS)
        for _ in range(e.num_tokens)
    ]


@pytest.mark.parametrize("step_down", [True, False])
def test_an_extension_that_does_not_fit_steps_down_to_a_shorter_one_that_does(step_down):
    # the setup above, but the outrunning request stops at 110 tokens: its plan grows 20 -> 40
    # -> 80, the next doubling (160) does not fit beside the two known requests, and the
    # step-down's first try, 80 + 40 = 120 (220 tokens, 14 blocks), does: it stays admitted and
    # meets its SLO. Without the step-down (the control) it is demoted at 80 tokens.
    s, known, a = overrun_setup(110, overrun_step_down=step_down, overrun_readmit=False)
    events = drive(s, known + [a])
    assert a.is_finished and a.num_output_tokens == 110
    met = stage_attained(a.arrival_s, a.ttft_slo_s, a.segments, token_times(events, "a"), tolerance=0.0)
    if step_down:
        assert a.tier is Tier.SLO and met
        assert s.reasons["length_overrun"] == 4 and s.reasons["overrun_demoted"] == 0
    else:
        assert a.tier is Tier.BEST_EFFORT and s.reasons["overrun_demoted"] == 1
    for b in known:  # the admitted rest keep their SLOs either way
        assert b.tier is Tier.SLO and b.is_finished
        assert stage_attained(b.arrival_s, b.ttft_slo_s, b.segments, token_times(events, b.request_id), tolerance=0.0)


@pytest.mark.parametrize("readmit", [True, False])
def test_a_request_demoted_for_an_overrun_comes_back_once_its_plan_fits(readmit):
    """Demoted while the known requests hold the pool, ``a`` keeps decoding on time as best effort;
    when they finish its plan fits again and it is re-admitted (a TIER event back to the SLO
    tier): it then counts, and is guaranteed, as admitted. The control stays best effort."""
    s, known, a = overrun_setup(overrun_readmit=readmit)
    events = drive(s, known + [a])
    tier_events = [(e.tier, e.reason, e.time_s) for e in events if e.kind is EventKind.TIER and e.request_id == "a"]
    assert tier_events[0][:2] == ("best_effort", "overrun")
    known_done_s = max(max(token_times(events, b.request_id)) for b in known)
    assert a.is_finished and a.num_output_tokens == 600
    assert stage_attained(a.arrival_s, a.ttft_slo_s, a.segments, token_times(events, "a"), tolerance=0.0)
    if readmit:
        assert [t[:2] for t in tier_events[1:]] == [("slo", "readmitted")] and tier_events[1][2] >= known_done_s
        assert a.tier is Tier.SLO and s.reasons["overrun_readmitted"] == 1
    else:
        assert len(tier_events) == 1 and a.tier is Tier.BEST_EFFORT and s.reasons["overrun_readmitted"] == 0
    for b in known:
        assert b.tier is Tier.SLO
        assert stage_attained(b.arrival_s, b.ttft_slo_s, b.segments, token_times(events, b.request_id), tolerance=0.0)


def test_a_demoted_request_that_ran_late_never_comes_back():
    """The same run with the engine stalled right after the demotion until 0.3 s past the
    deadline of ``a``'s next token: that token is late, a miss already, so ``a`` is never
    re-admitted (it would count as an admitted request that missed), though it catches up with
    its later deadlines (one 10 ms step per 50 ms TPOT) and its plan fits once the known
    requests are gone."""
    s, known, a = overrun_setup()
    engine = SimulatedEngine(PERF)
    pending = sorted(known + [a], key=lambda r: r.arrival_s)
    t, stalled = 0.0, False
    while pending or s.has_work():
        while pending and pending[0].arrival_s <= t + 1e-12:
            s.add(pending.pop(0), t)
        plan = s.schedule(t)
        if plan.is_empty:
            t = pending[0].arrival_s if pending else t + 0.01
            continue
        res = engine.execute(plan, s.requests)
        t += res.step_s
        s.on_step_done(plan, res, t)
        if a.tier is Tier.BEST_EFFORT and not stalled:
            t, stalled = s.dl.slo_token_s(a, a.num_output_tokens + 1) + 0.3, True
    assert stalled and a.is_finished and a.tier is Tier.BEST_EFFORT
    assert s.reasons["overrun_demoted"] == 1 and s.reasons["overrun_readmitted"] == 0
    assert not s.overruns.demoted  # dropped for good when its late token came out


@pytest.mark.parametrize("kv_profile", [False, True])
def test_learn_mode_keeps_admitted_slos_in_the_simulator_with_and_without_the_kv_profile(kv_profile):
    from sloserve.sim import SimConfig, simulate  # noqa: PLC0415
    from sloserve.workloads import WorkloadConfig, build_workload  # noqa: PLC0415

    w = build_workload(
        WorkloadConfig(
            scenario="chatbot", rate_rps=8.0, num_requests=80, seed=2, max_seq_len=2038, output_len_known=False
        )
    )
    opts = {"output_length": "learn", "kv_profile": kv_profile, "repace": kv_profile}
    res = simulate(w.programs, SimConfig(policy="slos-serve", policy_options=opts, max_seq_len=2038, tolerance=0.0))
    s = res.summary
    assert s["reasons"]["length_overrun"] > 0  # predictions were outrun and handled
    assert s["num_admitted_slo_misses"] == 0 and s["num_admitted"] > 40
    assert s["reasons"].get("decode_overload", 0) == 0  # an admitted decode always got its KV
    assert s["num_unfinished"] == 0
