"""The invariant with a roofline model that charges prefill attention (docs/planner.md §2).

``llama-3-8b-h100`` charges a prefill chunk of ``n`` tokens at context ``c`` for
``n (c + (n + 1)/2)`` attention pairs (1.2 ns each: a 2,000-token chunk deep in a 7,000-token
coder prompt costs as much again as its GEMMs). The admission grids were sized without it
(``max_tokens_within_s(L, 0, K)``), so every step that carried a long prompt overran its time,
the executor halved the chunk to fit, and admitted requests missed their TTFT: on this workload
(the command in docs/planner.md §2) 4 of 183 admitted at 12 rps and 8 of 149 at 16 rps, with
``plan_infeasible`` counted 12 and 66 times. The grids now charge every token the longest
prefill context (``batch.tokens_within``) and the executor trims a chunk to the most tokens that
fit, not to half.
"""

import pytest

from sloserve.core.plan import ScheduledItem, StepPlan
from sloserve.perf import get_model
from sloserve.planner.batch import make_grid, reads_attn, tokens_within
from sloserve.sim import SimConfig, simulate
from sloserve.workloads import WorkloadConfig, build_workload

MODEL = "llama-3-8b-h100"


def run(rate: float, **opts):
    w = build_workload(WorkloadConfig(scenario="coder", rate_rps=rate, num_requests=200, seed=0, max_seq_len=8192))
    cfg = SimConfig(
        model=MODEL, kv_tokens=400000, max_seq_len=8192, policy="slos-serve", policy_options=opts, tolerance=0.0
    )
    res = simulate(w.programs, cfg)
    slo = [r for r in res.records if r.tier == "slo" and r.completed]
    return [r.request_id for r in slo if not r.attained(0.0)], len(slo), res.summary


@pytest.mark.parametrize("rate", [12.0, 16.0])
def test_no_admitted_miss_with_prefill_attention(rate):
    misses, admitted, summary = run(rate)
    assert admitted > 100  # it still admits most of the work
    assert misses == [], f"admitted misses at {rate} rps: {misses}"
    # the engine is the model: the admitted plan never becomes infeasible
    assert summary["reasons"].get("plan_infeasible", 0) == 0


def test_grid_tokens_bound_the_attention_of_any_chunk():
    perf = get_model(MODEL)
    assert reads_attn(perf)
    kv, ctx = 20000, 7435
    n = tokens_within(perf, 0.05, kv, ctx)
    assert 0 < n < perf.max_tokens_within_s(0.05, 0, kv)  # attention costs tokens
    # the worst chunk of n tokens (at the end of the longest prompt) still fits the step
    worst = StepPlan((ScheduledItem("a", n, context_tokens=ctx - n),))
    assert perf.plan_time_s(worst) + kv * perf.terms.per_kv_token_s <= 0.05
    assert perf.batch_time_s(n + 1, 0, kv, kv + (n + 1) * ctx) > 0.05  # and it is the largest
    assert make_grid(perf, 0.0, 0.05, 1.0, kv, attn_context_tokens=ctx).step_tokens == n
    paper = get_model("opt-13b-tp2-a100")  # the paper form charges no attention: unchanged
    assert not reads_attn(paper)
    assert tokens_within(paper, 0.05, 0, ctx) == paper.max_tokens_within_s(0.05)
