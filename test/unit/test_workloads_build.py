"""build_workload: scenarios, SLO presets, determinism, trace replay, filtering, errors."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from sloserve.workloads import SCENARIOS, SloPreset, WorkloadConfig, build_workload, get_slo_preset, interarrival_cv

TRACE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:00:00.0,100,10
2023-11-16 18:00:01.0,200,20
2023-11-16 18:00:01.5,3000,30
2023-11-16 18:00:04.0,400,40
2023-11-16 18:00:09.0,500,50
2023-11-16 18:00:10.0,600,60
"""


@pytest.fixture
def trace(tmp_path):
    p = tmp_path / "azure.csv"
    p.write_text(TRACE)
    return str(p)


def test_slo_presets_match_the_issue():
    c = get_slo_preset("chatbot")
    assert (c.ttft_slowdown, c.tpot_ms) == (5.0, 100.0)
    assert (get_slo_preset("coder").ttft_slowdown, get_slo_preset("coder").tpot_ms) == (5.0, 50.0)
    assert (get_slo_preset("summarizer").ttft_slowdown, get_slo_preset("summarizer").tpot_ms) == (3.0, 100.0)
    r = get_slo_preset("reasoning")
    assert (r.ttft_slowdown, r.think_tpot_ms, r.tpot_ms) == (3.0, 50.0, 100.0)
    t = get_slo_preset("tool-calling")
    assert (t.ttft_slowdown, t.tpot_ms, t.final_ttft_slowdown, t.final_tpot_ms) == (3.0, 50.0, 3.0, 100.0)
    rs = get_slo_preset("reasoning-S")
    assert (rs.ttft_slowdown, rs.think_tpot_ms, rs.tpot_ms) == (3.0, 100.0, 200.0)
    assert get_slo_preset("tool-calling-S").final_tpot_ms == 200.0
    with pytest.raises(KeyError, match="choices: chatbot"):
        get_slo_preset("mixed")
    with pytest.raises(ValueError):
        SloPreset("bad", ttft_slowdown=0.0, tpot_ms=1.0)
    with pytest.raises(ValueError):
        c.scaled(0.0)


def test_every_scenario_builds_sorted_unique_programs():
    assert len(SCENARIOS) == 12
    for name in SCENARIOS:
        wl = build_workload(WorkloadConfig(scenario=name, num_requests=50, rate_rps=3.0, seed=2))
        arr = [p.arrival_s for p in wl.programs]
        assert len(wl.programs) == 50 and arr == sorted(arr)
        assert [p.program_id for p in wl.programs] == [f"p{i:06d}" for i in range(50)]
        assert wl.duration_s == arr[-1] and wl.num_dropped_too_long == 0
        assert name.split("-S")[0] in wl.description
        for p in wl.programs:
            preset = get_slo_preset(p.slo_class)
            assert p.stages[0].ttft.slowdown == preset.ttft_slowdown
            assert p.slo_class.endswith("-S") == name.endswith("-S")


def test_reasoning_has_thinking_then_answer():
    wl = build_workload(WorkloadConfig(scenario="reasoning", num_requests=300, seed=4))
    thinks = []
    for p in wl.programs:
        (st,) = p.stages
        think, answer = st.segments
        assert (think.name, think.tpot_ms, answer.name, answer.tpot_ms, answer.num_tokens) == (
            "thinking",
            50.0,
            "answer",
            100.0,
            None,
        )
        assert 0 < think.num_tokens < st.output_tokens
        thinks.append(think.num_tokens)
        assert st.prompt_tokens < 2048
    assert 600 < np.median(thinks) < 2500 and max(thinks) > 2000  # hundreds to a few thousand


def test_tool_calling_chain_grows_context():
    wl = build_workload(WorkloadConfig(scenario="tool-calling", num_requests=300, seed=5))
    rounds = Counter()
    for p in wl.programs:
        rounds[len(p.stages)] += 1
        assert p.stages[-1].name == "final" and p.stages[0].tool_delay_s == 0.0
        for prev, nxt in zip(p.stages, p.stages[1:]):
            assert nxt.prompt_tokens > prev.prompt_tokens + prev.output_tokens  # + tool output
            assert 0.2 <= nxt.tool_delay_s <= 2.0
        for st in p.stages[:-1]:
            assert (st.ttft.slowdown, st.segments[0].tpot_ms) == (3.0, 50.0)
        assert (p.stages[-1].ttft.slowdown, p.stages[-1].segments[0].tpot_ms) == (3.0, 100.0)
        assert p.total_tokens == p.stages[-1].prompt_tokens + p.stages[-1].output_tokens
    assert set(rounds) == {2, 3, 4, 5} and min(rounds.values()) > 40


