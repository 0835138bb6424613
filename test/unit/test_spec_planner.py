"""Speculative batch planner (sloserve.spec.planner) against planner.batch and a step-by-step oracle."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.perf.presets import get_model
from sloserve.planner.batch import DecodeLoad, forecast, make_grid
from sloserve.spec.acceptance import planned_tokens
from sloserve.spec.config import SpecConfig
from sloserve.spec.planner import NO_SPEC, TierSpecPlan, make_spec_grid, plan_tiers, spec_forecast, spec_load

PERF = get_model("opt-13b-tp2-a100")


def _load(rng, n, tpots=(0.05, 0.1, 0.2), first_due_lo_s=0.0):
    tp = rng.choice(tpots, n)
    due = rng.uniform(first_due_lo_s, 0.3, n)
    cap = rng.integers(1, 200, n)
    return DecodeLoad(due, tp.astype(float), cap.astype(np.int64))


def test_without_speculation_it_is_the_ordinary_forecast():
    rng = np.random.default_rng(0)
    load = _load(rng, 40)
    grid = make_grid(PERF, 0.0, 0.05, float(load.first_due_s.min()))
    ones = TierSpecPlan(None, {0.05: 1, 0.1: 1, 0.2: 1}, {0.05: 1.0, 0.1: 1.0, 0.2: 1.0})
    deadlines = np.linspace(0.01, 3.0, 25)
    a = forecast(grid, load, deadlines)
    b = spec_forecast(grid, spec_load(load, ones), deadlines)
    assert np.array_equal(a.budget_tokens, b.budget_tokens) and a.feasible == b.feasible
    assert np.array_equal(a.steps, b.steps)


def _oracle_positions(grid, sload, m):
    """Step by step: a stream is forced into step k when its expected next due <= T_{k+1}."""
    total = 0
    for i in range(len(sload)):
        due = float(sload.base.first_due_s[i])
        used = 0
        for k in range(m):
            if used < sload.max_steps[i] and due <= float(grid.forced_horizon_s(k + 1)) + 1e-9:
                used += 1
                total += int(sload.positions[i])
                due += float(sload.spacing_s[i])
    return total


@pytest.mark.parametrize("alpha", [0.6, 0.8])
def test_forced_positions_match_a_step_by_step_oracle(alpha):
    rng = np.random.default_rng(3)
    load = _load(rng, 30)
    spec = SpecConfig(mode="adaptive", alpha_prior=alpha, max_spec_len=5)
    tiers = plan_tiers(PERF, spec, [(float(p), alpha) for p in load.tpot_s])
    assert tiers.choice is not None and tiers.spec_steps >= 1
    grid = make_spec_grid(PERF, 0.0, tiers, float(load.first_due_s.min()))
    sload = spec_load(load, tiers)
    assert np.all(sload.spacing_s >= grid.step_len_s - 1e-9)  # every tier keeps up in expectation
    deadlines = np.linspace(0.05, 4.0, 12)
    fc = spec_forecast(grid, sload, deadlines)
    for _d, m, budget in zip(deadlines, fc.steps, fc.budget_tokens):
        assert budget == int(grid.tokens_by(m)) - _oracle_positions(grid, sload, int(m))


def test_speculation_raises_the_planned_prefill_budget():
    rng = np.random.default_rng(5)
    load = _load(rng, 60, tpots=(0.05,), first_due_lo_s=0.2)
    deadlines = np.array([1.0, 2.0, 5.0])
    plain = forecast(make_grid(PERF, 0.0, 0.05, float(load.first_due_s.min())), load, deadlines)
    spec = SpecConfig(mode="adaptive", alpha_prior=0.8, max_spec_len=5)
    tiers = plan_tiers(PERF, spec, [(0.05, 0.8)] * 60)
    grid = make_spec_grid(PERF, 0.0, tiers, float(load.first_due_s.min()))
    fast = spec_forecast(grid, spec_load(load, tiers), deadlines)
    assert fast.feasible and plain.feasible
    assert np.all(fast.budget_tokens[1:] > 1.3 * plain.budget_tokens[1:])
    # the grid pays for the drafts: a full step's predicted time is within its length
    assert PERF.batch_time_s(grid.step_tokens, tiers.spec_steps) <= grid.step_len_s
    assert tiers.effective_tpot_s(0.05) == pytest.approx(
        0.05 * planned_tokens(0.8, tiers.positions(0.05), spec.safety_margin) / tiers.positions(0.05)
    )


def test_plan_tiers_modes():
    decodes = [(0.05, 0.8)] * 10 + [(0.2, 0.8)] * 10
    assert plan_tiers(PERF, None, decodes) is NO_SPEC
    assert plan_tiers(PERF, SpecConfig(mode="off"), decodes) is NO_SPEC
    assert plan_tiers(PERF, SpecConfig(), []) is NO_SPEC
    fixed = plan_tiers(PERF, SpecConfig(mode="fixed", fixed_len=3, alpha_prior=0.8), decodes)
    assert fixed.positions(0.05) == fixed.positions(0.2) == 3 and fixed.spec_steps == 2
    assert fixed.step_len_s == pytest.approx(0.05 * planned_tokens(0.8, 3, 0.15))
    adaptive = plan_tiers(PERF, SpecConfig(alpha_prior=0.8), decodes)
    assert adaptive.positions(0.2) < adaptive.positions(0.05)
    assert plan_tiers(PERF, SpecConfig(), [(p, 0.01) for p, _ in decodes]) is NO_SPEC  # nothing to gain
    with pytest.raises(ValueError):
        make_spec_grid(PERF, 0.0, NO_SPEC, 1.0)


def test_infeasible_when_all_decodes_do_not_fit_one_step():
    load = DecodeLoad(np.zeros(400), np.full(400, 0.05), np.full(400, 50, dtype=np.int64))
    tiers = TierSpecPlan(None, {0.05: 2}, {0.05: 1.5})
    object.__setattr__(tiers, "choice", plan_tiers(PERF, SpecConfig(alpha_prior=0.8), [(0.05, 0.8)]).choice)
    grid = make_spec_grid(PERF, 0.0, tiers, 0.05)
    assert not spec_forecast(grid, spec_load(load, tiers), [1.0]).feasible


def test_expanded_load_gives_the_ordinary_forecast_the_speculative_counts():
    from sloserve.spec.planner import expand_load

    rng = np.random.default_rng(11)
    load = _load(rng, 25)
    tiers = plan_tiers(PERF, SpecConfig(alpha_prior=0.8, max_spec_len=5), [(float(p), 0.8) for p in load.tpot_s])
    grid = make_spec_grid(PERF, 0.0, tiers, float(load.first_due_s.min()))
    deadlines = np.linspace(0.05, 5.0, 15)
    a = spec_forecast(grid, spec_load(load, tiers), deadlines)
    b = forecast(grid, expand_load(load, tiers), deadlines)
    assert np.array_equal(a.budget_tokens, b.budget_tokens) and a.feasible == b.feasible
    assert len(expand_load(load, tiers)) == int(spec_load(load, tiers).positions.sum())
