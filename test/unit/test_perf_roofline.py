"""Roofline batch-time model: physics sanity, presets, closed-form inverse exactness."""

from __future__ import annotations

import itertools

import pytest

from sloserve.perf import get_model, preset_names
from sloserve.perf.base import BatchTimeModel
from sloserve.perf.hardware import GPUS, MODELS, get_arch, get_gpu
from sloserve.perf.roofline import ROOFLINE_PRESETS, RooflineConfig, RooflineModel, line_limit, roofline

REQUIRED = [
    "llama-3-8b-a100",
    "llama-3-8b-h100",
    "qwen2.5-7b-a100",
    "qwen2.5-7b-h100",
    "llama-2-7b-a100",
    "llama-2-7b-h100",
    "llama-2-70b-tp4-a100",
    "llama-2-70b-tp4-h100",
    "opt-13b-tp2-roofline-a100",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_required_presets_resolve(name):
    assert name in preset_names()
    model = get_model(name)
    assert isinstance(model, RooflineModel) and model.name == name
    assert model.batch_time_s(1) > 0


@pytest.mark.parametrize(
    "arch,billions",
    [
        ("llama-3-8b", 8.03),
        ("llama-2-7b", 6.74),
        ("llama-2-70b", 69.0),
        ("qwen2.5-7b", 7.6),
        ("opt-13b", 12.9),
        ("llama-3.2-1b", 1.5),
    ],
)
def test_parameter_counts_match_published_sizes(arch, billions):
    # embedding + LM head counted separately, so tied-embedding models come out slightly high
    assert get_arch(arch).num_params / 1e9 == pytest.approx(billions, rel=0.06)


def test_kv_bytes_per_token_split_and_replicated_across_tp():
    m = get_arch("llama-3-8b")  # 32 layers, 8 KV heads x 128, bf16: 2*32*8*128*2 = 128 KiB
    assert m.kv_bytes_per_token(1) == 131072
    assert m.kv_bytes_per_token(4) == 131072 // 4
    assert m.kv_bytes_per_token(16) == 131072 // 8  # 8 heads over 16 ranks: one head per rank


def test_decode_is_weight_read_bound_and_prefill_compute_bound():
    model = get_model("llama-3-8b-a100")
    gpu, arch = GPUS["a100"], MODELS["llama-3-8b"]
    weights_s = (
        2
        * (arch.num_layers * arch.linear_params_per_layer + arch.lm_head_params)
        / (gpu.hbm_bytes_per_s * gpu.gemm_bw_eff)
    )
    assert model.breakdown(1)["gemm_bound"] == "memory"
    assert model.breakdown(1)["gemm_s"] == pytest.approx(weights_s, rel=0.01)
    assert model.breakdown(4096)["gemm_bound"] == "compute"
    slope = (model.batch_time_s(4096) - model.batch_time_s(2048)) / 2048
    flops_per_token = 2 * (arch.num_layers * arch.linear_params_per_layer + arch.lm_head_params)
    assert slope == pytest.approx(flops_per_token / (gpu.peak_flops * gpu.gemm_compute_eff), rel=0.15)
    # credible absolute numbers for an 8B model on one A100 (ms)
    assert 8e-3 < model.batch_time_s(1) < 20e-3
    assert 0.10 < model.zero_load_prefill_s(2048) < 0.25


def test_monotone_in_every_term_and_h100_faster():
    a100, h100 = get_model("llama-3-8b-a100"), get_model("llama-3-8b-h100")
    base = a100.batch_time_s(256, 0, 10_000, 1e5)
    assert a100.batch_time_s(257, 0, 10_000, 1e5) > base
    assert a100.batch_time_s(256, 1, 10_000, 1e5) > base
    assert a100.batch_time_s(256, 0, 20_000, 1e5) > base
    assert a100.batch_time_s(256, 0, 10_000, 2e5) > base
    for n in (1, 64, 512, 4096):
        assert h100.batch_time_s(n, 0, 50_000) < a100.batch_time_s(n, 0, 50_000)


def test_prefill_attention_makes_zero_load_prefill_superlinear():
    model = get_model("llama-2-7b-h100")
    t2k, t8k = model.zero_load_prefill_s(2048), model.zero_load_prefill_s(8192)
    no_attn = model.batch_time_s(8192) - model.batch_time_s(2048)
    assert t8k - t2k > no_attn  # the quadratic attention term adds on top of the linear part


def test_tensor_parallel_adds_allreduce_and_splits_weights():
    one = roofline("llama-2-70b", "a100", tp=1)
    four = roofline("llama-2-70b", "a100", tp=4)
    assert one.terms.fixed_s < four.terms.fixed_s  # all-reduce latencies only with tp > 1
    assert four.terms.weights_s == pytest.approx(one.terms.weights_s / 4, rel=1e-9)
    assert four.batch_time_s(1) < one.batch_time_s(1)
    with pytest.raises(ValueError):
        RooflineConfig(GPUS["a100"], MODELS["llama-2-7b"], tp=0)


def test_draft_model_costs_per_spec_step_only_when_present():
    with_draft = get_model("llama-3-8b-a100")
    without = roofline("llama-3-8b", "a100")
    assert without.batch_time_s(64, 3) == without.batch_time_s(64, 0)
    step = with_draft.batch_time_s(64, 1) - with_draft.batch_time_s(64, 0)
    assert step == pytest.approx(with_draft.terms.per_spec_step_s)
    # a 1B draft step costs a small fraction of an 8B step but more than nothing
    assert 0.05 * with_draft.batch_time_s(64) < step < 0.4 * with_draft.batch_time_s(64)


def test_breakdown_sums_to_total_and_lines_match():
    model = get_model("llama-2-70b-tp4-h100")
    for shape in ((1, 0, 0, 0.0), (300, 2, 40_000, 3e5), (5000, 0, 0, 1.2e7)):
        parts = model.breakdown(*shape)
        total = sum(v for k, v in parts.items() if k.endswith("_s") and k != "total_s")
        assert total == pytest.approx(parts["total_s"], rel=1e-12)
        lines = model.lines(*shape[1:])
        assert max(k * shape[0] + b for k, b in lines) == pytest.approx(model.batch_time_s(*shape), rel=1e-12)


def test_unknown_names_raise_with_choices():
    with pytest.raises(KeyError, match="a100"):
        get_gpu("tpu-v9")
    with pytest.raises(KeyError, match="llama-3-8b"):
        get_arch("gpt-17")
    with pytest.raises(KeyError, match="llama-3-8b-h100"):
        get_model("no-such-model")


TIMES = (0.0005, 0.004, 0.012, 0.02, 0.05, 0.1, 0.25, 1.0, 3.0)
SHAPES = list(itertools.product((0, 1, 4), (0, 777, 250_000)))


@pytest.mark.parametrize("name", sorted(ROOFLINE_PRESETS))
def test_closed_form_inverse_is_exact_and_matches_bisection(name):
    model = ROOFLINE_PRESETS[name]()
    for t, (spec, kv) in itertools.product(TIMES, SHAPES):
        n = model.max_tokens_within_s(t, spec, kv)
        if n == 0:
            assert model.batch_time_s(1, spec, kv) > t
        else:
            assert model.batch_time_s(n, spec, kv) <= t
        assert model.batch_time_s(n + 1, spec, kv) > t
        assert n == BatchTimeModel.max_tokens_within_s(model, t, spec, kv)


def test_inverse_exact_at_line_boundaries():
    model = get_model("qwen2.5-7b-a100")
    for n in (1, 17, 255, 256, 257, 1000, 4096):
        t = model.batch_time_s(n, 2, 1000)  # a budget exactly equal to a batch time
        assert model.max_tokens_within_s(t, 2, 1000) == n


@pytest.mark.parametrize("name", ["llama-3-8b-h100", "llama-2-70b-tp4-a100", "opt-13b-tp2-roofline-a100"])
def test_added_context_tokens_charges_prefill_attention(name):
    model = get_model(name)
    # pairs above the KV reads (a chunk already in the batch) and below them (decodes only)
    for t, kv, pairs in ((0.08, 20_000, 5e5), (0.05, 200_000, 200_064), (0.3, 50_000, 9e6), (0.02, 0, 0.0)):
        plain = model.max_tokens_within_s(t, 0, kv, pairs)
        for ctx in (512, 4096, 32_000):
            n = model.max_tokens_within_s(t, 0, kv, pairs, added_context_tokens=ctx)
            assert n <= plain
            if n == 0:
                assert model.batch_time_s(1, 0, kv, pairs + ctx) > t
            else:
                assert model.batch_time_s(n, 0, kv, pairs + n * ctx) <= t
            assert model.batch_time_s(n + 1, 0, kv, pairs + (n + 1) * ctx) > t


def test_line_limit_edge_cases():
    assert line_limit(1.0, 5.0, 4.0) == 0  # intercept already over budget
    assert line_limit(0.0, 1.0, 4.0) > 1 << 30  # flat line never binds
    # 0.1 * 3 == 0.30000000000000004 > 0.3 in floats: the answer follows the float expression
    assert line_limit(0.1, 0.0, 0.3) == 2
    assert line_limit(0.1, 0.0, 0.30000000000000004) == 3


def test_plan_time_uses_context_and_prefill_attention():
    from sloserve.core.plan import ScheduledItem, StepPlan
    from sloserve.perf.base import plan_shape

    model = get_model("llama-3-8b-h100")
    decodes = tuple(ScheduledItem(f"d{i}", 1, context_tokens=2000) for i in range(32))
    chunk = ScheduledItem("p", 1024, context_tokens=3072)  # second chunk of a long prompt
    plan = StepPlan(items=decodes + (chunk,))
    n, s, kv, pairs, reqs = plan_shape(plan.items)
    assert (n, kv, reqs) == (32 + 1024, 32 * 2000 + 3072, 33)
    assert pairs == pytest.approx(32 * 2001 + 1024 * (3072 + 512.5))
    t = model.plan_time_s(plan)
    assert t == model.batch_time_s(n, 0, kv, pairs)
    # the long-context chunk and the decodes' KV make this step slower than the same token count cold
    assert t > model.batch_time_s(n) + kv * model.terms.per_kv_token_s
    # the conservative planner bound admits this chunk only if its context is charged
    budget = t
    assert (
        model.max_tokens_within_s(budget, 0, kv, pairs - 1024 * (3072 + 512.5), added_context_tokens=3072 + 1024)
        <= 1024 + 32
    )


def test_decode_attention_is_charged_once_as_kv_reads():
    from sloserve.core.plan import ScheduledItem, StepPlan

    model = get_model("llama-3-8b-a100")
    plan = StepPlan(items=tuple(ScheduledItem(f"d{i}", 1, context_tokens=1000 + 37 * i) for i in range(64)))
    kv = sum(item.context_tokens for item in plan.items)
    # pairs beyond the KV reads are one per decode: the planner's view (no pairs) is off by 64 pairs
    gap = model.plan_time_s(plan) - model.batch_time_s(64, 0, kv)
    assert gap == pytest.approx(64 * model.terms.per_attn_pair_s, rel=1e-6)
    assert gap < 1e-6
    budget = model.plan_time_s(plan)
    assert model.max_tokens_within_s(budget, 0, kv, kv + 64) == 64
