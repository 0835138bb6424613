"""The spare prefill curve slos-serve publishes (planner/spare.py) against its own admission.

The curve promises: a new request due ``h`` after the summary time, with a loose TPOT (its own
decodes do not bind), is admitted with a prompt of ``spare(h)`` tokens. It is read off the same
constraint rows and grids the DP uses, so on a fresh summary it should also be tight: a prompt
clearly above it is refused for lack of time. The tests ask ``can_admit`` on the same state.
"""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.core.plan import AdmitReason
from sloserve.core.request import Request
from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.core.slo import DecodeSegment
from sloserve.perf import get_model
from sloserve.planner.publish import SUMMARY_IDLE_STEP_S
from sloserve.planner.spare import SPARE_HORIZONS_S
from sloserve.sim.engine import SimulatedEngine

PERF = get_model("opt-13b-tp2-a100")
LOOSE_TPOT_MS = 1e5  # the newcomer's decodes are never forced within the rows' horizons


def sched(**opts):
    return create_scheduler("slos-serve", SchedulerContext(PERF, 1_000_000, 16), opts)


def step(s, engine, t):
    plan = s.schedule(t)
    res = engine.execute(plan, s.requests)
    t += res.step_s
    s.on_step_done(plan, res, t)
    return t


def busy(**opts):
    """Eight admitted requests decoding (TPOT 50 and 100 ms) plus three admitted prompts still
    waiting for their prefill (1200, 2500, 3000 tokens due 0.6, 1.2, 3.0 s from now)."""
    s, engine, t = sched(**opts), SimulatedEngine(PERF), 0.0
    for i in range(8):
        r = Request(f"d{i}", 0.0, 600, 400, 2.0, (DecodeSegment(50.0 if i % 2 else 100.0),), slo_class="c")
        assert s.add(r, 0.0).admitted
    while any(r.num_output_tokens == 0 for r in s.tiers.slo.values()):
        t = step(s, engine, t)
    for i, (prompt, ttft) in enumerate([(1200, 0.6), (2500, 1.2), (3000, 3.0)]):
        assert s.add(Request(f"p{i}", t, prompt, 100, ttft, (DecodeSegment(100.0),), slo_class="c"), t).admitted
    return s, t


def newcomer(t, prompt, horizon_s, tpot_ms=LOOSE_TPOT_MS):
    return Request("new", t, prompt, 1, horizon_s, (DecodeSegment(tpot_ms),), slo_class="new")


def check_against_can_admit(s, t, curve, tpot_ms=LOOSE_TPOT_MS, own_decodes=0, over=lambda n: int(1.5 * n) + 50):
    """Every published point: its spare is admitted, ``over(spare)`` (1.5x + 50) tokens are
    refused for lack of time. Returns the horizons where the refusal could be checked (the larger prompt must be
    feasible alone, else the reason is INFEASIBLE_SLO and says nothing about the curve).
    ``own_decodes``: tokens the newcomer's own forced decodes may take (the curve ignores them)."""
    checked = []
    for h, n in curve:
        if n > own_decodes:
            got = s.can_admit(newcomer(t, n - own_decodes, h, tpot_ms), t)
            assert got.reason is AdmitReason.ADMITTED, (h, n, got)
        over_n = over(n)
        if PERF.zero_load_prefill_s(over_n) <= h:
            got = s.can_admit(newcomer(t, over_n, h, tpot_ms), t)
            assert got.reason is AdmitReason.NO_TIME, (h, n, over_n, got)
            checked.append(h)
    return checked


