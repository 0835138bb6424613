"""The simulated engine's own step time (``SimConfig.engine_model``): a line in requests, tokens
and KV read fitted to a served engine's steps, run by the simulator while the planner keeps its
model, as on a real engine (issue 16's prediction)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from sloserve.core.plan import ScheduledItem, StepPlan
from sloserve.perf.paper import Line, PaperLinesModel
from sloserve.sim import SimConfig, Simulator
from sloserve.sim.step_cost import StepCost
from sloserve.workloads import WorkloadConfig, build_workload


def programs(n=60):
    return build_workload(WorkloadConfig(scenario="chatbot", rate_rps=8.0, num_requests=n, seed=3)).programs


def test_prices_each_request_token_and_context_token():
    cost = StepCost(base_s=0.002, per_item_s=0.0006, per_token_s=0.00005, per_kv_token_s=0.000001)
    decodes = StepPlan(tuple(ScheduledItem(f"d{i}", 1, context_tokens=100) for i in range(10)))
    prefill = StepPlan((ScheduledItem("p", 10),))
    assert cost.plan_time_s(decodes) == pytest.approx(0.002 + 10 * 0.0006 + 10 * 0.00005 + 1000 * 0.000001)
    assert cost.plan_time_s(prefill) == pytest.approx(0.002 + 0.0006 + 10 * 0.00005)  # same tokens, 9 fewer requests
    with pytest.raises(ValueError, match=">= 0"):
        StepCost(0.001, -0.1, 0.0, 0.0)


def test_fit_recovers_a_line_and_never_a_negative_coefficient():
    rng = np.random.default_rng(0)
    items = rng.integers(1, 25, 400)
    tokens = items + rng.integers(0, 300, 400) * (rng.random(400) < 0.3)
    kv = items * rng.integers(50, 400, 400)
    true = StepCost(0.002, 0.0006, 0.00004, 0.000002)
    times = [true.step_time_s(*shape) for shape in zip(items, tokens, kv)]
    got = StepCost.fit(items, tokens, kv, times)
    assert got.per_item_s == pytest.approx(0.0006, rel=1e-6) and got.base_s == pytest.approx(0.002, rel=1e-6)
    # a time that falls with context is noise: that coefficient is held at 0, the rest refitted
    tilted = StepCost.fit(items, tokens, kv, [t - 3e-6 * k for t, k in zip(times, kv)])
    assert tilted.per_kv_token_s == 0.0 and min(tilted.base_s, tilted.per_item_s, tilted.per_token_s) >= 0
    with pytest.raises(ValueError, match="5\\+ finite"):
        StepCost.fit([1, 2], [1, 2], [0, 0], [0.001, 0.002])
    # SGLang's CPU path: requests in an extend batch (a chunk, decodes riding along) pay apart
    extend_engine = StepCost(0.003, 0.0, 0.000015, 0.000002, 0.0013)
    times = [extend_engine.step_time_s(*shape) for shape in zip(items, tokens, kv)]
    got = StepCost.fit(items, tokens, kv, times)
    assert got.per_extend_item_s == pytest.approx(0.0013, rel=1e-6) and got.per_item_s == pytest.approx(0.0, abs=1e-9)
    assert extend_engine.step_time_s(12, 12, 0) < extend_engine.step_time_s(12, 13, 0) - 0.015


def test_file_round_trip_and_refusals(tmp_path):
    cost = StepCost(0.001, 0.0005, 0.00003, 0.0)
    cost.save(tmp_path / "c.json")
    assert StepCost.load(tmp_path / "c.json") == cost
    (tmp_path / "fit.json").write_text(json.dumps({"lines": []}))  # a batch-time fit is not a step cost
    for bad in ("fit.json", "missing.json"):
        with pytest.raises(ValueError, match="engine model"):
            StepCost.load(tmp_path / bad)


def test_the_simulator_runs_the_engine_model_while_the_planner_keeps_its_own(tmp_path):
    planner = PaperLinesModel("one-line", (Line(per_token_s=7e-5, per_spec_step_s=0.0, base_s=0.03),))
    base = SimConfig(seed=2, warmup=False)  # the engine model itself (a warm-up would count its own steps)
    same = tmp_path / "same.json"
    StepCost(0.03, 0.0, 7e-5, 0.0).save(same)  # the planner's own model restated: the same run
    exact = Simulator(programs(), base, planner).run().summary
    restated = Simulator(programs(), replace(base, engine_model=str(same)), planner).run().summary
    exact.pop("sim_wall_s"), restated.pop("sim_wall_s")  # the simulator's own run time
    assert restated == exact
    # an engine that pays 20 ms per request in a step is slower than the plan: more misses
    slow = tmp_path / "slow.json"
    StepCost(0.03, 0.02, 7e-5, 0.0).save(slow)
    worse = Simulator(programs(), replace(base, engine_model=str(slow)), planner).run().summary
    assert worse["attainment"] < exact["attainment"]
    with pytest.raises(ValueError, match="engine model"):
        Simulator(programs(3), replace(base, engine_model=str(tmp_path / "missing.json")), planner)