def test_mixed_has_equal_shares_with_own_slos():
    wl = build_workload(WorkloadConfig(scenario="mixed", num_requests=300, seed=6))
    counts = Counter(p.slo_class for p in wl.programs)
    assert counts == {"chatbot": 100, "coder": 100, "summarizer": 100}
    tpots = {p.slo_class: p.stages[0].segments[0].tpot_ms for p in wl.programs}
    assert tpots == {"chatbot": 100.0, "coder": 50.0, "summarizer": 100.0}
    # each class keeps its own lengths: coder outputs are short (Azure code), chat outputs long
    med = {c: np.median([p.stages[0].output_tokens for p in wl.programs if p.slo_class == c]) for c in counts}
    assert med["coder"] < 40 < med["chatbot"]


def test_same_config_same_programs_and_seed_matters():
    cfg = WorkloadConfig(scenario="tool-calling", num_requests=200, arrival="gamma", burstiness_cv=3.0, seed=9)
    assert build_workload(cfg) == build_workload(cfg)
    assert build_workload(replace(cfg, seed=10)).programs != build_workload(cfg).programs


def test_rate_changes_times_not_programs():
    a = build_workload(WorkloadConfig(scenario="mixed", rate_rps=1.0, num_requests=100, max_seq_len=3000))
    b = build_workload(WorkloadConfig(scenario="mixed", rate_rps=4.0, num_requests=100, max_seq_len=3000))
    assert [p.stages for p in a.programs] == [p.stages for p in b.programs]
    np.testing.assert_allclose([p.arrival_s for p in b.programs], [p.arrival_s / 4 for p in a.programs])


def test_gamma_burstiness_reaches_programs():
    wl = build_workload(WorkloadConfig(num_requests=20_000, rate_rps=10.0, arrival="gamma", burstiness_cv=4.0))
    t = np.array([p.arrival_s for p in wl.programs])
    assert interarrival_cv(t) == pytest.approx(4.0, rel=0.1)
    assert len(t) / t[-1] == pytest.approx(10.0, rel=0.1)


def test_max_seq_len_drops_and_counts():
    cfg = WorkloadConfig(scenario="chatbot", num_requests=2000, max_seq_len=2048, seed=3)
    wl = build_workload(cfg)
    assert len(wl.programs) == 2000  # synthetic: more are drawn until enough fit
    assert all(p.total_tokens <= 2048 for p in wl.programs)
    free = build_workload(replace(cfg, max_seq_len=None))
    share_long = np.mean([p.total_tokens > 2048 for p in free.programs])
    assert wl.num_dropped_too_long / (2000 + wl.num_dropped_too_long) == pytest.approx(share_long, abs=0.04)
    with pytest.raises(ValueError, match="fit max_seq_len=3"):
        build_workload(replace(cfg, max_seq_len=3))


def test_trace_replay_window_scaling_and_filter(trace):
    wl = build_workload(WorkloadConfig(scenario="chatbot", num_requests=None, trace_path=trace, rate_rps=1.0))
    assert [p.stages[0].prompt_tokens for p in wl.programs] == [100, 200, 3000, 400, 500, 600]
    assert [p.stages[0].output_tokens for p in wl.programs] == [10, 20, 30, 40, 50, 60]
    # native: 5 gaps over 10 s = 0.5 rps; at 1 rps every gap halves
    np.testing.assert_allclose([p.arrival_s for p in wl.programs], [0, 0.5, 0.75, 2.0, 4.5, 5.0])
    win = build_workload(
        WorkloadConfig(
            scenario="coder",
            num_requests=None,
            trace_path=trace,
            trace_window_s=(0.5, 9.5),
            rate_rps=2.0,
            max_seq_len=1000,
        )
    )
    # window holds rows 1..4; row 2 (3000+30 tokens) is dropped; times rescaled on the kept rows
    assert [p.stages[0].prompt_tokens for p in win.programs] == [200, 400, 500]
    assert win.num_dropped_too_long == 1
    np.testing.assert_allclose([p.arrival_s for p in win.programs], [0.0, 0.375, 1.0])
    assert all(p.slo_class == "coder" for p in win.programs)
    first2 = build_workload(WorkloadConfig(num_requests=2, trace_path=trace, rate_rps=1.0))
    assert [p.stages[0].prompt_tokens for p in first2.programs] == [100, 200]


def test_lengths_file_overrides_lengths(tmp_path, trace):
    lp = tmp_path / "lens.csv"
    lp.write_text("num_prefill_tokens,num_decode_tokens\n11,3\n22,4\n")
    synth = build_workload(WorkloadConfig(num_requests=100, lengths_path=str(lp)))
    assert {(p.stages[0].prompt_tokens, p.stages[0].output_tokens) for p in synth.programs} == {(11, 3), (22, 4)}
    over = build_workload(WorkloadConfig(num_requests=None, trace_path=trace, lengths_path=str(lp)))
    assert len(over.programs) == 6
    assert {p.stages[0].prompt_tokens for p in over.programs} <= {11, 22}
    named = build_workload(WorkloadConfig(num_requests=400, length_dist="azure-code"))
    assert np.median([p.stages[0].output_tokens for p in named.programs]) < 30


