"""The simulated warm-up (sim/warmup.py): a replica whose engine is not the model runs a served
replica's warm-up requests before the first arrival, so a calibrating policy plans its first
admissions on a measured engine; with the exact engine, or with --no-warmup, nothing runs."""

from __future__ import annotations

import argparse
import json

import pytest
from test_sim_realistic import dump, programs

from sloserve.sim import SimConfig, Simulator
from sloserve.sim.options import add_sim_arguments, build_sim_config
from sloserve.sim.warmup import ID_PREFIX, WARMUP_REQUESTS


def calibration_steps(sim: Simulator) -> int:
    return sim.replicas[0].scheduler.stats().get("calibration_steps", 0)


def test_a_noisy_engine_is_measured_before_the_first_arrival_and_the_replica_starts_empty():
    sim = Simulator(programs(20), SimConfig(step_time_noise=0.1, max_seq_len=2038))
    sched = sim.replicas[0].scheduler
    # enough steps for the calibration to leave its prior (min_samples 8), all at t < 0
    assert calibration_steps(sim) >= 8
    assert not sched.resident and not sched.has_work()
    assert sched.stats()["reasons"]["admitted"] == WARMUP_REQUESTS
    warm_steps = sim.replicas[0].warmup_steps
    assert warm_steps == sched.num_steps > 0
    res = sim.run()
    assert res.summary["num_steps"] == sched.num_steps - warm_steps  # served steps only
    assert len(res.records) == 20 and not any(r.request_id.startswith(ID_PREFIX) for r in res.records)
    assert min(r.arrival_s for r in res.records) >= 0


def test_no_warmup_with_the_exact_engine_or_when_switched_off():
    assert calibration_steps(Simulator(programs(20), SimConfig(max_seq_len=2038))) == 0
    cold = Simulator(programs(20), SimConfig(step_time_noise=0.1, max_seq_len=2038, warmup=False))
    assert calibration_steps(cold) == 0 and "admitted" not in cold.replicas[0].scheduler.stats()["reasons"]
    p = argparse.ArgumentParser()
    add_sim_arguments(p)
    assert build_sim_config(p.parse_args([])).warmup
    assert not build_sim_config(p.parse_args(["--realistic", "--no-warmup"])).warmup


def test_the_warmup_draws_from_its_own_streams_and_stays_deterministic():
    """Warm-up steps draw noise and draft acceptance from their own seeded generators: a run
    with a warm-up repeats byte for byte, and the served run's engine draws what it drew cold
    (its first step's noise is the same draw)."""
    cfg = SimConfig(step_time_noise=0.1, max_seq_len=2038)
    assert dump(Simulator(programs(60), cfg).run().summary) == dump(Simulator(programs(60), cfg).run().summary)
    warm = Simulator(programs(5), cfg).replicas[0].engine
    cold = Simulator(programs(5), SimConfig(step_time_noise=0.1, max_seq_len=2038, warmup=False)).replicas[0].engine
    assert warm.noise_rng.random() == cold.noise_rng.random() and warm.rng.random() == cold.rng.random()


@pytest.mark.parametrize("policy", ["vllm", "sglang", "edf", "distserve"])
def test_every_policy_warms_up_and_then_serves(policy):
    """Baselines learn nothing from it, but a served baseline warms up too; a disaggregated
    decode replica that is handed a fresh prompt must not hang the warm-up."""
    opts = {"prefill_replicas": 1, "decode_replicas": 1} if policy == "distserve" else {}
    cfg = SimConfig(policy=policy, policy_options=opts, step_time_noise=0.1, max_seq_len=2038)
    res = Simulator(programs(30), cfg).run()
    assert len(res.records) == 30 and res.summary["num_completed"] == 30
    assert json.loads(dump(res.summary))["attainment"] > 0.5
