"""StepTimer (wall step times for calibration) and the scheduler warm-up, without a server."""

from __future__ import annotations

import time

import pytest

from sloserve.core.plan import ScheduledItem, StepPlan, StepResult
from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.perf import get_model
from sloserve.runtime.engine import SimulatedWallEngine
from sloserve.runtime.step_timing import StepTimer, policy_options_with_calibration
from sloserve.runtime.warmup import ID_PREFIX, warm_up

PERF = get_model("opt-13b-tp2-a100")
PLAN = StepPlan((ScheduledItem("r", 64),))


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_step_time_runs_from_planning_or_the_previous_step_end():
    clock = FakeClock()
    timer = StepTimer(PERF, feed=True, time_scale=1.0, clock=clock)
    predicted = PERF.plan_time_s(PLAN)
    timer.begin()
    clock.t += 2 * predicted
    out = timer.end(PLAN, StepResult(predicted))
    assert out.step_s == pytest.approx(2 * predicted)
    clock.t += predicted  # back to back: the gap (messages, admission) belongs to the next step
    timer.begin()
    clock.t += predicted
    assert timer.end(PLAN, StepResult(predicted)).step_s == pytest.approx(2 * predicted)
    timer.idle()
    clock.t += 5.0  # an idle wait is not a step
    timer.begin()
    clock.t += predicted
    assert timer.end(PLAN, StepResult(predicted)).step_s == pytest.approx(predicted)
    assert timer.stats({})["step_ratio_p50"] == pytest.approx(2.0)
    assert timer.stats({})["steps_timed"] == 3


def test_unlearned_and_unfed_steps():
    clock = FakeClock()
    timer = StepTimer(PERF, feed=False, time_scale=1.0, clock=clock)
    timer.begin()
    clock.t += 1.0
    assert timer.end(PLAN, StepResult(0.03)).step_s == 0.03  # not fed: the engine's own time
    timer.begin()
    clock.t += 1.0
    assert timer.end(PLAN, StepResult(0.03), learn=False).step_s == 0.0  # the calibrator skips 0
    assert timer.stats({})["steps_timed"] == 1
    assert not StepTimer(PERF, feed=True, time_scale=0.0).feed  # a zero-time engine teaches nothing


def test_calibration_switch_reaches_only_policies_that_have_it():
    assert policy_options_with_calibration("slos-serve", {"x": 1}, False) == {"x": 1, "calibrate": False}
    assert policy_options_with_calibration("slos-serve", {}, True) == {}
    assert policy_options_with_calibration("fcfs", {}, False) == {}


def test_warmup_leaves_an_empty_scheduler_and_a_measured_model():
    ctx = SchedulerContext(perf=PERF, kv_capacity_tokens=8192, block_size_tokens=16, max_seq_len_tokens=2048)
    sched = create_scheduler("slos-serve", ctx, {})
    engine = SimulatedWallEngine(PERF, time_scale=0.02)
    timer = StepTimer(PERF, feed=True, time_scale=0.02)
    out = warm_up(sched, ctx, engine, timer, now=time.monotonic)
    assert out["warmup_steps"] >= 8
    assert not any(rid.startswith(ID_PREFIX) for rid in sched.requests) and sched.kv.used_blocks == 0
    assert timer.steps_timed >= 6  # the cold steps are not learned from


def test_warmup_skips_a_slow_engine():
    ctx = SchedulerContext(perf=PERF, kv_capacity_tokens=8192, block_size_tokens=16, max_seq_len_tokens=2048)
    sched = create_scheduler("slos-serve", ctx, {})
    engine = SimulatedWallEngine(PERF, time_scale=2000)
    out = warm_up(sched, ctx, engine, StepTimer(PERF, feed=True, time_scale=2000), now=lambda: 0.0)
    assert out == {"warmup_steps": 0, "warmup_s": 0.0} and sched.num_steps == 0


def test_the_sglang_plugin_defaults_to_the_affine_form_at_the_p80_unless_told():
    from sloserve.runtime.step_timing import live_policy_options

    assert live_policy_options("slos-serve", {})["calibrate_form"] == "affine"
    assert live_policy_options("slos-serve", {})["calibrate_quantile"] == 0.8
    assert live_policy_options("slos-serve", {"calibrate_quantile": 0.99})["calibrate_quantile"] == 0.99
    assert live_policy_options("slos-serve", {"calibrate_form": "scale"})["calibrate_form"] == "scale"
    assert "calibrate_form" not in live_policy_options("fcfs", {})  # a policy without the option


def test_the_embedded_runtime_keeps_the_single_p99_it_was_soak_tested_with():
    from sloserve.runtime.step_timing import EMBEDDED_POLICY_DEFAULTS, live_policy_options

    options = live_policy_options("slos-serve", {}, EMBEDDED_POLICY_DEFAULTS)
    sched = create_scheduler("slos-serve", SchedulerContext(get_model("opt-13b-tp2-a100"), 97648, 16), options)
    assert sched.calib.quantile == 0.99 and sched.calib.tail_quantile == 0.0
    default = create_scheduler("slos-serve", SchedulerContext(get_model("opt-13b-tp2-a100"), 97648, 16), {})
    assert default.calib.quantile == 0.9 and default.calib.tail_quantile == 0.9999  # the simulator's
    told = live_policy_options("slos-serve", {"calibrate_tail_quantile": 0.999}, EMBEDDED_POLICY_DEFAULTS)
    assert told["calibrate_tail_quantile"] == 0.999 and told["calibrate_quantile"] == 0.99


def test_served_replicas_keep_the_physical_kv_growth_bound():
    """The KV growth counted from observation (planner/growth.py) was measured in the simulator
    only: the plugin's and the embedded runtime's defaults keep the physical bound."""
    from sloserve.runtime.step_timing import EMBEDDED_POLICY_DEFAULTS, LIVE_POLICY_DEFAULTS, live_policy_options
    from sloserve.spec import SpecConfig

    ctx = SchedulerContext(get_model("opt-13b-tp2-a100"), 97648, 16, spec=SpecConfig(mode="adaptive"))
    assert create_scheduler("slos-serve", ctx, {}).kvp.growth_cal is not None  # the simulator's default
    plain = SchedulerContext(get_model("opt-13b-tp2-a100"), 97648, 16)
    assert create_scheduler("slos-serve", plain, {}).kvp.growth_cal is None  # speculation only
    for defaults in (LIVE_POLICY_DEFAULTS, EMBEDDED_POLICY_DEFAULTS):
        options = live_policy_options("slos-serve", {}, defaults)
        assert create_scheduler("slos-serve", ctx, options).kvp.growth_cal is None
    told = live_policy_options("slos-serve", {"kv_growth_calibrate": True}, LIVE_POLICY_DEFAULTS)
    assert create_scheduler("slos-serve", ctx, told).kvp.growth_cal is not None
