"""Every baseline through the real discrete-event simulator (sloserve.sim.simulate)."""

from __future__ import annotations

import numpy as np
import pytest
from test_policy_common import BASELINES

from sloserve.core.slo import TTFTSLO, DecodeSegment, ProgramSpec, StageSpec
from sloserve.sim import SimConfig, simulate


def programs(n: int, rate: float, seed: int, two_stage_every: int = 5) -> list[ProgramSpec]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    out = []
    for k in range(n):
        stage = StageSpec(
            int(rng.integers(20, 1200)), int(rng.integers(1, 200)), TTFTSLO(slowdown=5.0), (DecodeSegment(100.0),)
        )
        stages = (stage,)
        if k % two_stage_every == 0:  # a tool call: a second round after a delay
            stages += (
                StageSpec(
                    stage.prompt_tokens + stage.output_tokens + 30,
                    20,
                    TTFTSLO(slowdown=3.0),
                    (DecodeSegment(50.0),),
                    name="final",
                    tool_delay_s=0.3,
                ),
            )
        out.append(ProgramSpec(f"p{k}", float(t[k]), "chatbot", stages))
    return out


@pytest.mark.parametrize("policy", BASELINES + ["distserve"])
def test_every_stage_completes_in_the_simulator(policy):
    progs = programs(40, rate=4.0, seed=1)
    result = simulate(progs, SimConfig(policy=policy, kv_tokens=6000, seed=0))
    stages = sum(len(p.stages) for p in progs)
    assert len(result.records) == stages
    assert all(r.finish_s is not None and not r.rejected for r in result.records)
    assert result.summary["num_unfinished"] == 0
    if policy == "distserve":
        assert result.summary["num_replicas"] == 2 and result.summary["num_gpus"] == 4
        for r in result.records:  # decoded on the decode replica unless one token ends it
            assert r.replica_id == (1 if r.output_tokens > 1 else 0)


@pytest.mark.parametrize("policy", ["vllm", "sglang", "distserve"])
def test_simulation_is_deterministic(policy):
    progs = programs(30, rate=6.0, seed=2)
    a = simulate(progs, SimConfig(policy=policy, kv_tokens=5000, seed=3)).summary
    b = simulate(progs, SimConfig(policy=policy, kv_tokens=5000, seed=3)).summary
    a.pop("sim_wall_s"), b.pop("sim_wall_s")
    assert a == b
