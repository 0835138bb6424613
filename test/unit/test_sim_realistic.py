"""Realistic simulation: engine step-time noise and bias, client timeouts, charged scheduler time,
and the CLI's --realistic / --oracle-output-len. Deterministic per seed; effects in the right
direction; off by default (the paper mode is unchanged)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from sloserve.core.plan import ScheduledItem, StepPlan
from sloserve.core.slo import TTFTSLO, DecodeSegment, ProgramSpec, StageSpec
from sloserve.perf.base import ScaledModel
from sloserve.perf.presets import get_model
from sloserve.sim import SimConfig, SimulatedEngine, Simulator, simulate
from sloserve.sim.options import add_sim_arguments, build_sim_config, output_len_known
from sloserve.sim.overhead import scheduler_cost


def programs(n=150, rate=6.0, seed=0):
    rng = np.random.default_rng(seed)
    out, t = [], 0.0
    for i in range(n):
        t += rng.exponential(1 / rate)
        stage = StageSpec(
            int(rng.integers(16, 1500)), int(rng.integers(1, 300)), TTFTSLO(slowdown=5), (DecodeSegment(100),)
        )
        out.append(ProgramSpec(f"p{i:05d}", t, "chatbot", (stage,)))
    return out


def dump(summary: dict) -> str:
    return json.dumps({k: v for k, v in summary.items() if "wall" not in k}, sort_keys=True)


PLAN = StepPlan((ScheduledItem("a", 300),))


def test_noise_is_lognormal_with_the_given_cv_and_bias_scales_every_step():
    perf = get_model("opt-13b-tp2-a100")
    base = perf.plan_time_s(PLAN)
    eng = SimulatedEngine(perf, noise_cv=0.1, noise_rng=np.random.default_rng(3))
    ratios = np.array([eng.step_time_s(PLAN) / base for _ in range(20_000)])
    assert ratios.mean() == pytest.approx(1.0, abs=0.005)
    assert ratios.std() / ratios.mean() == pytest.approx(0.1, rel=0.05)
    assert ratios.min() > 0
    biased = SimulatedEngine(perf, bias=0.05)
    assert biased.step_time_s(PLAN) == pytest.approx(1.05 * base)
    assert SimulatedEngine(perf).step_time_s(PLAN) == base  # exact by default
    with pytest.raises(ValueError):
        SimulatedEngine(perf, noise_cv=-0.1)


@pytest.mark.parametrize("policy", ["vllm", "slos-serve"])
def test_noisy_runs_are_byte_identical_per_seed_and_differ_across_seeds(policy):
    progs = programs()
    cfg = SimConfig(policy=policy, step_time_noise=0.1, step_time_bias=0.05, seed=1, chrome_trace=True)
    a, b = simulate(progs, cfg), simulate(progs, cfg)
    assert dump(a.summary) == dump(b.summary) and a.steps == b.steps
    other = simulate(
        progs, SimConfig(policy=policy, step_time_noise=0.1, step_time_bias=0.05, seed=2, chrome_trace=True)
    )
    assert other.steps != a.steps
    exact = simulate(progs, SimConfig(policy=policy, seed=1, chrome_trace=True))
    # biased engine: the same work takes longer in all
    assert (
        a.summary["gpu_busy_fraction"] * a.summary["sim_time_s"]
        > exact.summary["gpu_busy_fraction"] * exact.summary["sim_time_s"]
    )


def test_default_config_is_the_exact_engine():
    progs = programs(n=60)
    a = simulate(progs, SimConfig(policy="slos-serve", chrome_trace=True))
    b = simulate(progs, SimConfig(policy="slos-serve", step_time_noise=0.0, step_time_bias=0.0, chrome_trace=True))
    assert a.steps == b.steps and a.summary["num_client_timeouts"] == 0 and a.summary["scheduler_time_s"] == 0


@pytest.mark.parametrize("policy", ["vllm", "sarathi", "slos-serve"])
def test_client_timeout_aborts_requests_without_a_first_token_for_every_policy(policy):
    progs = programs(rate=12.0)  # overload: some first tokens come late
    plain = Simulator(progs, SimConfig(policy=policy)).run()
    sim = Simulator(progs, SimConfig(policy=policy, client_timeout=True))
    res = sim.run()
    s = res.summary
    timed_out = [r for r in res.records if r.reason == "client_timeout"]
    assert s["num_client_timeouts"] == len(timed_out) > 0
    assert plain.summary["num_client_timeouts"] == 0  # negative control
    assert all(r.rejected and not r.token_times and not r.attained() for r in timed_out)
    assert s["num_unfinished"] == 0 and all(r.completed or r.rejected for r in res.records)
    assert sim.replicas[0].scheduler.kv.used_blocks == 0
    # late requests no longer hold the engine: the others do at least as well
    assert s["attainment"] >= plain.summary["attainment"] - 0.02


def test_best_effort_expiry_ends_only_unadmitted_requests_not_started_by_their_deadline():
    """The SGLang plugin's overload rule in the simulator: in overload slos-serve leaves requests
    to best effort; those not started by their TTFT deadline end there, counted as misses,
    with nothing left held. Off, none is (the control)."""
    progs = programs(rate=12.0)
    plain = Simulator(progs, SimConfig(policy="slos-serve")).run()
    sim = Simulator(progs, SimConfig(policy="slos-serve", best_effort_expiry=True))
    res = sim.run()
    expired = [r for r in res.records if r.reason == "best_effort_expired"]
    assert res.summary["num_best_effort_expired"] == len(expired) > 0
    assert "num_best_effort_expired" not in plain.summary  # off: the summary keeps its bytes
    assert not any(r.reason == "best_effort_expired" for r in plain.records)
    assert all(r.rejected and not r.token_times and not r.attained() for r in expired)
    assert res.summary["num_unfinished"] == 0 and sim.replicas[0].scheduler.kv.used_blocks == 0
    assert res.summary["attainment"] >= plain.summary["attainment"] - 0.02


def test_charged_scheduler_time_follows_the_cost_model_and_delays_steps():
    progs = programs(n=80)
    for policy in ("vllm", "slos-serve"):
        plain = simulate(progs, SimConfig(policy=policy, chrome_trace=True))
        charged = simulate(progs, SimConfig(policy=policy, charge_scheduler_time=True, chrome_trace=True))
        cost = scheduler_cost(policy)
        assert charged.summary["scheduler_time_s"] >= cost.schedule_s * charged.summary["num_steps"]
        assert sum(d for _, _, d, _, _ in charged.steps) == pytest.approx(
            sum(d for _, _, d, _, _ in plain.steps) + charged.summary["scheduler_time_s"], rel=0.05
        )
        assert dump(charged.summary) == dump(
            simulate(progs, SimConfig(policy=policy, charge_scheduler_time=True)).summary
        )
    assert scheduler_cost("slos-serve").schedule_cost_s(256) > scheduler_cost("vllm").schedule_cost_s(256)


def parse(*argv):
    p = argparse.ArgumentParser()
    add_sim_arguments(p)
    return p.parse_args(list(argv))


def test_cli_realistic_preset_and_oracle_override():
    cfg = build_sim_config(parse())
    assert (cfg.step_time_noise, cfg.client_timeout, cfg.charge_scheduler_time) == (0.0, False, False)
    assert not output_len_known(parse())  # hidden by default: a real server never knows them
    assert output_len_known(parse("--oracle-output-len"))
    real = parse("--realistic")
    cfg = build_sim_config(real)
    assert (cfg.step_time_noise, cfg.client_timeout, cfg.charge_scheduler_time) == (0.1, True, True)
    assert not output_len_known(real)
    assert output_len_known(parse("--realistic", "--oracle-output-len"))
    assert not output_len_known(parse("--unknown-output-len"))
    cfg = build_sim_config(parse("--realistic", "--step-time-noise", "0", "--step-time-bias", "0.05"))
    assert (cfg.step_time_noise, cfg.step_time_bias) == (0.0, 0.05)
    with pytest.raises(ValueError):
        SimConfig(step_time_noise=-1)


def test_the_bias_known_oracle_plans_with_the_engines_true_speed():
    """--step-time-bias-known: the policy's model is the engine's true mean speed, so a
    calibrating planner finds nothing to correct (every ratio exactly 1); told nothing, it
    corrects the bias. SLOs resolve with the model as given either way."""
    base = get_model("opt-13b-tp2-a100")
    told = Simulator(programs(40), SimConfig(step_time_bias=0.2, step_time_bias_known=True, max_seq_len=2038))
    assert told.replicas[0].scheduler.ctx.perf.base.batch_time_s(300) == pytest.approx(1.2 * base.batch_time_s(300))
    blind = Simulator(programs(40), SimConfig(step_time_bias=0.2, max_seq_len=2038))
    res_told, res_blind = told.run(), blind.run()
    stats_told = told.replicas[0].scheduler.stats()
    assert stats_told["calibration_scale"] == 1.0 and stats_told["calibration_ratio_p50"] == pytest.approx(1.0)
    assert blind.replicas[0].scheduler.stats()["calibration_scale"] >= 1.2
    assert [r.ttft_slo_s for r in res_told.records] == [r.ttft_slo_s for r in res_blind.records]
    assert build_sim_config(parse("--step-time-bias", "0.05", "--step-time-bias-known")).step_time_bias_known
    scaled = ScaledModel(base, 1.2)
    n = scaled.max_tokens_within_s(0.1)
    assert scaled.batch_time_s(n) <= 0.1 < scaled.batch_time_s(n + 1)
    with pytest.raises(ValueError):
        ScaledModel(base, 0.0)
