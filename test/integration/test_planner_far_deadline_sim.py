"""Sparse far step counts (planner/batch.py ``DENSE_STEPS``) change no decision: simulations of
the built-in scenarios, and of workloads with far deadlines, are byte-identical whether the
forced-decode counts are all dense, all sparse, or split at the default (issue 13, defect 2)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest

import sloserve.planner.batch as batch
from forced_tables import forced_tables
from sloserve.core.slo import TTFTSLO
from sloserve.sim import SimConfig, simulate
from sloserve.spec import SpecConfig, speculative_policy
from sloserve.workloads import WorkloadConfig, build_workload

RATES = {"chatbot": 8, "coder": 8, "summarizer": 6, "reasoning": 3, "tool-calling": 2, "mixed": 8}
ALL_DENSE = 10**12  # no sparse part: the table before the fix


def run(programs, policy: str = "slos-serve", options=None, spec=None) -> tuple[str, int]:
    """(the simulation as JSON: summary without wall times, every record, every step;
    how many far step counts the planner's tables held in all)."""
    with forced_tables() as tables:
        cfg = SimConfig(
            model="opt-13b-tp2-a100", policy=policy, policy_options=options or {}, max_seq_len=2038, spec=spec
        )
        res = simulate(programs, cfg)
    summary = {k: v for k, v in res.summary.items() if "wall" not in k}
    out = json.dumps([summary, [asdict(r) for r in res.records], res.steps], sort_keys=True, default=str)
    return out, sum(t.far_m.size for t in tables)


def workload(scenario: str, n: int = 40):
    cfg = WorkloadConfig(scenario=scenario, rate_rps=RATES[scenario], num_requests=n, seed=3, max_seq_len=2038)
    return build_workload(cfg).programs


@pytest.mark.parametrize("scenario", sorted(RATES))
def test_builtin_scenarios_stay_dense_and_decide_as_when_all_counts_are_sparse(scenario, monkeypatch):
    programs = workload(scenario)
    default, far = run(programs)
    assert far == 0  # ordinary deadlines never leave the dense part: ordinary plans cost what they did
    monkeypatch.setattr(batch, "DENSE_STEPS", 0)
    all_sparse, far_sparse = run(programs)
    assert far_sparse > 0 and all_sparse == default


def with_far_deadlines(programs, ttft_ms: float = 30_000.0):
    """Every third program's stages due ``ttft_ms`` after arrival (hundreds of steps away)."""
    return [
        replace(p, stages=tuple(replace(s, ttft=TTFTSLO(absolute_ms=ttft_ms)) for s in p.stages)) if i % 3 == 0 else p
        for i, p in enumerate(programs)
    ]


@pytest.mark.parametrize(
    "policy,options,spec",
    [
        ("slos-serve", {}, None),
        ("slos-serve", {"kv_profile": True}, None),
        (speculative_policy("slos-serve"), {}, SpecConfig(mode="adaptive", alpha_prior=0.8, max_spec_len=4)),
    ],
)
def test_far_deadlines_decide_as_with_a_dense_only_table(policy, options, spec, monkeypatch):
    programs = with_far_deadlines(workload("mixed"))
    default, far = run(programs, policy, options, spec)
    assert far > 0  # the sparse part was used
    monkeypatch.setattr(batch, "DENSE_STEPS", ALL_DENSE)
    dense, far_dense = run(programs, policy, options, spec)
    assert far_dense == 0 and dense == default
