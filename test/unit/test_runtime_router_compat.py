"""What sglang-router 0.3.2 needs from the embedded runtime that SGLang 0.5.23 does not define:
SLO keys from a chat request's OpenAI ``metadata`` (the router drops ``custom_params`` there) and
the legacy ``/get_load`` entry (its ``power_of_two`` load monitor polls nothing else)."""

from __future__ import annotations

import pytest

from sloserve.runtime.gateway import legacy_load
from sloserve.runtime.protocol import BadRequest, metadata_slo, parse_chat
from sloserve.runtime.slo_params import SloParamError, parse_slo

MESSAGES = [{"role": "user", "content": "hi"}]


def test_metadata_strings_become_slo_values():
    meta = {
        "slo_ttft_ms": "300",
        "slo_tpot_ms": "40.5",
        "slo_best_effort": "True",
        "slo_class": "chatbot",
        "slo_stage_index": "2",
        "slo_think_tokens": "128",
        "user_tag": "x",
    }
    got = metadata_slo({"metadata": meta})
    assert got == {
        "slo_ttft_ms": 300.0,
        "slo_tpot_ms": 40.5,
        "slo_best_effort": True,
        "slo_class": "chatbot",
        "slo_stage_index": 2,
        "slo_think_tokens": 128,
    }
    assert metadata_slo({}) == {} and metadata_slo({"metadata": None}) == {}
    with pytest.raises(BadRequest):
        metadata_slo({"metadata": ["slo_tpot_ms"]})


def test_chat_takes_metadata_and_custom_params_wins():
    gen = parse_chat({"messages": MESSAGES, "metadata": {"slo_tpot_ms": "70", "slo_ttft_ms": "500"}}, 16)
    assert gen.sampling.custom_params == {"slo_tpot_ms": 70.0, "slo_ttft_ms": 500.0}
    slo = parse_slo(gen.sampling.custom_params)
    assert slo.tpot_ms == 70.0
    both = {"messages": MESSAGES, "metadata": {"slo_tpot_ms": "70"}, "custom_params": {"slo_tpot_ms": 50}}
    assert parse_chat(both, 16).sampling.custom_params == {"slo_tpot_ms": 50}
    assert parse_chat({"messages": MESSAGES, "metadata": {"origin": "a"}}, 16).sampling.custom_params is None


def test_bad_metadata_values_are_slo_errors():
    gen = parse_chat({"messages": MESSAGES, "metadata": {"slo_tpot_ms": "fast"}}, 16)
    with pytest.raises(SloParamError, match="slo_tpot_ms"):
        parse_slo(gen.sampling.custom_params)
    gen = parse_chat({"messages": MESSAGES, "metadata": {"slo_best_effort": "yes"}}, 16)
    with pytest.raises(SloParamError, match="slo_best_effort"):
        parse_slo(gen.sampling.custom_params)


def test_legacy_load_entry():
    load = {"dp_rank": 1, "num_running_reqs": 2, "num_waiting_reqs": 3, "num_total_tokens": 900, "token_usage": 0.1}
    assert legacy_load(load) == {"dp_rank": 1, "num_reqs": 5, "num_waiting_reqs": 3, "num_tokens": 900}
