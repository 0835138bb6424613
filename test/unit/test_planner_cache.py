"""The planner's caches (per view and grid) decide exactly what the uncached DP decides."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.core.request import Request
from sloserve.core.slo import DecodeSegment
from sloserve.planner.admission import Item, MandatoryRows, admit_arrays, admit_cached
from sloserve.planner.batch import EPS_S, DecodeLoad, ForcedTable, StepGrid, forced_by
from sloserve.planner.view import build_view, extend_view

GRIDS = [
    StepGrid(10.0, 0.05, 0.1, 800, 1600),
    StepGrid(10.0, 0.3, 0.1, 900, 1600, True),
    StepGrid(10.0, 0.1, 0.1, 40, 40),
]


def random_load(rng, n):
    return DecodeLoad(rng.uniform(9.9, 10.6, n), rng.choice([0.05, 0.1, 0.2], n), rng.integers(0, 40, n))


def reference_forced_by(grid, load, m):
    """Token by token: stream i's tokens are due at first_due + k tpot, at most cap, one per step."""
    out = []
    for mm in m:
        horizon = grid.forced_horizon_s(np.array([mm]))[0]
        total = 0
        for f, tp, cap in zip(load.first_due_s, load.tpot_s, load.cap_tokens):
            due = (
                0
                if horizon == -np.inf
                else (cap if horizon == np.inf else max(int(np.floor((horizon - f) / tp + EPS_S)) + 1, 0))
            )
            if grid.first_all and mm >= 1:
                due = max(due, 1)
            total += min(due, int(cap), int(mm))
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("seed", range(5))
def test_forced_by_counts_tokens_like_the_definition(grid, seed):
    rng = np.random.default_rng(seed)
    load = random_load(rng, int(rng.integers(0, 40)))
    m = np.arange(int(rng.integers(1, 40)))
    assert np.array_equal(forced_by(grid, load, m), reference_forced_by(grid, load, m))


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("seed", range(10))
def test_derived_forced_table_equals_a_fresh_one(grid, seed):
    rng = np.random.default_rng(50 + seed)
    load = random_load(rng, int(rng.integers(0, 30)))
    table = ForcedTable(grid, load)
    table.get(np.array([int(rng.integers(0, 50))]))
    row = (float(rng.uniform(9.9, 10.6)), float(rng.choice([0.05, 0.1])), int(rng.integers(0, 40)))
    bigger = DecodeLoad(np.r_[load.first_due_s, row[0]], np.r_[load.tpot_s, row[1]], np.r_[load.cap_tokens, row[2]])
    derived = table.with_row(*row, bigger)
    m = np.arange(derived.counts.size + 5)  # past the derived size: grows from the full load
    assert np.array_equal(derived.get(m), forced_by(grid, bigger, m))


def random_case(rng):
    n = int(rng.integers(0, 15))
    dl = np.sort(rng.uniform(9.95, 11.0, n))
    pre = rng.integers(10, 300, n).astype(float)
    cand = Item(
        "c",
        float(rng.uniform(9.95, 11.0)),
        int(rng.integers(10, 400)),
        int(rng.integers(1, 60)),
        float(rng.choice([0.05, 0.1, 0.2])),
        1.0,
        decode_origin_s=None,
    )
    return dl, pre, cand, random_load(rng, int(rng.integers(0, 25)))


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("seed", range(30))
def test_cached_admission_decides_like_the_dp(grid, seed):
    rng = np.random.default_rng(seed)
    dl, pre, cand, load = random_case(rng)
    rows = MandatoryRows.of(grid, load, ForcedTable(grid, load), dl, pre)
    for cands in ([], [cand]):
        free = int(rng.integers(0, 80))
        got = admit_cached(rows, cands, free, 10)
        want = admit_arrays(dl, pre, cands, grid, load, free, 10)
        assert (got.selected, got.feasible) == (want.selected, want.feasible)
        if want.feasible:
            assert got.min_leftover_tokens == want.min_leftover_tokens


def test_cached_admission_takes_at_most_one_candidate():
    rows = MandatoryRows.of(
        GRIDS[0], DecodeLoad.empty(), ForcedTable(GRIDS[0], DecodeLoad.empty()), np.zeros(0), np.zeros(0)
    )
    with pytest.raises(ValueError, match="at most one"):
        admit_cached(rows, [Item("a", 10.5, 10), Item("b", 10.6, 10)], 10, 10)


def make_request(rng, i, now):
    return Request(
        f"r{i}",
        now - float(rng.uniform(0, 0.5)),
        int(rng.integers(16, 600)),
        int(rng.integers(2, 200)),
        float(rng.choice([0.5, 1.0, 2.0])),
        (DecodeSegment(float(rng.choice([50.0, 100.0]))),),
    )


@pytest.mark.parametrize("seed", range(10))
def test_extended_view_caches_equal_a_rebuilt_view(seed):
    """Admitting requests one by one (derived tables and rows) gives what a rebuild gives."""
    rng = np.random.default_rng(seed)
    now = 10.0
    resident = []
    for i in range(int(rng.integers(0, 20))):
        r = make_request(rng, i, now)
        r.num_computed_tokens = int(rng.integers(0, r.prompt_tokens + 1))
        if r.num_computed_tokens == r.prompt_tokens:
            r.num_output_tokens, r.first_token_s = 1, now - 0.01
        resident.append(r)
    planned = lambda r: r.output_tokens  # noqa: E731
    view = build_view(resident, {}, planned)
    grids = [StepGrid(now, 0.05, 0.1, 800, 1600), StepGrid(now, 0.3, 0.1, 900, 1600, True)]
    for g in grids:
        view.mandatory_rows(g)
    admitted = list(resident)
    for k in range(int(rng.integers(1, 6))):
        r = make_request(rng, 100 + k, now)
        admitted.append(r)
        view = extend_view(view, r, planned(r))
        fresh = build_view(admitted, {}, planned)
        for g in grids:
            got, want = view.mandatory_rows(g), fresh.mandatory_rows(g)
            for name in ("deadline_s", "steps", "b", "horizon_s", "cum_prefill", "prefix_min"):
                assert np.array_equal(getattr(got, name), getattr(want, name)), name
            assert got.decodes_fit == want.decodes_fit
            m = np.arange(60)
            assert np.array_equal(view.table(g).get(m), fresh.table(g).get(m))
