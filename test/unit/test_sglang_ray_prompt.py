"""What the SGLang backend's Ray ingress reads from a request body before routing it."""

from __future__ import annotations

from sloserve.sglang.ray_prompt import (
    DEFAULT_MAX_NEW_TOKENS,
    PromptCounter,
    custom_params_of,
    max_new_tokens_of,
    with_best_effort,
)


def test_prompt_tokens_on_every_route_without_a_tokenizer():
    count = PromptCounter(None).count  # characters / 4 + 1 per text
    assert count("/generate", {"text": "a" * 40}) == 11
    assert count("/generate", {"text": ["a" * 8, "b" * 4]}) == 3 + 2
    assert count("/generate", {"input_ids": [1, 2, 3]}) == 3
    assert count("/generate", {"input_ids": [[1, 2], [3]]}) == 3
    assert count("/v1/completions", {"prompt": "a" * 8}) == 3
    chat = {"messages": [{"role": "user", "content": "a" * 8}, {"content": [{"type": "text", "text": "b" * 4}]}]}
    assert count("/v1/chat/completions", chat) == 3 + 2


def test_a_missing_tokenizer_falls_back_to_the_estimate(tmp_path):
    assert PromptCounter(str(tmp_path / "absent")).tokenizer is None


def test_output_caps_and_slo_tags_per_route():
    generate = {"sampling_params": {"max_new_tokens": 7, "custom_params": {"slo_tpot_ms": 50}}}
    assert max_new_tokens_of("/generate", generate) == 7
    assert custom_params_of("/generate", generate) == {"slo_tpot_ms": 50}
    assert max_new_tokens_of("/generate", {}) == DEFAULT_MAX_NEW_TOKENS["/generate"]
    assert max_new_tokens_of("/v1/chat/completions", {"max_completion_tokens": 9, "max_tokens": 3}) == 9
    assert max_new_tokens_of("/v1/completions", {"max_tokens": 3}) == 3
    assert custom_params_of("/v1/completions", {"custom_params": {"slo_ttft_ms": 100}}) == {"slo_ttft_ms": 100}
    assert custom_params_of("/v1/completions", {}) is None


def test_best_effort_verdict_lands_where_the_plugin_reads_it_on_a_copy():
    body = {"text": "x", "sampling_params": [{"custom_params": {"slo_tpot_ms": 50}}, {}]}
    sent = with_best_effort("/generate", body)
    assert [p["custom_params"]["slo_routed_best_effort"] for p in sent["sampling_params"]] == [True, True]
    assert sent["sampling_params"][0]["custom_params"]["slo_tpot_ms"] == 50
    assert "slo_routed_best_effort" not in body["sampling_params"][0]["custom_params"]  # the original is kept
    assert with_best_effort("/generate", {"text": "x"})["sampling_params"]["custom_params"] == {
        "slo_routed_best_effort": True
    }
    openai = with_best_effort("/v1/chat/completions", {"messages": [], "custom_params": {"slo_ttft_ms": 9}})
    assert openai["custom_params"] == {"slo_ttft_ms": 9, "slo_routed_best_effort": True}
