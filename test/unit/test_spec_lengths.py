"""Speculation length choice (sloserve.spec.lengths) and SpecConfig / CLI (sloserve.spec.config)."""

from __future__ import annotations

import argparse
import itertools

import pytest

from sloserve.perf.presets import get_model
from sloserve.spec.acceptance import expected_tokens, planned_tokens
from sloserve.spec.config import SpecConfig, add_spec_arguments, spec_enabled, spec_from_args
from sloserve.spec.lengths import TierLoad, choose_tier_lengths, constrained_lengths, goodput_length

MODELS = ["opt-13b-tp2-a100", "opt-6.7b-a100"]


def _brute_force(perf, tiers, max_len, margin):
    """Best prefill rate over every per-tier assignment, with its longest allowed step."""
    best = None
    for pos in itertools.product(range(1, max_len + 1), repeat=len(tiers)):
        tau = min(t.tpot_s * planned_tokens(t.alpha, s, margin) for t, s in zip(tiers, pos))
        tokens = perf.max_tokens_within_s(tau - 1e-9, max(pos) - 1)
        if tokens < sum(t.num_decodes * s for t, s in zip(tiers, pos)):
            continue
        rate = tokens / tau - sum(
            t.num_decodes * s / (t.tpot_s * planned_tokens(t.alpha, s, margin)) for t, s in zip(tiers, pos)
        )
        best = rate if best is None else max(best, rate)
    return best


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "tiers",
    [
        [TierLoad(0.05, 20, 0.8)],
        [TierLoad(0.05, 60, 0.6), TierLoad(0.15, 40, 0.6)],
        [TierLoad(0.03, 10, 0.7), TierLoad(0.1, 80, 0.9), TierLoad(0.2, 30, 0.5)],
        [TierLoad(0.05, 150, 0.8), TierLoad(0.15, 150, 0.8)],
    ],
)
def test_choose_tier_lengths_is_exact(model, tiers):
    perf = get_model(model)
    choice = choose_tier_lengths(perf, tiers, 5, 0.15)
    expect = _brute_force(perf, tiers, 5, 0.15)
    assert choice is not None and expect is not None
    assert choice.prefill_rate_tps == pytest.approx(expect, rel=1e-9)
    # the chosen step respects every tier's planned progress and fits all decodes
    for t, s in zip(tiers, choice.positions):
        assert choice.step_len_s <= t.tpot_s * planned_tokens(t.alpha, s, 0.15) + 1e-9
    assert choice.decode_tokens <= choice.step_tokens
    assert perf.batch_time_s(choice.step_tokens, choice.spec_steps) <= choice.step_len_s
    assert choice.spec_steps == max(choice.positions) - 1


def test_speculation_beats_ordinary_decoding_with_a_draft_cost_model():
    perf = get_model("opt-13b-tp2-a100")
    tiers = [TierLoad(0.05, 50, 0.8)]
    spec = choose_tier_lengths(perf, tiers, 6, 0.15)
    plain = choose_tier_lengths(perf, tiers, 1, 0.15)
    assert spec.positions[0] > 1 and plain.positions == (1,)
    assert spec.prefill_rate_tps > 1.5 * plain.prefill_rate_tps


def test_low_acceptance_turns_speculation_off_and_loose_tiers_get_shorter_lengths():
    perf = get_model("opt-13b-tp2-a100")
    assert choose_tier_lengths(perf, [TierLoad(0.1, 50, 0.05)], 6, 0.15).positions == (1,)
    mixed = choose_tier_lengths(perf, [TierLoad(0.05, 50, 0.8), TierLoad(0.15, 50, 0.8)], 6, 0.15)
    assert mixed.positions[1] < mixed.positions[0]
    uniform = choose_tier_lengths(perf, [TierLoad(0.05, 50, 0.8), TierLoad(0.15, 50, 0.8)], 6, 0.15, uniform=True)
    assert len(set(uniform.positions)) == 1
    assert uniform.prefill_rate_tps <= mixed.prefill_rate_tps + 1e-9


def test_no_feasible_assignment_returns_none():
    perf = get_model("opt-13b-tp2-a100")
    assert choose_tier_lengths(perf, [TierLoad(0.02, 10, 0.0)], 4, 0.15) is None  # below the base cost
    assert choose_tier_lengths(perf, [TierLoad(0.05, 0, 0.8)], 4, 0.15) is None  # no decodes


def test_goodput_length_turns_off_under_load():
    perf = get_model("opt-13b-tp2-a100")
    small = goodput_length(perf, [0.8] * 4, 0, 6)
    big = goodput_length(perf, [0.6] * 1024, 0, 6)
    assert small > goodput_length(perf, [0.8] * 256, 0, 6) > 1
    assert big == 1
    assert goodput_length(perf, [0.0] * 8, 0, 6) == 1
    assert goodput_length(perf, [], 0, 6) == 1
    # the chosen length is the best expected decode tokens per second
    rates = {s: 4 * expected_tokens(0.8, s) / perf.batch_time_s(4 * s, s - 1) for s in range(1, 7)}
    assert small == max(rates, key=rates.get)


