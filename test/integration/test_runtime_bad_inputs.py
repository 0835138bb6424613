"""Every bad input gets a 4xx naming the problem, and the server keeps serving."""

from __future__ import annotations

import os

import httpx
import orjson
import pytest

POLICY = os.environ.get("SLOSERVE_TEST_POLICY", "fcfs")


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory(
        "--model", "opt-13b-tp2-a100", "--policy", POLICY, "--time-scale", "0.02", "--max-seq-len", "1024"
    )


GEN = "/generate"
OK_SP = {"max_new_tokens": 4}

CASES = [
    # (path, raw body bytes or JSON object, expected status, text the error must contain)
    (GEN, b'{"text": "hi", ', 400, "invalid JSON"),
    (GEN, b'{"text": "\xff\xfe"}', 400, "invalid JSON"),
    (GEN, b"[1, 2]", 400, "JSON object"),
    (GEN, {"sampling_params": OK_SP}, 400, "text or input_ids"),
    (GEN, {"text": "a", "input_ids": [1], "sampling_params": OK_SP}, 400, "text or input_ids"),
    (GEN, {"text": 5}, 400, "text must be"),
    (GEN, {"input_ids": ["a"]}, 400, "input_ids"),
    (GEN, {"input_ids": [-1]}, 400, "input_ids"),
    (GEN, {"text": "a", "sampling_params": {"max_new_tokens": -1}}, 400, "max_new_tokens"),
    (GEN, {"text": "a", "sampling_params": {"max_new_tokens": "ten"}}, 400, "max_new_tokens"),
    (GEN, {"text": "a", "sampling_params": {"temperature": -0.5}}, 400, "temperature"),
    (GEN, {"text": "a", "sampling_params": {"top_p": 0}}, 400, "top_p"),
    (GEN, {"text": "a", "sampling_params": {"bogus_knob": 1}}, 400, "bogus_knob"),
    (GEN, {"text": "a", "sampling_params": "fast"}, 400, "sampling_params"),
    (GEN, {"text": "a", "stream": "yes"}, 400, "stream"),
    (GEN, {"text": "a", "sampling_params": {"stop": 3}}, 400, "stop"),
    (GEN, {"text": "a", "sampling_params": {"custom_params": {"slo_tpot": 50}}}, 400, "slo_tpot"),
    (GEN, {"text": "a", "sampling_params": {"custom_params": {"slo_tpot_ms": -5}}}, 400, "slo_tpot_ms"),
    (GEN, {"text": "a", "sampling_params": {"custom_params": {"slo_ttft_ms": "soon"}}}, 400, "slo_ttft_ms"),
    (
        GEN,
        {"text": "a", "sampling_params": {"custom_params": {"slo_ttft_ms": 5, "slo_ttft_slowdown": 2}}},
        400,
        "slo_ttft_ms",
    ),
    (GEN, {"text": "a", "sampling_params": {"custom_params": {"slo_class": "no-such-class"}}}, 400, "slo_class"),
    (GEN, {"text": "a", "sampling_params": {"custom_params": {"slo_think_tokens": 5}}}, 400, "slo_think_tokens"),
    (GEN, {"text": "a", "sampling_params": {"custom_params": {"slo_arrival_s": 4.0e10}}}, 400, "slo_arrival_s"),
    (GEN, {"text": "a", "sampling_params": {"custom_params": {"slo_best_effort": "yes"}}}, 400, "slo_best_effort"),
    (GEN, {"text": "x" * 1000, "sampling_params": {"max_new_tokens": 100}}, 400, "maximum context length"),
    (GEN, {"text": "a", "return_logprob": True}, 400, "return_logprob"),
    (GEN, {"text": "a", "sampling_params": {"n": 2}}, 400, "n > 1"),
    ("/v1/completions", {"model": "m", "prompt": 7}, 400, "prompt"),
    ("/v1/completions", {"model": "m", "prompt": "a", "max_tokens": -3}, 400, "max_tokens"),
    ("/v1/completions", {"model": "m", "prompt": "a", "custom_params": {"slo_nope": 1}}, 400, "slo_nope"),
    ("/v1/completions", {"model": "m", "prompt": "a", "custom_params": "tight"}, 400, "custom_params"),
    ("/v1/chat/completions", {"model": "m", "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"content": "no role"}]}, 400, "role"),
    (
        "/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "a"}], "temperature": "hot"},
        400,
        "temperature",
    ),
    ("/abort_request", {"rid": "never-seen"}, 404, "never-seen"),
    ("/abort_request", {"rid": 12}, 400, "rid"),
]


@pytest.mark.parametrize("path,body,status,needle", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_input_is_4xx_and_server_keeps_serving(server, path, body, status, needle):
    if isinstance(body, bytes):
        r = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"}, timeout=10)
    else:
        r = httpx.post(server.url + path, json=body, timeout=10)
    assert r.status_code == status, r.text
    assert needle in r.text
    ok = httpx.post(server.url + GEN, json={"text": "still alive", "sampling_params": OK_SP}, timeout=10)
    assert ok.status_code == 200 and ok.json()["meta_info"]["completion_tokens"] == 4


def test_openai_errors_use_openai_shape(server):
    r = httpx.post(server.url + "/v1/completions", json={"model": "m", "prompt": "a", "max_tokens": -1}, timeout=10)
    body = r.json()
    assert r.status_code == 400 and body["object"] == "error" and body["code"] == 400
    assert body["param"] == "max_tokens"


def test_duplicate_inflight_rid_is_served_without_revealing_the_first(server_factory):
    # The first request streams (in flight once its first chunk arrived) and runs for minutes at
    # time scale 1, so it is still there when the duplicate comes, however loaded the machine.
    # Refusing the duplicate would tell any client which rids others have in flight (issue 13).
    srv = server_factory("--policy", POLICY, "--time-scale", "1", "--max-seq-len", "60000")
    first = {"text": "a", "rid": "dup-rid", "stream": True, "sampling_params": {"max_new_tokens": 20000}}
    with httpx.stream("POST", srv.url + GEN, json=first, timeout=120) as resp:
        lines = resp.iter_lines()  # kept referenced: a closed line iterator closes the stream
        next(line for line in lines if line.startswith("data: "))
        r = httpx.post(srv.url + GEN, json={"text": "b", "rid": "dup-rid", "sampling_params": OK_SP}, timeout=120)
        assert r.status_code == 200, r.text
        meta = r.json()["meta_info"]
        assert meta["id"] == "dup-rid" and meta["completion_tokens"] == 4
        # the first is untouched by the second's end, and an abort by rid reaches it
        assert srv.get_json("/server_info")["requests_in_flight"] == 1
        assert httpx.post(srv.url + "/abort_request", json={"rid": "dup-rid"}, timeout=120).status_code == 200
        events = [orjson.loads(line[6:]) for line in lines if line.startswith("data: {")]
    final = events[-1]["meta_info"]
    assert final["id"] == "dup-rid" and final["finish_reason"]["type"] == "abort"
