"""DP admission: hand-built cases, KV and decode-load effects, pruning, DP == brute force."""

import itertools

import numpy as np
import pytest

from sloserve.planner.admission import Item, _prune, _State, admit, admit_arrays, check
from sloserve.planner.batch import DecodeLoad, StepGrid, forecast

# steps of 0.1 s holding 100 tokens each, starting at 0
GRID = StepGrid(0.0, 0.1, 0.1, 100, 100)
NONE = DecodeLoad.empty()


def cand(key, deadline, prefill, mem=1, tpot=10.0, weight=1.0):
    return Item(key, deadline, prefill, mem, tpot, weight)


def test_admits_everything_that_fits_in_deadline_order():
    # budgets by 0.1, 0.2, 0.3: 100, 200, 300; demands 60, 60+60, 60+60+60
    items = [cand("a", 0.1, 60), cand("b", 0.2, 60), cand("c", 0.3, 60)]
    res = admit(items, GRID, NONE, 100, 100)
    assert res.feasible and res.selected == ("a", "b", "c") and res.value == 3
    # leftovers 100-60, 200-120, 300-180: the smallest is 40 (tpot 10 s decodes force nothing)
    assert res.min_leftover_tokens == 40
    ok, left = check(items, GRID, NONE)
    assert ok and left == 40


def test_prefers_two_small_requests_over_one_big_one():
    items = [cand("big", 0.2, 150), cand("s1", 0.1, 90), cand("s2", 0.2, 100)]
    res = admit(items, GRID, NONE, 100, 100)
    assert set(res.selected) == {"s1", "s2"} and res.value == 2


def test_weights_change_the_choice():
    items = [cand("big", 0.2, 150, weight=3.0), cand("s1", 0.1, 90), cand("s2", 0.2, 100)]
    assert admit(items, GRID, NONE, 100, 100).selected == ("big",)


def test_kv_memory_limits_admission():
    items = [cand("a", 0.5, 10, mem=60), cand("b", 0.5, 10, mem=60), cand("c", 0.5, 10, mem=30)]
    res = admit(items, GRID, NONE, 100, 100)
    assert res.value == 2 and "c" in res.selected


def test_mandatory_items_are_kept_and_can_make_the_plan_infeasible():
    must = Item("m", 0.1, 80, mandatory=True)
    res = admit([must, cand("a", 0.1, 30), cand("b", 0.2, 30)], GRID, NONE, 100, 100)
    assert res.feasible and res.selected == ("b",)
    bad = admit([Item("m", 0.1, 120, mandatory=True), cand("a", 0.3, 1)], GRID, NONE, 100, 100)
    assert not bad.feasible and bad.selected == ()


def test_decode_load_of_an_admitted_request_reduces_later_budgets():
    # "t" (deadline 0.1) decodes every 0.1 s afterwards: by T_m = 0.1 + m*0.1 it is forced into
    # (T - 0.1)/0.1 steps -- 4 tokens by the 0.4 deadline (T_4 = 0.5). "late" needs all 300 of
    # the budget left after t's 100: admitting both would need 404 > 400.
    t = cand("t", 0.1, 100, tpot=0.1)
    late = cand("late", 0.4, 300, tpot=10.0)
    res = admit([t, late], GRID, NONE, 100, 100)
    assert res.value == 1
    ok, _ = check([t, late], GRID, NONE)
    assert not ok
    # a looser decode stream fits: tpot 1 s adds one forced token at most
    t2 = cand("t", 0.1, 100, tpot=1.0)
    late2 = cand("late", 0.4, 299, tpot=10.0)
    assert admit([t2, late2], GRID, NONE, 100, 100).value == 2


def test_max_new_decoders_caps_admissions():
    items = [cand(str(i), 1.0, 1) for i in range(5)]
    assert admit(items, GRID, NONE, 100, 3).value == 3


def test_resident_decodes_reduce_the_budget():
    base = DecodeLoad.of([(0.05, 0.1, 100)] * 50)  # 50 streams due every step
    res = admit([cand("a", 0.1, 60)], GRID, base, 100, 100)
    assert res.selected == ()  # 100 - 50 = 50 < 60
    assert admit([cand("a", 0.1, 50)], GRID, base, 100, 100).selected == ("a",)


