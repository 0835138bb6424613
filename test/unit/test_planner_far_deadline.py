"""The planner's work and memory do not grow with how far away a deadline is (issue 13, defect 2).

Forced-decode counts are kept dense up to ``batch.DENSE_STEPS`` step counts and sparse beyond
(planner/batch.py ``ForcedTable``). Work is measured by deterministic counters, never by a
clock: ``ForcedTable.cells`` (the (step count, stream) pairs evaluated) summed over every table
the planner built, and tracemalloc's peak of the traced allocations (numpy's buffers included).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import sloserve.planner.batch as batch
from forced_tables import forced_tables
from sloserve.core.request import Request
from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.core.slo import DecodeSegment
from sloserve.perf.presets import get_model
from sloserve.planner.batch import DecodeLoad, ForcedTable, StepGrid, forced_by
from sloserve.sim.engine import SimulatedEngine
from sloserve.spec import SpecConfig, speculative_policy

MODEL = "opt-13b-tp2-a100"
# 10 min (the validated maximum), then past it: the planner itself takes any SLO
FAR_TTFT_MS = (6e5, 1e6, 1e9, 1e12)
# decode streams in _run (10 residents and 4 arrivals), each up to max_spec_len rows when speculating
MAX_STREAMS = 14 * 4

GRIDS = [
    StepGrid(10.0, 0.05, 0.1, 800, 1600),
    StepGrid(10.0, 0.3, 0.1, 900, 1600, True),
    StepGrid(10.0, 0.1, 0.1, 40, 40),
]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("dense_steps", [0, 1, 5, 40])
def test_sparse_counts_equal_the_full_count_through_derivations(grid, dense_steps):
    """Step counts past the dense part, asked one by one or in arrays, and tables derived by
    added streams (with_row, added_at) give exactly forced_by's integers."""
    rng = np.random.default_rng(dense_steps)
    load = DecodeLoad(rng.uniform(9.9, 10.6, 12), rng.choice([0.1, 0.2], 12), rng.integers(0, 400, 12))
    table = ForcedTable(grid, load, dense_steps=dense_steps)
    asked = np.array([0, 3, 7, 60, 500, 10**6, 60])
    assert np.array_equal(table.get(asked), forced_by(grid, load, asked))
    assert table.get_one(123_456) == forced_by(grid, load, [123_456])[0]
    for k in range(3):
        row = (float(rng.uniform(9.9, 10.6)), 0.1 * (k + 1), int(rng.integers(0, 400)))
        bigger = DecodeLoad(np.r_[load.first_due_s, row[0]], np.r_[load.tpot_s, row[1]], np.r_[load.cap_tokens, row[2]])
        derived = table.with_row(*row, bigger)
        assert np.array_equal(derived.added_at(asked), forced_by(grid, bigger, asked) - forced_by(grid, load, asked))
        more = np.r_[asked, 2 * 10**6, 9]
        assert np.array_equal(derived.get(more), forced_by(grid, bigger, more))
        table, load = derived, bigger


def _run(ttft_ms: float, policy: str = "slos-serve", options=None, spec=None) -> dict:
    """Ten residents decoding, then an arrival due ``ttft_ms`` after it with three ordinary
    arrivals and steps while it is admitted and prefilled: the planner's counted work then."""
    perf = get_model(MODEL)
    sched = create_scheduler(policy, SchedulerContext(perf, 200_000, 16, spec=spec), options or {})
    engine = SimulatedEngine(perf)
    now = 0.0

    def step() -> None:
        nonlocal now
        plan = sched.schedule(now)
        if plan.is_empty:
            now += 0.01
            return
        res = engine.execute(plan, sched.requests)
        now += res.step_s
        sched.on_step_done(plan, res, now)

    for i in range(10):
        sched.add(Request(f"r{i}", now, 200, 500, 1.0, (DecodeSegment(100.0),)), now)
    for _ in range(5):
        step()
    with forced_tables() as tables:
        tracemalloc.start()
        try:
            far = sched.add(Request("far", now, 1500, 50, ttft_ms / 1e3, (DecodeSegment(100.0),)), now)
            for k in range(3):
                sched.add(Request(f"n{k}", now, 300, 50, 1.0, (DecodeSegment(100.0),)), now)
                step()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return {
        "reason": far.reason.value,
        "cells": sum(t.cells for t in tables),
        "far_entries": sum(t.far_m.size for t in tables),
        "peak_bytes": peak,
    }


VARIANTS = [
    ("slos-serve", {}, None),
    ("slos-serve", {"kv_profile": True, "repace": True}, None),
    (speculative_policy("slos-serve"), {}, SpecConfig(mode="adaptive", alpha_prior=0.8, max_spec_len=4)),
]


@pytest.mark.parametrize("policy,options,spec", VARIANTS)
def test_planner_work_and_memory_do_not_grow_with_the_deadline(policy, options, spec):
    near = _run(1e3, policy, options, spec)
    assert near["reason"] == "admitted" and near["far_entries"] == 0
    far = [_run(ms, policy, options, spec) for ms in FAR_TTFT_MS]
    assert all(f["reason"] == "admitted" and f["far_entries"] > 0 for f in far)
    # the same work for every far deadline (each far step count is one entry per table) ...
    assert len({f["cells"] for f in far}) == 1
    # ... and no more than for a deadline a second away, but for those entries (a cell per stream)
    assert far[0]["cells"] <= near["cells"] + far[0]["far_entries"] * MAX_STREAMS
    assert max(f["peak_bytes"] for f in far) <= 2 * near["peak_bytes"]


def test_negative_control_a_dense_only_table_grows_with_the_deadline(monkeypatch):
    """The counters can see the problem: with no sparse part (the table before the fix) a
    10-minute TTFT costs 100 times the work and 10 times the memory of a 1-second one."""
    monkeypatch.setattr(batch, "DENSE_STEPS", 10**12)
    near, mid, far = _run(1e3), _run(6e4), _run(6e5)
    assert near["cells"] < mid["cells"] < far["cells"]
    assert far["cells"] > 50 * near["cells"]
    assert far["peak_bytes"] > 10 * near["peak_bytes"]