def test_constrained_lengths_keeps_the_step_within_limits():
    perf = get_model("opt-13b-tp2-a100")
    tiers = [TierLoad(0.05, 20, 0.8), TierLoad(0.2, 10, 0.8)]
    pos = constrained_lengths(perf, tiers, 300, 6, 0.15, time_limit_s=1.0)
    step = perf.batch_time_s(300 + 20 * pos[0] + 10 * pos[1], max(pos) - 1)
    assert pos[0] > 1
    assert step <= min(0.05 * planned_tokens(0.8, pos[0], 0.15), 0.2 * planned_tokens(0.8, pos[1], 0.15))
    # a near deadline leaves no room for drafts
    assert constrained_lengths(perf, tiers, 300, 6, 0.15, time_limit_s=0.06) == (1, 1)
    assert constrained_lengths(perf, [], 0, 6, 0.15, 1.0) == ()


def test_spec_config_validation():
    assert SpecConfig().enabled
    assert not SpecConfig(mode="off").enabled
    assert not spec_enabled(None)
    assert not SpecConfig(mode="adaptive", max_spec_len=1).enabled
    for bad in (
        {"mode": "eagle"},
        {"alpha_prior": 1.0},
        {"max_spec_len": 0},
        {"fixed_len": 0},
        {"safety_margin": 1.5},
        {"prior_strength": 0},
        {"request_min_trials": 0},
    ):
        with pytest.raises(ValueError):
            SpecConfig(**bad)


def _parse(argv):
    p = argparse.ArgumentParser()
    add_spec_arguments(p)
    return p.parse_args(argv)


def test_cli_flags_build_sim_config_kwargs():
    args = _parse(
        ["--spec", "adaptive", "--alpha", "0.8", "--max-spec-len", "5", "--no-spec-online", "--spec-prior", "0.6"]
    )
    out = spec_from_args(args)
    assert out["alpha"] == 0.8
    cfg = out["spec"]
    assert (cfg.mode, cfg.max_spec_len, cfg.online, cfg.alpha_prior) == ("adaptive", 5, False, 0.6)
    args = _parse(["--spec", "fixed", "--alpha", "0.7", "--max-spec-len", "3"])
    cfg = spec_from_args(args)["spec"]
    assert (cfg.fixed_len, cfg.alpha_prior, cfg.online) == (3, 0.7, True)  # prior defaults to --alpha
    assert spec_from_args(_parse(["--alpha", "0.7"])) == {"spec": None, "alpha": 0.7}
    with pytest.raises(SystemExit):
        _parse(["--spec", "bogus"])
    with pytest.raises(ValueError):
        spec_from_args(_parse(["--spec", "fixed", "--max-spec-len", "0"]))


def test_cli_switches_the_policy_to_its_speculative_variant():
    p = argparse.ArgumentParser()
    p.add_argument("--policy", default="fcfs")
    add_spec_arguments(p)
    args = p.parse_args(["--policy", "sarathi", "--spec", "goodput", "--alpha", "0.7"])
    assert spec_from_args(args)["spec"].mode == "goodput"
    assert args.policy == "sarathi+spec"
    off = p.parse_args(["--policy", "sarathi"])
    spec_from_args(off)
    assert off.policy == "sarathi"


def test_sim_options_build_a_speculative_sim_config():
    from sloserve.sim.options import add_sim_arguments, build_sim_config

    p = argparse.ArgumentParser()
    add_sim_arguments(p)
    add_spec_arguments(p)
    args = p.parse_args(
        [
            "--policy",
            "slos-serve",
            "--spec",
            "adaptive",
            "--alpha",
            "0.8",
            "--max-spec-len",
            "5",
            "--no-spec-online",
            "--spec-prior",
            "0.6",
        ]
    )
    cfg = build_sim_config(args)
    assert cfg.policy == "slos-serve+spec" and cfg.alpha == 0.8
    assert (cfg.spec.mode, cfg.spec.max_spec_len, cfg.spec.online, cfg.spec.alpha_prior) == ("adaptive", 5, False, 0.6)
    plain = build_sim_config(p.parse_args(["--policy", "vllm", "--alpha", "0.8"]))
    assert plain.spec is None and plain.policy == "vllm" and plain.alpha == 0.8


def test_add_spec_arguments_is_idempotent():
    p = argparse.ArgumentParser()
    add_spec_arguments(p)
    add_spec_arguments(p)
    assert p.parse_args(["--spec", "fixed"]).spec == "fixed"
