"""Best-effort work pads a step only to a fraction of the tightest TTFT among recent requests, so an
SLO request arriving during the step is not turned away (issue 16; the padding to the full step is
the control), and best effort alone still gets steps."""

from __future__ import annotations

from sloserve.core.request import Request
from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.core.slo import DecodeSegment
from sloserve.perf.paper import Line, PaperLinesModel
from sloserve.sim.engine import SimulatedEngine

PERF = PaperLinesModel("toy", (Line(1e-4, 0.0, 0.005),))  # 5 ms + 0.1 ms per token


def req(rid, arrival=0.0, prompt=200, output=40, ttft=0.1, tpot_ms=40.0):
    return Request(rid, arrival, prompt, output, ttft, (DecodeSegment(tpot_ms),))


def first_step_s(frac: float) -> float:
    """Batch time of the first step with best-effort backlog beside one admitted SLO request."""
    s = create_scheduler("slos-serve", SchedulerContext(PERF, 1_000_000, 16), {"best_effort_step_frac": frac})
    assert s.add(req("slo", prompt=64, output=200, ttft=0.08, tpot_ms=200.0), 0.0).admitted
    for i in range(8):
        be = req(f"be{i}", prompt=2000, output=10, ttft=5.0)
        be.route_best_effort = True
        s.add(be, 0.0)
    plan = s.schedule(0.0)
    assert "slo" in {it.request_id for it in plan.items}  # the admitted prefill is in either way
    return PERF.plan_time_s(plan)


def test_best_effort_pads_a_step_only_to_a_fraction_of_the_tightest_ttft():
    capped = first_step_s(0.25)
    assert capped <= 0.25 * 0.08 + 1e-9
    assert first_step_s(0.0) > 2 * capped  # control: without the cap best effort fills the step


def running_best_effort_step(forced: bool):
    """Four best-effort requests decoding, then an SLO arrival with a long prompt: its first
    prefill chunk, and whether the best-effort decodes are in the step's plan."""
    s = create_scheduler("slos-serve", SchedulerContext(PERF, 1_000_000, 16), {"best_effort_decodes_forced": forced})
    engine, t = SimulatedEngine(PERF), 0.0
    for i in range(4):
        be = req(f"be{i}", prompt=32, output=400, ttft=5.0)
        be.route_best_effort = True
        s.add(be, 0.0)
    while any(s.request(f"be{i}").num_output_tokens == 0 for i in range(4)):
        plan = s.schedule(t)
        res = engine.execute(plan, s.requests)
        t += res.step_s
        s.on_step_done(plan, res, t)
    assert s.add(req("slo", arrival=t, prompt=3000, output=20, ttft=2.0, tpot_ms=40.0), t).admitted
    plan = s.schedule(t)
    items = {it.request_id: it.num_tokens for it in plan.items}
    return items.get("slo", 0), sum(1 for k in items if k.startswith("be"))


def test_running_best_effort_decodes_are_planned_when_the_engine_runs_them():
    """SGLang decodes every running request each step: with the option the plan carries the
    four best-effort decodes and sizes the SLO prefill chunk with their cost; without it (the
    control) the chunk takes the whole step and the best-effort decodes are left out of it."""
    chunk_forced, be_forced = running_best_effort_step(True)
    chunk_plain, be_plain = running_best_effort_step(False)
    assert be_forced == 4 and chunk_forced > 0
    assert be_plain < 4 and chunk_plain > chunk_forced