def test_pruning_keeps_the_larger_leftover():
    # same value and memory: the state with MORE leftover budget (larger g) dominates
    small, large = _State(1.0, 5, 1.0, (0,), 0.0), _State(1.0, 5, 5.0, (1,), 0.0)
    assert _prune([small, large]) == [large]
    assert _prune([large, small]) == [large]
    # less memory but less leftover: both stay on the front
    lean = _State(1.0, 3, 0.0, (2,), 0.0)
    assert len(_prune([small, large, lean])) == 2


def _fluid_feasible(items, grid, base, chosen):
    """Brute-force oracle of the DP's own constraints (fluid decode bound)."""
    order = sorted(range(len(items)), key=lambda i: (items[i].deadline_s, not items[i].mandatory, i))
    fc = forecast(grid, base, [items[i].deadline_s for i in order])
    demand = 0
    for pos, i in enumerate(order):
        if items[i].mandatory or i in chosen:
            demand += items[i].prefill_tokens
        horizon = fc.horizon_s[pos] if fc.steps[pos] > 0 else items[i].deadline_s
        load = sum((horizon - items[c].deadline_s) / items[c].tpot_s for c in chosen if horizon >= items[c].deadline_s)
        if fc.budget_tokens[pos] - demand - np.floor(load + 1e-9) < -1e-6:
            return False
    return True


@pytest.mark.parametrize("seed", range(12))
def test_dp_matches_brute_force_and_exact_check(seed):
    rng = np.random.default_rng(seed)
    n = 7
    items = [
        Item(
            f"c{i}",
            float(rng.uniform(0.05, 1.0)),
            int(rng.integers(20, 250)),
            int(rng.integers(1, 40)),
            float(rng.choice([0.1, 0.2, 0.5])),
            float(rng.choice([1.0, 2.0])),
            False,
            1 << 30,
        )
        for i in range(n)
    ]
    items.append(Item("m", float(rng.uniform(0.3, 1.0)), int(rng.integers(10, 100)), 0, 0.1, 1.0, True))
    base = DecodeLoad.of([(float(rng.uniform(0.05, 0.3)), 0.2, 20) for _ in range(int(rng.integers(0, 30)))])
    free = int(rng.integers(40, 150))
    res = admit(items, GRID, base, free, 100, max_front=10_000)
    best = -1.0
    for k in range(n + 1):
        for combo in itertools.combinations(range(n), k):
            if sum(items[c].mem_blocks for c in combo) > free:
                continue
            if _fluid_feasible(items, GRID, base, set(combo)):
                best = max(best, sum(items[c].weight for c in combo))
    if best < 0:
        assert not res.feasible
        return
    assert res.feasible and res.value == pytest.approx(best)
    chosen = [it for it in items if it.key in res.selected or it.mandatory]
    ok, _ = check(chosen, GRID, base)
    assert ok  # the fluid bound is conservative: the exact counts agree


def test_candidates_do_not_decode_in_a_stretched_first_step():
    g = StepGrid(0.0, 0.3, 0.1, 300, 100, first_all=True)
    base = DecodeLoad.of([(0.35, 0.1, 50)] * 10)  # carried once by the stretched step
    res = admit([cand("a", 0.3, 200, tpot=0.1), cand("b", 0.3, 90, tpot=0.1)], g, base, 100, 100)
    assert res.value == 2 and res.min_leftover_tokens == 0  # 300 - 10 - 290
    ok, left = check([cand("a", 0.3, 200, tpot=0.1)], g, base)
    assert ok and left >= 0


@pytest.mark.parametrize("seed", range(20))
def test_single_candidate_fast_path_agrees_with_the_dp(seed):
    rng = np.random.default_rng(100 + seed)
    m = int(rng.integers(0, 12))
    dl = np.sort(rng.uniform(0.1, 1.0, m))
    pre = rng.integers(10, 120, m).astype(float)
    c = Item(
        "c",
        float(rng.uniform(0.05, 1.0)),
        int(rng.integers(10, 300)),
        int(rng.integers(1, 60)),
        float(rng.choice([0.1, 0.2])),
        1.0,
    )
    base = DecodeLoad.of([(float(rng.uniform(0.05, 0.3)), 0.2, 20) for _ in range(int(rng.integers(0, 20)))])
    fast = admit_arrays(dl, pre, [c], GRID, base, 50, 10)
    slow = admit_arrays(dl, pre, [c], GRID, base, 50, 10, fast=False)
    assert (fast.selected, fast.feasible) == (slow.selected, slow.feasible)
    if fast.feasible:
        assert fast.min_leftover_tokens == slow.min_leftover_tokens