def test_slo_scale_and_unknown_output_lengths():
    wl = build_workload(
        WorkloadConfig(scenario="reasoning", num_requests=50, slo_scale=2.0, output_len_known=False, max_seq_len=6000)
    )
    for p in wl.programs:
        st = p.stages[0]
        assert st.ttft.slowdown == 6.0 and [s.tpot_ms for s in st.segments] == [100.0, 200.0]
        assert not st.output_tokens_known
        assert st.output_tokens <= st.max_new_tokens <= max(6000 - st.prompt_tokens, st.output_tokens)
    known = build_workload(WorkloadConfig(num_requests=5))
    assert all(p.stages[0].max_new_tokens is None and p.stages[0].output_tokens_known for p in known.programs)


def test_ttft_scale_tightens_ttft_alone():
    """ttft_scale multiplies the TTFT slowdowns (a tool chain's final round too) after slo_scale
    and keeps every TPOT: the workload of an exact engine planning with a TTFT margin."""
    base = build_workload(WorkloadConfig(scenario="tool-calling", num_requests=20, seed=3))
    tight = build_workload(WorkloadConfig(scenario="tool-calling", num_requests=20, seed=3, ttft_scale=0.9))
    both = build_workload(
        WorkloadConfig(scenario="tool-calling", num_requests=20, seed=3, ttft_scale=0.9, slo_scale=2.0)
    )
    assert "ttft_scale 0.9" in tight.description and "ttft_scale" not in base.description
    stages = [
        (a, b, c)
        for pa, pb, pc in zip(base.programs, tight.programs, both.programs)
        for a, b, c in zip(pa.stages, pb.stages, pc.stages)
    ]
    assert len({a.ttft.slowdown for a, _, _ in stages}) == 1  # one slowdown for every round (3x)
    for a, b, c in stages:
        assert b.ttft.slowdown == pytest.approx(0.9 * a.ttft.slowdown)
        assert c.ttft.slowdown == pytest.approx(1.8 * a.ttft.slowdown)
        assert [s.tpot_ms for s in b.segments] == [s.tpot_ms for s in a.segments]
        assert [s.tpot_ms for s in c.segments] == [2 * s.tpot_ms for s in a.segments]
        assert (b.prompt_tokens, b.output_tokens) == (a.prompt_tokens, a.output_tokens)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(scenario="chat"), ValueError, "unknown scenario 'chat'"),
        (dict(ttft_scale=-0.5), ValueError, "ttft_scale"),
        (dict(rate_rps=0.0), ValueError, "rate_rps"),
        (dict(num_requests=None), ValueError, "needs a trace_path"),
        (dict(num_requests=0), ValueError, "num_requests"),
        (dict(arrival="weibull"), ValueError, "unknown arrival"),
        (dict(arrival="trace"), ValueError, "needs a trace_path"),
        (dict(burstiness_cv=-1.0), ValueError, "burstiness_cv"),
        (dict(trace_window_s=(0.0, 1.0)), ValueError, "needs a trace_path"),
        (dict(slo_scale=0.0), ValueError, "slo_scale"),
        (dict(length_dist="lmsys"), ValueError, "unknown length distribution"),
        (dict(max_seq_len=1), ValueError, "max_seq_len"),
    ],
)
def test_bad_configs(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        build_workload(WorkloadConfig(**kwargs))


def test_bad_trace_inputs(tmp_path, trace):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_workload(WorkloadConfig(trace_path=str(tmp_path / "missing.csv")))
    with pytest.raises(ValueError, match="starts after the trace ends"):
        build_workload(WorkloadConfig(trace_path=trace, trace_window_s=(60.0, 90.0)))
    with pytest.raises(ValueError, match="holds no request"):
        build_workload(WorkloadConfig(trace_path=trace, trace_window_s=(4.5, 8.0)))
    with pytest.raises(ValueError, match="trace window needs"):
        WorkloadConfig(trace_path=trace, trace_window_s=(5.0, 2.0))
    with pytest.raises(ValueError, match="fits max_seq_len"):
        build_workload(WorkloadConfig(trace_path=trace, max_seq_len=50))
    bad = tmp_path / "bad.csv"
    bad.write_text("when,prompt\n1,2\n")
    with pytest.raises(ValueError, match="lacks column"):
        build_workload(WorkloadConfig(trace_path=str(bad)))


def test_ten_thousand_programs_build():
    # How fast they build is measured by benchmark/workload_build_speed.py, not asserted here:
    # a wall-clock bound fails at random on a loaded machine.
    for scenario in ("chatbot", "mixed", "reasoning"):
        wl = build_workload(WorkloadConfig(scenario=scenario, num_requests=10_000, max_seq_len=4096))
        assert len(wl.programs) == 10_000
