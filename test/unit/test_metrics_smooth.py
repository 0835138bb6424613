"""Smooth goodput (metrics/smooth.py) pinned on hand-computed streams.

Times are multiples of 1/32 s so that the deadlines are exact; tolerance 0 unless a test says.
TTFT SLO 1 s and TPOT SLO 125 ms give the deadlines d = 1, 1.125, 1.25, 1.375, 1.5, ...
"""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.core.slo import DecodeSegment
from sloserve.metrics import StageRecord, idle_latency_s, stage_attained, summarize, token_deadlines_paced_s
from sloserve.metrics.smooth import benefit, schedule_and_idle_s

PACE = (DecodeSegment(125.0),)


def reader_waits_s(arrival_s, ttft_s, segments, times_s, tolerance=0.0):
    """The reading user of metrics/smooth.py, step by step: token i is read once it has come and token i-1 is read."""
    paces_s = []  # TPOT SLO of output tokens 1..n; the last segment runs to the end
    for seg in segments[:-1]:
        paces_s += [seg.tpot_ms / 1e3] * seg.num_tokens
    paces_s = ([0.0] + paces_s[1:] + [segments[-1].tpot_ms / 1e3] * len(times_s))[: len(times_s)]
    need = arrival_s + ttft_s * (1 + tolerance)  # the user is ready for token 1 at the TTFT deadline
    waited = 0.0
    for t, pace_s in zip(times_s, paces_s):
        need += pace_s * (1 + tolerance)
        waited += max(0.0, t - need)
        need = max(need, t)  # reading starts when the token is there
    return waited


def rec(pid, times, *, stage=0, finished=True, tier="slo", rejected=False, segments=PACE, ttft_s=1.0, arrival_s=0.0):
    r = StageRecord(pid, pid, "chat", stage, f"s{stage}", arrival_s, ttft_s, segments, 100, len(times), tier=tier)
    r.token_times = list(times)
    r.rejected = rejected
    r.finish_s = (times[-1] if times else arrival_s) if finished and not rejected else None
    return r


def test_a_stream_exactly_on_its_deadlines_has_no_idle_latency():
    times = [1.0, 1.125, 1.25, 1.375]
    assert list(token_deadlines_paced_s(0.0, 1.0, PACE, 4, tolerance=0.0)) == times
    assert schedule_and_idle_s(0.0, 1.0, PACE, times, tolerance=0.0) == (1.375, 0.0)
    assert stage_attained(0.0, 1.0, PACE, times, tolerance=0.0)
    assert benefit(1.375, 0.0) == 1.0
    # one token 1/32 s late: the user waits that long, and only that long
    late = [1.0, 1.125, 1.28125, 1.375]
    assert idle_latency_s(0.0, 1.0, PACE, late, tolerance=0.0) == 0.03125
    assert not stage_attained(0.0, 1.0, PACE, late, tolerance=0.0)


def test_a_stall_mid_stream_costs_what_the_user_waited_and_a_banked_stall_costs_nothing():
    stalled = [0.5, 0.625, 0.75, 1.625, 1.75]  # d = 1 ... 1.5: token 4 is 0.25 s late, token 5 too
    assert schedule_and_idle_s(0.0, 1.0, PACE, stalled, tolerance=0.0) == (1.5, 0.25)
    assert reader_waits_s(0.0, 1.0, PACE, stalled) == 0.25  # one wait of 0.25 s, not two
    assert benefit(1.5, 0.25) == pytest.approx(6 / 7)
    assert not stage_attained(0.0, 1.0, PACE, stalled, tolerance=0.0)  # attainment: a miss, worth 0
    # the same 0.5 s gap after tokens delivered early: the bank covers it, the user never waits
    banked = [0.5, 0.625, 0.75, 1.25, 1.375]
    assert idle_latency_s(0.0, 1.0, PACE, banked, tolerance=0.0) == 0.0
    assert stage_attained(0.0, 1.0, PACE, banked, tolerance=0.0)


def test_the_closed_form_is_the_readers_total_wait_on_random_streams():
    rng = np.random.default_rng(0)
    segs = (DecodeSegment(31.25, num_tokens=3, name="thinking"), DecodeSegment(125.0, name="answer"))
    for _ in range(300):
        n = int(rng.integers(1, 12))
        times = np.sort(rng.uniform(0.0, 3.0, n))
        for segments in (PACE, segs):
            assert idle_latency_s(0.0, 1.0, segments, times, 0.0) == pytest.approx(
                reader_waits_s(0.0, 1.0, segments, times), abs=1e-12
            )


def test_each_segment_sets_its_own_pace():
    segs = (DecodeSegment(31.25, num_tokens=2, name="thinking"), DecodeSegment(125.0, name="answer"))
    assert list(token_deadlines_paced_s(0.0, 1.0, segs, 4, tolerance=0.0)) == [1.0, 1.03125, 1.15625, 1.28125]
    # tolerance stretches every relative deadline, as attainment does
    assert token_deadlines_paced_s(2.0, 1.0, segs, 2, tolerance=0.5)[-1] == 2.0 + 1.03125 * 1.5


