"""Pure parsing of the runtime's request bodies, SLO tags, CLI and synthetic tokens."""

from __future__ import annotations

import pytest

from sloserve.core.request import Request
from sloserve.core.slo import DecodeSegment
from sloserve.runtime.config import ServerConfig, config_from_args
from sloserve.runtime.protocol import BadRequest, chat_prompt, parse_chat, parse_completion, parse_generate
from sloserve.runtime.slo_params import SloParamError, arrival_from_unix, parse_slo, validate
from sloserve.runtime.tokenizer import ByteTokenizer, synthetic_output_ids
from sloserve.runtime.wire import request_from_wire, request_to_wire


def test_generate_defaults_and_nulls():
    (g,) = parse_generate({"text": "hi", "sampling_params": None, "stream": None, "rid": None}, 128)
    assert g.text == "hi" and g.sampling.max_new_tokens == 128 and not g.stream and g.rid is None
    (g,) = parse_generate(
        {"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 0, "stop": "x", "temperature": None}}, 128
    )
    assert g.input_ids == [1, 2] and g.sampling.max_new_tokens == 0 and g.sampling.stop == ("x",)


def test_generate_batch_rids():
    gens = parse_generate({"text": ["a", "b"], "rid": "r"}, 4)
    assert [g.rid for g in gens] == ["r_0", "r_1"] and all(g.extra["batched"] for g in gens)
    with pytest.raises(BadRequest, match="rid"):
        parse_generate({"text": ["a", "b"], "rid": ["only-one"]}, 4)
    with pytest.raises(BadRequest, match="streaming a batched"):
        parse_generate({"text": ["a", "b"], "stream": True}, 4)


@pytest.mark.parametrize(
    "sp,needle",
    [
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": 1.5}, "max_new_tokens"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"top_k": 0}, "top_k"),
        ({"min_p": 2}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
        ({"unknown": 1}, "unknown"),
        ({"stop_token_ids": ["a"]}, "stop_token_ids"),
        ({"max_new_tokens": 3, "min_new_tokens": 5}, "min_new_tokens"),
        ({"temperature": float("nan")}, "temperature"),
    ],
)
def test_sampling_params_validation(sp, needle):
    with pytest.raises(BadRequest, match=needle) as info:
        parse_generate({"text": "a", "sampling_params": sp}, 8)
    assert info.value.status_code == 400


def test_openai_parsing():
    g = parse_completion(
        {
            "model": "m",
            "prompt": ["hello"],
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
            "custom_params": {"slo_tpot_ms": 9},
        }
    )
    assert g.text == "hello" and g.sampling.max_new_tokens == 3 and g.stream and g.extra["include_usage"]
    assert g.sampling.custom_params == {"slo_tpot_ms": 9}
    assert parse_completion({"prompt": [5, 6]}).input_ids == [5, 6]
    c = parse_chat(
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
            "max_completion_tokens": 2,
            "max_tokens": 9,
        },
        128,
    )
    assert c.sampling.max_new_tokens == 2 and c.text == "<|user|>\nx\n<|assistant|>\n"
    with pytest.raises(BadRequest, match="only text parts"):
        chat_prompt([{"role": "user", "content": [{"type": "image_url"}]}])


def test_slo_resolution_order():
    spec = parse_slo({"slo_class": "coder", "slo_tpot_ms": 20, "other": "ignored"})
    assert spec.slo_class == "coder" and spec.tpot_ms == 20 and spec.ttft.slowdown == 5.0
    assert spec.segments() == (DecodeSegment(20, None, "main"),)
    assert parse_slo(None).ttft.slowdown == 5.0 and parse_slo({}).tpot_ms == 100.0
    think = parse_slo({"slo_think_tpot_ms": 10, "slo_tpot_ms": 50, "slo_think_tokens": 7})
    assert think.segments() == (DecodeSegment(10, 7, "thinking"), DecodeSegment(50, None, "answer"))
    marker = parse_slo({"slo_class": "reasoning"})
    assert marker.think_marker == "</think>" and marker.segments() == (DecodeSegment(50.0, None, "thinking"),)
    assert marker.segments_after_marker(4) == (DecodeSegment(50.0, 4, "thinking"), DecodeSegment(100.0, None, "answer"))


@pytest.mark.parametrize(
    "custom,field",
    [
        ({"slo_bogus": 1}, "slo_bogus"),
        ({"slo_tpot_ms": 0}, "slo_tpot_ms"),
        ({"slo_tpot_ms": True}, "slo_tpot_ms"),
        ({"slo_stage": ""}, "slo_stage"),
        ({"slo_stage_index": -1}, "slo_stage_index"),
        ({"slo_think_tokens": -2}, "slo_think_tokens"),
        ({"slo_class": "nope"}, "slo_class"),
        ({"slo_ttft_ms": 1, "slo_ttft_slowdown": 1}, "slo_ttft_ms"),
    ],
)
def test_slo_errors_name_the_field(custom, field):
    with pytest.raises(SloParamError) as info:
        parse_slo(custom)
    assert info.value.field_name == field and field in str(info.value)


def test_null_slo_values_mean_not_given_and_arrival_conversion():
    assert validate({"slo_tpot_ms": None, "slo_class": None}) == {}
    assert arrival_from_unix(1000.0, 1000.5, 20.0) == pytest.approx(19.5)
    with pytest.raises(SloParamError, match="future"):
        arrival_from_unix(1010.0, 1000.0, 20.0)


def test_synthetic_tokens_are_deterministic_and_place_the_marker():
    tok = ByteTokenizer()
    a = synthetic_output_ids(tok, 0, "r1", 50)
    assert a == synthetic_output_ids(tok, 0, "r1", 50) != synthetic_output_ids(tok, 1, "r1", 50)
    assert len(a) == 50 and tok.decode(tok.encode("héllo")) == "héllo"
    m = synthetic_output_ids(tok, 0, "r1", 50, "</think>", 20)
    assert tok.decode(m[20:28]) == "</think>"


def test_wire_round_trip():
    req = Request(
        "r",
        1.5,
        10,
        4,
        0.2,
        (DecodeSegment(30, 2, "thinking"), DecodeSegment(60)),
        slo_class="c",
        program_id="p",
        stage_index=1,
        stage_name="answer",
        output_tokens_known=False,
        max_new_tokens=4,
    )
    req.route_best_effort = True
    back = request_from_wire(request_to_wire(req))
    assert (back.request_id, back.arrival_s, back.segments, back.program_id, back.max_new_tokens) == (
        "r",
        1.5,
        req.segments,
        "p",
        4,
    )
    assert back.route_best_effort and not back.output_tokens_known


def test_cli_generated_from_config():
    cfg = config_from_args(
        [
            "--policy",
            "fcfs",
            "--policy-opt",
            "token_budget=512",
            "--policy-opt",
            "max-running=8",
            "--dp-size",
            "2",
            "--reject-on-overload",
            "--max-seq-len",
            "2048",
        ]
    )
    assert cfg.policy_options() == {"token_budget": 512, "max_running": 8}
    assert cfg.dp_size == 2 and cfg.reject_on_overload and cfg.context_len == 2048
    # the default context is the preset model's (OPT-13B: 2048), capped at the KV pool
    assert ServerConfig().context_len == 2048
    assert ServerConfig(model="llama-3-8b-h100").context_len == 8192
    assert ServerConfig(model="llama-3-8b-h100", kv_tokens=4096).context_len == 4096
    assert config_from_args(["--model-path", "llama-2-7b-a100"]).model == "llama-2-7b-a100"
    with pytest.raises(ValueError, match="key=value"):
        config_from_args(["--policy-opt", "novalue"]).policy_options()
    with pytest.raises(ValueError, match="dp-size"):
        ServerConfig(dp_size=0)


def test_wire_encodes_what_policies_put_in_stats():
    import numpy as np

    from sloserve.runtime.messages import Stats, decode, encode

    stats = {"n": np.int64(3), 1: {2, 1}, "f": np.float32(0.5), "arr": np.arange(2), "o": object}
    msg = decode(encode(Stats(0, stats))).stats
    assert msg["n"] == 3 and msg["1"] == [1, 2] and msg["f"] == 0.5 and msg["arr"] == [0, 1]
    assert isinstance(msg["o"], str)


def _state(text_ids, **sampling):
    from sloserve.runtime.protocol import GenInput, Sampling
    from sloserve.runtime.state import ReqState

    spec = parse_slo({"slo_class": "reasoning"})
    gen = GenInput("r", "p", None, Sampling(max_new_tokens=len(text_ids), **sampling))
    req = Request("r", 0.0, 1, len(text_ids), 1.0, spec.segments(), max_new_tokens=len(text_ids))
    return ReqState("r", gen, spec, req, [1], list(text_ids), len(text_ids))


def test_state_stop_strings_token_ids_and_marker():
    tok = ByteTokenizer()
    st = _state(tok.encode("abc STOP def</think>xyz"), stop=("STOP",))
    st.add_tokens(6, 0.1)
    assert st.check_stop(tok, 0) is None  # "abc ST" holds no full match yet
    st.add_tokens(3, 0.2)
    assert st.check_stop(tok, 6) == "STOP" and st.text(tok) == "abc "
    kept = _state(tok.encode("abc STOP def"), stop=("STOP",), no_stop_trim=True)
    kept.add_tokens(12, 0.1)
    assert kept.check_stop(tok, 0) == "STOP" and kept.text(tok) == "abc STOP"
    ids = _state([5, 6, 7, 8], stop_token_ids=frozenset({7}))
    ids.add_tokens(4, 0.1)
    assert ids.check_stop(tok, 0) == "7" and ids.visible == 3 and len(ids.token_times) == 3
    think = _state(tok.encode("abc STOP def</think>xyz"))
    think.add_tokens(19, 0.1)
    assert think.find_marker(tok) is None
    think.add_tokens(4, 0.2)
    assert think.find_marker(tok) == 20 and think.request.segments[0].num_tokens == 20
    assert think.finish(0.3, {"type": "length"}) and not think.finish(0.4, {"type": "length"})


@pytest.mark.parametrize(
    "parse,body,field",
    [
        (parse_completion, {"prompt": "x", "logprobs": 2}, "logprobs"),
        (parse_completion, {"prompt": "x", "echo": True}, "echo"),
        (parse_completion, {"prompt": "x", "suffix": "end"}, "suffix"),
        (parse_chat, {"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
        (parse_chat, {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools"),
        (
            parse_chat,
            {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
            "response_format",
        ),
    ],
)
def test_unsupported_openai_field_error_names_that_field(parse, body, field):
    with pytest.raises(BadRequest) as info:
        parse(body, 16)
    assert info.value.param == field and str(info.value).startswith(field)
    # the neutral values are accepted
    neutral = {"logprobs": False, "echo": False, "suffix": None, "tools": [], "response_format": {"type": "text"}}
    parse({**body, field: neutral[field]}, 16)
