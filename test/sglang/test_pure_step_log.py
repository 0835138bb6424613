"""The plugin's step log (sglang/step_log.py) and the closing-the-loop helpers that read it
(bench/loop.py), without SGLang (always runs)."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.bench.loop import (
    LoopWorkload,
    ZeroLoad,
    engine_cost,
    noise_model,
    profile_rows,
    read_steps,
    step_error,
    step_ratios,
)
from sloserve.perf import get_model
from sloserve.sglang.shadow import ShadowPlanner
from sloserve.sglang.step_log import ENV_STEP_LOG
from sloserve.sglang.translate import ReqSnapshot, build_request

PERF = get_model("llama-3-8b-h100")


def test_the_shadow_logs_each_busy_step_as_a_profile_row(tmp_path, monkeypatch):
    """SGLang's steps take 3x the model's time: every busy iteration becomes a row whose
    predicted and observed times say so, readable as a profile."""
    monkeypatch.setenv(ENV_STEP_LOG, str(tmp_path))
    shadow = ShadowPlanner.create("slos-serve", {}, PERF, 32768)
    req = build_request("a", 64, 30, {"slo_tpot_ms": 500.0, "slo_ttft_ms": 5000.0}, 0.0, PERF.zero_load_prefill_s)
    shadow.add(req, 0.0)
    shadow.observe([ReqSnapshot("a", 64, 0, 0, False)], 0.0)
    t = 3 * PERF.batch_time_s(64)
    shadow.observe([ReqSnapshot("a", 64, 1, 64, True)], t)
    for i in range(2, 30):
        t += 3 * PERF.batch_time_s(1, 0, 64 + i - 1)
        shadow.observe([ReqSnapshot("a", 64, i, 64 + i - 1, True)], t)
    shadow.observe([], t + 1.0)  # only a request that left: no shape, no row
    shadow.step_sink.close()
    steps = read_steps(tmp_path)
    assert steps["time_ms"].size == 29
    assert steps["num_tokens"][0] == 64 and steps["prefill_tokens"][0] == 64
    assert steps["time_ms"] / steps["predicted_ms"] == pytest.approx([3.0] * 29, rel=0.05)
    err = step_error(steps)
    assert err["num_steps"] == 29 and err["ratio_p50"] == pytest.approx(3.0, rel=0.05)
    assert step_ratios(steps, PERF) == pytest.approx([3.0] * 29, rel=0.05)
    rows = profile_rows(steps, min_repeats=1)
    assert rows and {"num_tokens", "kv_read_tokens", "time_ms", "time_ms_p25", "repeats"} <= set(rows[0])


def test_no_log_without_the_variable(monkeypatch):
    monkeypatch.delenv(ENV_STEP_LOG, raising=False)
    assert ShadowPlanner.create("fcfs", {}, PERF, 4096).step_sink is None


def test_noise_model_matches_median_and_tail():
    import numpy as np

    ratios = np.exp(np.random.default_rng(0).normal(0.2, 0.5, 20000))
    noise = noise_model(ratios)
    assert noise["ratio_p50"] == pytest.approx(np.exp(0.2), rel=0.03)
    assert noise["step_time_noise"] == pytest.approx(np.sqrt(np.expm1(0.25)), rel=0.1)
    assert noise_model(np.ones(3))["step_time_noise"] == 0.0  # too few steps: no noise


def test_workload_runs_share_their_lengths_across_rates():
    wl = LoopWorkload(duration_s=10.0, min_requests=5)
    slow, fast = wl.programs(1.0), wl.programs(4.0)
    assert len(slow) == 10 and len(fast) == 40
    assert [p.stages[0].prompt_tokens for p in slow] == [p.stages[0].prompt_tokens for p in fast[:10]]
    assert fast[9].arrival_s == pytest.approx(slow[9].arrival_s / 4)


def test_slos_are_slowdowns_of_the_unloaded_server_when_it_was_measured():
    # requests served one at a time: TTFT = 12 ms + 0.05 ms per prompt token, 6 ms between tokens
    prompts = [64, 128, 256, 384]
    zero = ZeroLoad.from_requests(prompts, [12 + 0.05 * p for p in prompts], [6.0, 5.0, 7.0, 6.0])
    assert zero.ttft_base_ms == pytest.approx(12.0) and zero.ttft_per_token_ms == pytest.approx(0.05)
    assert zero.tpot_ms == 6.0 and zero.num_requests == 4
    wl = zero.apply(LoopWorkload(duration_s=5.0, ttft_slowdown=8.0), tpot_steps=5.0)
    stage = wl.programs(2.0)[0].stages[0]
    assert stage.ttft.absolute_ms == pytest.approx(8.0 * (12 + 0.05 * stage.prompt_tokens))
    assert stage.segments[0].tpot_ms == 30.0
    # without the measurement the SLO stays a slowdown of the fit's prefill
    assert LoopWorkload().programs(1.0)[0].stages[0].ttft.slowdown == 8.0
    # noise that tilts the line downwards never makes a longer prompt's SLO tighter
    tilted = ZeroLoad.from_requests(prompts, [30, 25, 22, 20], [5.0] * 4)
    assert tilted.ttft_per_token_ms == 0.0 and tilted.ttft_base_ms == pytest.approx(23.5)
    with pytest.raises(ValueError, match="3\\+ requests"):
        ZeroLoad.from_requests([100, 100], [10, 11], [5, 5])


def test_the_engine_step_cost_prices_requests_apart_from_tokens():
    # a served engine where each request in a step costs 0.6 ms and each token 0.04 ms
    rng = np.random.default_rng(1)
    items = rng.integers(1, 24, 200).astype(float)
    tokens = items + (rng.random(200) < 0.3) * rng.integers(50, 400, 200)
    kv = items * rng.integers(60, 400, 200)
    time_ms = 2.0 + 0.6 * items + 0.04 * tokens + 0.001 * kv
    steps = {"num_items": items, "num_tokens": tokens, "kv_read_tokens": kv, "time_ms": time_ms}
    cost, ratios, quality = engine_cost(steps, skip=10)
    assert cost.per_item_s == pytest.approx(0.6e-3) and cost.per_token_s == pytest.approx(0.04e-6 * 1e3)
    assert ratios.size == 190 and ratios == pytest.approx(1.0)  # residuals of an exact fit
    assert quality["held_out_mape_pct"] == pytest.approx(0.0, abs=1e-6) and quality["held_out_steps"] > 20
