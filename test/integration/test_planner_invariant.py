"""THE INVARIANT: executed with the planner's own batch-time model, no admitted request misses.

Every scenario, at light load, near capacity and in overload, with known and with unknown
output lengths (reserve mode): every stage still in the SLO tier at its end meets every
deadline with tolerance 0. A miss is a bug in the planner.
"""

import pytest

from sloserve.sim import SimConfig, simulate
from sloserve.workloads import WorkloadConfig, build_workload

SCENARIOS = ["chatbot", "coder", "summarizer", "reasoning", "tool-calling", "mixed"]
RATES = {
    "chatbot": (2, 8, 30),
    "coder": (2, 8, 30),
    "summarizer": (2, 6, 20),
    "reasoning": (1, 3, 12),
    "tool-calling": (0.5, 2, 8),
    "mixed": (2, 8, 30),
}


def admitted_misses(scenario, rate, known=True, n=60, tolerance=0.0, **opts):
    w = build_workload(
        WorkloadConfig(
            scenario=scenario, rate_rps=rate, num_requests=n, seed=3, max_seq_len=2038, output_len_known=known
        )
    )
    cfg = SimConfig(
        model="opt-13b-tp2-a100", policy="slos-serve", policy_options=opts, max_seq_len=2038, tolerance=tolerance
    )
    res = simulate(w.programs, cfg)
    slo = [r for r in res.records if r.tier == "slo" and r.completed]
    misses = [r.request_id for r in slo if not r.attained(tolerance)]
    return misses, len(slo), res.summary


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_admitted_request_misses_its_slo(scenario):
    admitted_total = 0
    n = 40 if scenario == "reasoning" else 60  # reasoning runs thousands of decode steps
    for rate in RATES[scenario]:
        misses, admitted, summary = admitted_misses(scenario, rate, n=n)
        assert misses == [], f"{scenario} @ {rate} rps: admitted misses {misses[:5]}"
        assert summary["num_admitted_slo_misses"] == 0
        admitted_total += admitted
    assert admitted_total > 0


@pytest.mark.parametrize("scenario", ["chatbot", "mixed"])
def test_no_admitted_miss_with_unknown_lengths_reserving_max_new_tokens(scenario):
    for rate in RATES[scenario][1:]:
        misses, admitted, _ = admitted_misses(scenario, rate, known=False)
        assert misses == [] and admitted > 0


def test_overload_actually_turns_requests_away():
    _, admitted, summary = admitted_misses("coder", 30)
    assert summary["num_best_effort"] > 0 and 0 < admitted < 60


def test_admit_all_ablation_does_miss_in_overload():
    """The check above can fail: without admission control admitted requests do miss."""
    misses, _, _ = admitted_misses("coder", 30, admit_all=True)
    assert misses


@pytest.mark.parametrize("scenario", ["coder", "tool-calling"])
def test_planning_with_the_metric_tolerance_keeps_the_invariant_at_that_tolerance(scenario):
    for rate in RATES[scenario][1:]:
        misses, admitted, _ = admitted_misses(scenario, rate, tolerance=0.05, planning_tolerance=0.05)
        assert misses == [] and admitted > 0


@pytest.mark.parametrize("scenario", ["chatbot", "reasoning"])
def test_kv_profile_keeps_the_invariant_and_admits_more_under_kv_pressure(scenario):
    """KV admission on the time profile (kv_profile) admits at least as many as full
    reservations where KV binds; with it no admitted request misses or is starved of KV (a
    forced decode that cannot get KV would be counted as decode_overload)."""
    n = 40 if scenario == "reasoning" else 60
    rate = RATES[scenario][1] * 2
    _, full_admitted, _ = admitted_misses(scenario, rate, n=n, kv_profile=False)
    misses, admitted, summary = admitted_misses(scenario, rate, n=n, kv_profile=True)
    assert misses == [] and summary["reasons"].get("decode_overload", 0) == 0
    assert admitted >= full_admitted


def noisy_misses(scenario, rate, noise, bias, warmup=True, **opts):
    w = build_workload(WorkloadConfig(scenario=scenario, rate_rps=rate, num_requests=60, seed=3, max_seq_len=2038))
    cfg = SimConfig(
        warmup=warmup,
        model="opt-13b-tp2-a100",
        policy="slos-serve",
        policy_options=opts,
        max_seq_len=2038,
        tolerance=0.05,
        step_time_noise=noise,
        step_time_bias=bias,
    )
    slo = [r for r in simulate(w.programs, cfg).records if r.tier == "slo" and r.completed]
    return sum(not r.attained(0.05) for r in slo), len(slo)


def test_calibration_keeps_admitted_misses_rare_on_a_noisy_and_biased_engine():
    """The engine is not the model: 10% lognormal step noise and a 5% bias. With the online
    calibration (default) admitted requests keep their SLOs to the issue's 0.1% (checked at the
    metric's 5% tolerance, planned at 0: the margin absorbs noise the quantile does not); without
    it they miss far more often (the negative control). Measured on this grid: 0 of 518 against
    17 of 518 without (docs/planner.md §6b). The last miss (coder at 30 rps) went when a stretched
    first step the plan committed to was kept after the step in flight ended late. Each replica
    has run a served replica's warm-up first (sim/warmup.py); started cold, 3 of the coder
    overload burst's 23 admitted miss, admitted before the engine was measured (the second
    control)."""
    cal = blind = admitted = cold = 0
    for scenario in ("chatbot", "coder"):
        for rate in RATES[scenario]:
            for noise, bias in ((0.1, 0.0), (0.1, 0.05)):
                m, n = noisy_misses(scenario, rate, noise, bias)
                cal, admitted = cal + m, admitted + n
                blind += noisy_misses(scenario, rate, noise, bias, calibrate=False)[0]
                if scenario == "coder" and rate == max(RATES["coder"]):
                    cold += noisy_misses(scenario, rate, noise, bias, warmup=False)[0]
    assert admitted > 300
    assert cal <= 0.001 * admitted
    assert blind >= 5 * max(cal, 1)
    assert cold >= 3 * max(cal, 1)