@pytest.mark.parametrize("opts", [{}, {"stretch_steps": False}])
def test_spare_prompt_is_admitted_and_a_larger_one_is_not(opts):
    s, t = busy(**opts)
    summary = s.summary(t)
    curve = summary.spare_prefill_tokens
    assert tuple(h for h, _ in curve) == SPARE_HORIZONS_S
    # the admitted prompts (6700 tokens, all due within 3 s) are not spare: the curve stays
    # below what the steps alone hold, and an estimate that forgot them fails the checks below
    assert dict(curve)[4.0] < PERF.max_tokens_within_s(4.0) - 6700
    checked = check_against_can_admit(s, t, curve)
    assert len(checked) >= 6 and {0.5, 1.5, 4.0} <= set(checked)


def test_spare_with_a_step_in_flight_starts_at_its_end():
    s, t = busy()
    s.schedule(t)  # a step is in flight: plans (and the curve) start at its end
    wait = s.tiers.inflight_end_s - t
    assert wait > 0.05
    curve = s.summary(t).spare_prefill_tokens
    assert all(n == 0 for h, n in curve if h < wait) and any(n > 0 for h, n in curve if h > wait)
    assert len(check_against_can_admit(s, t, curve)) >= 6


def _random_states(seed, n=120, kv_tokens=300_000):
    """Summaries of a replica driven by random arrivals (tight and loose SLOs, some refused)."""
    rng = np.random.default_rng(seed)
    s = create_scheduler("slos-serve", SchedulerContext(PERF, kv_tokens, 16), {})
    engine, t = SimulatedEngine(PERF), 0.0
    for i in range(n):
        r = Request(
            f"r{i}",
            t,
            int(rng.integers(100, 2000)),
            int(rng.integers(20, 400)),
            float(rng.choice([0.3, 0.5, 1.0, 2.0])),
            (DecodeSegment(float(rng.choice([50.0, 100.0]))),),
            slo_class="x",
        )
        s.add(r, t)
        if i % 2 and s.has_work():
            t = step(s, engine, t)
            yield s, t, s.summary(t)


@pytest.mark.parametrize("seed", [0, 1])
def test_spare_is_monotone_in_horizon_and_matches_admission_under_load(seed):
    from sloserve.planner.spare import spare_step_s, spare_tokens

    zero_curves = 0
    for s, t, summary in _random_states(seed):
        curve = summary.spare_prefill_tokens
        values = [n for _, n in curve]
        assert tuple(h for h, _ in curve) == SPARE_HORIZONS_S
        assert all(a <= b for a, b in zip(values, values[1:])) and min(values) >= 0
        zero_curves += not any(values)
        # monotone before the running max too (the module doc's argument), on dense deadlines
        view = s.tiers.view()
        grid = s.planner.grid(
            t, spare_step_s(s.tiers.step_len_s, view.min_tpot_s, None, SUMMARY_IDLE_STEP_S), view.earliest_due_s, None
        )
        raw = np.maximum(spare_tokens(view.mandatory_rows(grid), len(view.load), t + np.linspace(0, 10, 201)), 0)
        assert (np.diff(raw) >= 0).all()
        check_against_can_admit(s, t, curve[3::3])  # a few horizons per state keeps this fast
    assert zero_curves < 30  # the load leaves room most of the time (else the test checks little)


def test_infeasible_plan_publishes_zeros():
    s, t = busy()
    for i in range(40):  # admit_all-style overload: force many prompts due soon into the tier
        r = Request(f"x{i}", t, 2000, 10, 0.3, (DecodeSegment(100.0),), slo_class="c")
        s.tiers.admit(r, s.lengths.fix_at_admission)
        s.requests[r.request_id] = r
    assert all(n == 0 for _, n in s.summary(t).spare_prefill_tokens)


