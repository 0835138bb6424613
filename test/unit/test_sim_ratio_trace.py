"""A measured engine replayed: ``SimConfig.step_time_trace`` multiplies each step by the next
observed/predicted ratio of a real run, in order from a seeded offset (issue 16's prediction).
A trace of ones is the exact engine; a constant trace is a bias; bad files are refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sloserve.core.plan import ScheduledItem, StepPlan
from sloserve.core.slo import TTFTSLO, DecodeSegment, ProgramSpec, StageSpec
from sloserve.perf.presets import get_model
from sloserve.sim import SimConfig, SimulatedEngine, Simulator
from sloserve.sim.engine import read_ratio_trace, write_ratio_trace

PERF = get_model("opt-13b-tp2-a100")
PLAN = StepPlan((ScheduledItem("a", 64),))


def programs(n=60, rate=8.0):
    rng = np.random.default_rng(3)
    t, out = 0.0, []
    for i in range(n):
        t += rng.exponential(1 / rate)
        stage = StageSpec(
            int(rng.integers(32, 800)), int(rng.integers(4, 120)), TTFTSLO(slowdown=5), (DecodeSegment(100),)
        )
        out.append(ProgramSpec(f"p{i:04d}", t, "chatbot", (stage,)))
    return out


def test_replays_the_trace_in_order_from_a_seeded_offset():
    trace = np.array([1.0, 2.0, 3.0, 4.0])
    eng = SimulatedEngine(PERF, noise_rng=np.random.default_rng(7), ratio_trace=trace)
    base = PERF.plan_time_s(PLAN)
    ratios = [eng.step_time_s(PLAN) / base for _ in range(8)]
    start = int(np.random.default_rng(7).integers(4))
    assert ratios == pytest.approx([trace[(start + i) % 4] for i in range(8)])
    assert eng.step_time_s(StepPlan(())) == 0.0  # an empty step takes no ratio
    assert eng.step_time_s(PLAN) / base == pytest.approx(trace[(start + 8) % 4])


def test_file_round_trip_and_refusals(tmp_path):
    path = tmp_path / "r.trace"
    write_ratio_trace(np.array([0.9, 1.5, 2.25]), str(path), "note")
    assert read_ratio_trace(str(path)).tolist() == [0.9, 1.5, 2.25]
    bad = tmp_path / "bad.trace"
    bad.write_text("1.0\nslow\n")
    with pytest.raises(ValueError, match="bad.trace"):
        read_ratio_trace(str(bad))
    with pytest.raises(ValueError, match="all > 0"):
        SimulatedEngine(PERF, ratio_trace=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="missing"):
        Simulator(programs(3), SimConfig(step_time_trace=str(tmp_path / "missing")), PERF)


def test_ones_are_the_exact_engine_and_a_constant_is_a_bias(tmp_path):
    ones, twos = tmp_path / "ones", tmp_path / "twos"
    write_ratio_trace(np.ones(50), str(ones))
    write_ratio_trace(np.full(50, 1.3), str(twos))
    cfg = SimConfig(seed=2, warmup=False)  # the replay itself (a warm-up would count its own steps)
    exact = Simulator(programs(), cfg, PERF).run().summary
    replay = Simulator(programs(), replace(cfg, step_time_trace=str(ones)), PERF).run().summary
    biased = Simulator(programs(), replace(cfg, step_time_bias=0.3), PERF).run().summary
    const = Simulator(programs(), replace(cfg, step_time_trace=str(twos)), PERF).run().summary
    drop = ("sim_wall_s",)
    assert {k: v for k, v in exact.items() if k not in drop} == {k: v for k, v in replay.items() if k not in drop}
    for key in ("ttft_ms", "tpot_ms"):
        assert biased[key] == pytest.approx(const[key], rel=1e-9)
    assert biased["attainment"] == const["attainment"]
    assert const["ttft_ms"]["mean"] > exact["ttft_ms"]["mean"]  # the trace really slows the engine


def test_deterministic_per_seed(tmp_path):
    path = tmp_path / "noisy"
    write_ratio_trace(np.random.default_rng(0).lognormal(0.0, 0.4, 300), str(path))
    cfg = SimConfig(seed=5, step_time_trace=str(path))
    a = Simulator(programs(), cfg, PERF).run().summary
    b = Simulator(programs(), cfg, PERF).run().summary
    c = Simulator(programs(), replace(cfg, seed=6), PERF).run().summary
    a.pop("sim_wall_s"), b.pop("sim_wall_s"), c.pop("sim_wall_s")
    assert a == b and a != c