def test_delaying_tokens_smooths_the_gaps_but_never_lowers_idle_latency():
    """The paper's delay trick: hold tokens back so one long gap becomes several short ones."""
    sent = [1.0, 1.0625, 1.125, 1.1875, 1.75]  # a burst, then a 0.5625 s gap
    held = [1.0, 1.1875, 1.375, 1.5625, 1.75]  # tokens 2-4 held back: even 0.1875 s gaps

    def max_gap_s(times):
        return max(np.diff(times))

    # negative control: a time-between-tokens SLO of 0.2 s fails the stream as sent and passes it
    # once tokens are delayed, so that metric rewards the trick
    assert max_gap_s(sent) > 0.2 >= max_gap_s(held)
    # idle latency does not move: the user waits 0.25 s for token 5 either way
    assert idle_latency_s(0.0, 1.0, PACE, sent, 0.0) == idle_latency_s(0.0, 1.0, PACE, held, 0.0) == 0.25
    rng = np.random.default_rng(1)
    for _ in range(300):  # and delaying any tokens of any stream never lowers it
        times = np.sort(rng.uniform(0.0, 3.0, int(rng.integers(1, 10))))
        delayed = np.maximum.accumulate(times + rng.exponential(0.2, times.size) * (rng.random(times.size) < 0.5))
        assert idle_latency_s(0.0, 1.0, PACE, delayed, 0.0) >= idle_latency_s(0.0, 1.0, PACE, times, 0.0)


def test_attained_requests_score_one_at_the_metrics_tolerance():
    times = [1.03125, 1.15625, 1.28125]  # first token 3% late: inside the 5% tolerance
    assert stage_attained(0.0, 1.0, PACE, times)  # default tolerance
    assert idle_latency_s(0.0, 1.0, PACE, times) == 0.0
    assert idle_latency_s(0.0, 1.0, PACE, times, tolerance=0.0) == 0.03125
    with pytest.raises(ValueError):
        idle_latency_s(0.0, 1.0, PACE, [])


def test_summary_counts_late_completions_and_not_abandoned_or_rejected_requests():
    stalled = [0.5, 0.625, 0.75, 1.625, 1.75]
    records = [
        rec("on_time", [1.0, 1.125, 1.25]),
        rec("late", stalled),
        rec("abandoned", stalled, finished=False),  # streamed, then dropped before its end
        rec("rejected", [], rejected=True, tier="rejected"),
        rec("half_program", [1.0, 1.125]),  # stage 1 of 2; stage 2 never ran
    ]
    stages = {"on_time": 1, "late": 1, "abandoned": 1, "rejected": 1, "half_program": 2}
    s = summarize(records, 5, stages, duration_s=10.0, tolerance=0.0)
    assert s["goodput_rps"] == pytest.approx(0.1) and s["attainment"] == pytest.approx(0.2)
    assert s["smooth_goodput_rps"] == pytest.approx((1 + 6 / 7) / 10)
    assert s["smooth_attainment"] == pytest.approx((1 + 6 / 7) / 5)
    assert s["idle_latency_ms"]["mean"] == pytest.approx(250 / 3)  # finished stages: 0, 250, 0 ms
    assert s["idle_latency_ms"]["p50"] == 0.0
    # negative control: plain goodput cannot tell finishing late from abandoning; smooth goodput can
    finish = summarize([rec("x", stalled)], 1, {"x": 1}, 10.0, 0.0)
    drop = summarize([rec("x", stalled, finished=False)], 1, {"x": 1}, 10.0, 0.0)
    assert finish["goodput_rps"] == drop["goodput_rps"] == 0.0
    assert finish["smooth_goodput_rps"] > drop["smooth_goodput_rps"] == 0.0
    assert drop["idle_latency_ms"]["mean"] is None


def test_a_program_scores_its_total_wait_against_its_total_schedule_and_tier_does_not_matter():
    first = rec("p", [0.5, 0.625, 0.75, 1.625, 1.75], stage=0)  # S = 1.5, l = 0.25
    second = rec("p", [4.0, 4.125], stage=1, arrival_s=2.5)  # S = 1.125, l = 0.5
    s = summarize([first, second], 1, {"p": 2}, duration_s=1.0, tolerance=0.0)
    assert s["smooth_goodput_rps"] == pytest.approx(2.625 / (2.625 + 0.75))
    assert s["idle_latency_ms"]["mean"] == pytest.approx(375.0)
    # best effort on schedule: a miss for attainment, full marks for what the user saw
    s = summarize([rec("b", [1.0, 1.125], tier="best_effort")], 1, {"b": 1}, 1.0, 0.0)
    assert s["attainment"] == 0.0 and s["smooth_attainment"] == 1.0


def test_a_simulation_reports_smooth_goodput_at_least_goodput():
    from sloserve.core.slo import TTFTSLO, ProgramSpec, StageSpec  # noqa: PLC0415
    from sloserve.sim import SimConfig, simulate  # noqa: PLC0415

    rng = np.random.default_rng(3)
    progs, t = [], 0.0
    for i in range(60):
        t += rng.exponential(1 / 6.0)
        stage = StageSpec(int(rng.integers(16, 800)), int(rng.integers(1, 120)), TTFTSLO(slowdown=3), (PACE[0],))
        progs.append(ProgramSpec(f"p{i:03d}", t, "chatbot", (stage,)))
    s = simulate(progs, SimConfig(policy="fcfs", kv_tokens=8192, max_seq_len=1600)).summary
    assert s["smooth_goodput_rps"] >= s["goodput_rps"] and s["smooth_attainment"] >= s["attainment"]
    assert 0.0 < s["smooth_attainment"] <= 1.0 and s["idle_latency_ms"]["p99"] is not None
