"""The SLO-aware replacement of SGLang's AdaptiveSpeculativeParams, on SGLang's real base."""

from __future__ import annotations

import pytest

pytest.importorskip("sglang", reason="sglang is not installed: run scripts/install_sglang_cpu.sh")
pytestmark = pytest.mark.sglang

from sglang.srt.speculative.adaptive_spec_params import AdaptiveSpeculativeParams  # noqa: E402

from sloserve.perf import get_model  # noqa: E402
from sloserve.sglang.spec_choice import choose_steps  # noqa: E402
from sloserve.sglang.spec_selector import SloSpeculativeParams  # noqa: E402

PERF = get_model("llama-3-8b-h100")


@pytest.fixture
def selector():
    SloSpeculativeParams.publish(None, 0)
    sel = SloSpeculativeParams(initial_steps=3, perf=PERF)
    yield sel
    SloSpeculativeParams.publish(None, 0)


def test_without_slo_it_is_sglangs_selector(selector):
    plain = AdaptiveSpeculativeParams(initial_steps=3)
    assert selector.candidate_steps == plain.candidate_steps and len(selector.candidate_steps) >= 2
    for bs in (1, 8, 64):
        assert selector.get_steps_for_batch(bs) == plain.get_steps_for_batch(bs)


def test_tight_tpot_gets_fewer_steps_than_loose(selector):
    cands = selector.candidate_steps
    SloSpeculativeParams.publish(10.0, 1000)  # 10 s per token: anything fits, take the most drafts
    assert selector.get_steps_for_batch(4) == max(cands)
    SloSpeculativeParams.publish(1e-6, 1000)  # nothing fits: smallest time per token
    per_token = choose_steps(cands, 1e-6, selector.alpha.alpha, 4, 1000, PERF)
    assert selector.get_steps_for_batch(4) == per_token
    # a TPOT between the two: the largest k that still fits
    times = {k: PERF.batch_time_s(4 * (k + 1), k, 1000) for k in cands}
    mid_k = sorted(cands)[len(cands) // 2]
    from sloserve.sglang.spec_choice import expected_tokens

    tpot = times[mid_k] / expected_tokens(selector.alpha.alpha, mid_k) * 1.0001
    SloSpeculativeParams.publish(tpot, 1000)
    chosen = selector.get_steps_for_batch(4)
    assert times[chosen] / expected_tokens(selector.alpha.alpha, chosen) <= tpot
    assert all(times[k] / expected_tokens(selector.alpha.alpha, k) > tpot for k in cands if k > chosen)


def test_observed_acceptance_moves_alpha_and_the_choice(selector):
    SloSpeculativeParams.publish(10.0, 0)
    k = selector.get_steps_for_batch(2)
    before = selector.alpha.alpha
    for _ in range(20):
        selector.on_verify_complete([0, 0], 2)  # nothing accepted
    assert selector.alpha.alpha < before / 4
    for _ in range(40):
        selector.on_verify_complete([k, k], 2)  # everything accepted
    assert selector.alpha.alpha > 0.9
