"""Batch planner: step grid, forced decodes, prefill budgets, on hand-computed cases."""

import numpy as np
import pytest

from sloserve.perf.paper import Line, PaperLinesModel
from sloserve.planner.batch import DecodeLoad, StepGrid, batches, forced_by, forecast, make_grid

# T(n) = 0.01 s + 0.1 ms per token: a 50 ms step holds 399 tokens (the 1e-9 s guard drops the 400th)
PERF = PaperLinesModel("toy", (Line(1e-4, 0.0, 0.01),))


def grid(start=0.0, first=0.05, step=0.05, first_tokens=399, step_tokens=399, first_all=False):
    return StepGrid(start, first, step, first_tokens, step_tokens, first_all)


def test_make_grid_sizes_steps_from_the_batch_time_model():
    g = make_grid(PERF, 1.0, 0.05, earliest_due_s=1.03)
    assert g.first_len_s == pytest.approx(0.03) and g.first_tokens == 199
    assert g.step_len_s == 0.05 and g.step_tokens == 399
    assert make_grid(PERF, 1.0, 0.05, np.inf).first_len_s == 0.05
    assert make_grid(PERF, 1.0, 0.05, np.inf, fixed_tokens=128).step_tokens == 128
    s = make_grid(PERF, 1.0, 0.05, 1.2, stretch_end_s=1.15)
    assert s.first_all and s.first_len_s == pytest.approx(0.15) and s.first_tokens == 1399


def test_steps_by_counts_whole_steps_ending_by_each_deadline():
    g = grid(first=0.03)
    # steps end at 0.03, 0.08, 0.13, ...
    assert g.steps_by([0.0, 0.029, 0.03, 0.079, 0.08, 0.2]).tolist() == [0, 0, 1, 1, 2, 4]
    assert g.tokens_by(np.array([0, 1, 3])).tolist() == [0, 399, 399 * 3]


def test_forced_decodes_follow_the_two_step_lookahead():
    # one stream: next token due 0.1 s, then every 0.1 s, 10 tokens left. Step k forces a token
    # due by s_k + 2L: T_1 = 0.1, T_2 = 0.15, T_3 = 0.2, T_4 = 0.25 -> 1, 1, 2, 2 forced.
    load = DecodeLoad.of([(0.1, 0.1, 10)])
    assert forced_by(grid(), load, [0, 1, 2, 3, 4]).tolist() == [0, 1, 1, 2, 2]
    # capped by the tokens left and by one token per step
    assert forced_by(grid(), DecodeLoad.of([(0.1, 0.1, 1)]), [4]).tolist() == [1]
    assert forced_by(grid(), DecodeLoad.of([(0.0, 0.05, 100)]), [3]).tolist() == [3]


def test_budget_is_tokens_minus_forced_decodes():
    load = DecodeLoad.of([(0.1, 0.1, 10), (0.06, 0.05, 10)])
    fc = forecast(grid(), load, [0.04, 0.05, 0.15])
    assert fc.steps.tolist() == [0, 1, 3]
    # by 0.05: one step, both streams due by 0.1 -> 399 - 2; by 0.15: 3 steps, stream 1 forced
    # at T_3 = 0.2 twice, stream 2 (due 0.06, 0.11, 0.16, 0.21) 3 times -> 1197 - 5
    assert fc.budget_tokens.tolist() == [0, 397, 1192]
    assert fc.feasible


def test_batches_give_tight_streams_every_step_and_loose_ones_less_often():
    load = DecodeLoad.of([(0.05, 0.05, 100), (0.1, 0.1, 100)])
    plan = batches(grid(), load, 6)
    assert [b.decode_tokens for b in plan] == [2, 1, 2, 1, 2, 1]
    assert [b.prefill_budget_tokens for b in plan] == [397, 398, 397, 398, 397, 398]
    assert plan[1].start_s == pytest.approx(0.05) and plan[1].end_s == pytest.approx(0.1)


def test_stretched_first_step_carries_every_stream_once():
    load = DecodeLoad.of([(0.3, 0.05, 100), (0.5, 0.1, 100)])
    g = grid(first=0.2, first_tokens=1899, first_all=True)
    assert forced_by(g, load, [1]).tolist() == [2]
    assert forecast(g, load, [0.2]).budget_tokens.tolist() == [1897]


def test_forecast_is_infeasible_when_decodes_alone_overflow_a_step():
    load = DecodeLoad.of([(1.0, 0.05, 5)] * 400)
    assert not forecast(grid(), load, [1.0]).feasible
    assert forecast(grid(), DecodeLoad.of([(1.0, 0.05, 5)] * 399), [1.0]).feasible


def test_grid_rejects_a_standard_first_step_longer_than_the_step():
    with pytest.raises(ValueError):
        StepGrid(0.0, 0.2, 0.05, 10, 10)
    with pytest.raises(ValueError):
        StepGrid(0.0, 0.0, 0.05, 10, 10)


def test_forced_table_grows_and_adds_rows_like_a_full_recount():
    from sloserve.planner.batch import ForcedTable

    g = grid(first=0.03)
    load = DecodeLoad.of([(0.1, 0.1, 10), (0.06, 0.05, 3)])
    table = ForcedTable(g, load)
    m = np.array([0, 3, 1, 20])
    assert table.get(m).tolist() == forced_by(g, load, m).tolist()
    bigger = DecodeLoad.of([(0.1, 0.1, 10), (0.06, 0.05, 3), (0.2, 0.05, 7)])
    grown = table.with_row(0.2, 0.05, 7, bigger)
    m = np.arange(40)
    assert grown.get(m).tolist() == forced_by(g, bigger, m).tolist()


def test_stretched_step_counts_stay_cumulative():
    # regression: after a stretched step 0, a stream whose next deadline is far was still
    # carried once; the cumulative count must never drop (it did: 2, then 0)
    load = DecodeLoad.of([(0.9, 0.1, 50), (0.25, 0.05, 50)])
    g = grid(first=0.2, first_tokens=1899, first_all=True)
    counts = forced_by(g, load, np.arange(8)).tolist()
    assert counts == sorted(counts) and counts[1] == 2
    # T_2 = 0.3: stream 1 only its step-0 token; stream 2 its 0.25 and 0.3 deadlines
    assert counts[2] == 1 + 2