def test_idle_replica_publishes_the_full_batch_rate():
    s = sched()
    summary = s.summary(0.0)
    curve = summary.spare_prefill_tokens
    values = [n for _, n in curve]
    assert tuple(h for h, _ in curve) == SPARE_HORIZONS_S and all(a <= b for a, b in zip(values, values[1:]))
    per_step = PERF.max_tokens_within_s(SUMMARY_IDLE_STEP_S)
    assert summary.prefill_tokens_per_s == per_step / SUMMARY_IDLE_STEP_S
    for h, n in curve:
        # whole idle steps by h at least; never more than one batch as long as the horizon
        assert per_step * int(h / SUMMARY_IDLE_STEP_S + 1e-9) <= n <= PERF.max_tokens_within_s(h)
        assert n > 0
    # what a newcomer whose TPOT is the idle step is offered (its step length is its TPOT): the
    # same boundary, less one token: the DP charges its own first decode, due one step after its
    # deadline, to its own row (the curve leaves a newcomer's decodes to the router's headroom).
    # Idle, the curve is close to what one prompt alone can do, so 1.5x would be refused as
    # infeasible alone; 50 tokens more is refused for lack of time (whole steps)
    checked = check_against_can_admit(s, 0.0, curve, SUMMARY_IDLE_STEP_S * 1e3, own_decodes=1, over=lambda n: n + 50)
    assert len(checked) >= 6


def test_admit_all_publishes_no_curve():
    assert sched(admit_all=True).summary(0.0).spare_prefill_tokens == ()


def test_spare_curve_round_trips_through_the_runtime_wire():
    from sloserve.routing.summary import spare_at
    from sloserve.runtime.messages import Summary, decode, encode

    s, t = busy()
    summary = s.summary(t)
    assert summary.spare_prefill_tokens and any(n for _, n in summary.spare_prefill_tokens)
    back = decode(encode(Summary(0, summary))).summary
    assert back == summary
    assert isinstance(back.spare_prefill_tokens, tuple) and all(isinstance(p, tuple) for p in back.spare_prefill_tokens)
    assert all(isinstance(h, float) and isinstance(n, int) for h, n in back.spare_prefill_tokens)
    assert spare_at(back.spare_prefill_tokens, 1.5) == dict(summary.spare_prefill_tokens)[1.5]


def _sim(router_options, router="slo-proactive"):
    from sloserve.core.slo import TTFTSLO, ProgramSpec, StageSpec
    from sloserve.sim import SimConfig
    from sloserve.sim.simulator import Simulator

    progs = [
        ProgramSpec(
            f"p{i}", 0.02 * i, "coder", (StageSpec(300 + 50 * i, 20, TTFTSLO(slowdown=5.0), (DecodeSegment(50.0),)),)
        )
        for i in range(30)
    ]
    cfg = SimConfig(
        model="opt-13b-tp2-a100", policy="slos-serve", replicas=2, router=router, router_options=router_options
    )
    return Simulator(progs, cfg)


def test_simulator_publishes_the_curve_only_for_routers_that_read_it():
    # published after every step of every replica, and costly: skipped where nobody reads it
    for opts, router, reads in [
        ({}, "slo-proactive", False),
        ({"use_can_admit": False}, "slo-proactive", True),
        ({"use_can_admit": False, "summary_spare": False}, "slo-proactive", False),
        ({}, "round-robin", False),
    ]:
        sim = _sim(opts, router)
        assert sim.router.reads_spare_budget is reads
        seen = []
        publish = type(sim.replicas[0]).publish

        def spy(rep, now_s, publish=publish, seen=seen):
            publish(rep, now_s)
            seen.append(rep.summary().spare_prefill_tokens)

        for rep in sim.replicas:
            rep.publish = spy.__get__(rep)
        sim.run()
        assert seen and all(bool(c) is reads for c in seen), (opts, router)


def test_summary_spare_false_judges_by_backlog_instead():
    from sloserve.routing.summary import PendingLedger, SummaryAdmission

    s, t = busy()
    summary = s.summary(t)
    load = PendingLedger().effective(summary, t)
    req = newcomer(t, 500, 1.5)
    assert SummaryAdmission().estimate(req, summary, load, t).reason == "spare_budget"
    assert SummaryAdmission(use_spare=False).estimate(req, summary, load, t).reason == "backlog"
