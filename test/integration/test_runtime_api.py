"""The SGLang-compatible API of the embedded runtime, with real clients on loopback."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import httpx
import openai
import orjson
import pytest

POLICY = os.environ.get("SLOSERVE_TEST_POLICY", "fcfs")


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory(
        "--model",
        "opt-13b-tp2-a100",
        "--policy",
        POLICY,
        "--dp-size",
        "2",
        "--time-scale",
        "0.05",
        "--max-seq-len",
        "4096",
    )


def post(server, path: str, body, **kw) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30, **kw)


def test_generate_text_and_meta_info(server):
    r = post(server, "/generate", {"text": "Hello there", "sampling_params": {"max_new_tokens": 12}})
    assert r.status_code == 200, r.text
    out = r.json()
    meta = out["meta_info"]
    assert meta["prompt_tokens"] == len("Hello there".encode())
    assert meta["completion_tokens"] == 12 == len(out["output_ids"])
    assert meta["finish_reason"] == {"type": "length", "length": 12}
    assert out["text"] == bytes(out["output_ids"]).decode()
    assert meta["tier"] == "slo" and meta["engine"] == "simulated"
    assert meta["ttft_ms"] > 0 and meta["tpot_ms"] > 0 and meta["e2e_latency"] > 0
    assert meta["slo_met"] is True
    assert meta["last_token_deadline_ms"] > meta["ttft_deadline_ms"] > 0


def test_generate_is_deterministic_per_rid_and_accepts_nulls(server):
    body = {
        "input_ids": [1, 2, 3, 4],
        "rid": "fixed-rid-1",
        "return_logprob": None,
        "stream": None,
        "sampling_params": {
            "max_new_tokens": 6,
            "temperature": None,
            "top_p": None,
            "stop": None,
            "custom_params": None,
            "n": 1,
            "ignore_eos": True,
        },
    }
    first = post(server, "/generate", body).json()
    second = post(server, "/generate", body).json()
    other = post(server, "/generate", {**body, "rid": "fixed-rid-2"}).json()
    assert first["text"] == second["text"] != other["text"]
    assert first["meta_info"]["id"] == "fixed-rid-1"


def test_generate_batch_returns_list(server):
    r = post(server, "/generate", {"text": ["a b", "c d e"], "sampling_params": {"max_new_tokens": 3}})
    assert r.status_code == 200, r.text
    outs = r.json()
    assert [o["meta_info"]["prompt_tokens"] for o in outs] == [3, 5]
    assert all(o["meta_info"]["completion_tokens"] == 3 for o in outs)


def test_max_new_tokens_zero_runs_prefill_only(server):
    out = post(server, "/generate", {"text": "prefix only", "sampling_params": {"max_new_tokens": 0}}).json()
    assert out["text"] == "" and out["meta_info"]["completion_tokens"] == 0
    assert out["meta_info"]["finish_reason"]["type"] == "length"


def test_stop_string_trims_and_reports_match(server):
    base = post(
        server, "/generate", {"text": "x", "rid": "stop-probe", "sampling_params": {"max_new_tokens": 40}}
    ).json()
    stop = base["text"][20:24]
    cut = base["text"].find(stop)
    out = post(
        server,
        "/generate",
        {"text": "x", "rid": "stop-probe", "sampling_params": {"max_new_tokens": 40, "stop": [stop]}},
    ).json()
    assert out["text"] == base["text"][:cut]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    assert out["meta_info"]["completion_tokens"] < 40


async def _sse(session: aiohttp.ClientSession, url: str, body: dict) -> list[dict | str]:
    events: list[dict | str] = []
    async with session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line:
                continue
            assert line.startswith("data: ")
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return events


def test_generate_stream_raw_sse(server):
    async def run():
        async with aiohttp.ClientSession() as s:
            return await _sse(
                s,
                server.url + "/generate",
                {"text": "stream me", "stream": True, "sampling_params": {"max_new_tokens": 20}},
            )

    events = asyncio.run(run())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    texts = [c["text"] for c in chunks]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # cumulative, as SGLang streams
    assert [c["meta_info"]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "length"
    assert chunks[-1]["meta_info"]["completion_tokens"] == 20
    assert chunks[-1]["meta_info"]["slo_met"] in (True, False)


def test_openai_completions(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    resp = client.completions.create(
        model="opt-13b-tp2-a100",
        prompt="Say hi",
        max_tokens=7,
        extra_body={"custom_params": {"slo_ttft_ms": 2000, "slo_tpot_ms": 200}},
    )
    assert resp.usage.completion_tokens == 7 and resp.usage.prompt_tokens == 6
    assert resp.choices[0].finish_reason == "length"
    meta = resp.model_extra["meta_info"]
    assert meta["slo_ttft_ms"] == 2000 and meta["slo_tpot_ms"] == 200 and meta["slo_met"] is True
    stream = client.completions.create(
        model="m", prompt="Say hi", max_tokens=9, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert len(text.encode()) == 9
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 9


def test_openai_chat(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    resp = client.chat.completions.create(
        model="m", messages=msgs, max_tokens=5, extra_body={"custom_params": {"slo_stage": "answer"}}
    )
    assert resp.choices[0].message.role == "assistant"
    assert len(resp.choices[0].message.content.encode()) == 5
    assert resp.model_extra["meta_info"]["slo_stage"] == "answer"
    chunks = list(
        client.chat.completions.create(
            model="m", messages=msgs, max_completion_tokens=6, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(content.encode()) == 6
    assert chunks[-1].usage.total_tokens == resp.usage.prompt_tokens + 6


def test_info_routes(server):
    info = server.get_json("/server_info")
    assert info["engine"] == "simulated" and info["dp_size"] == 2 and info["policy"] == POLICY
    assert len(info["internal_states"]) == 2 and all(s["up"] for s in info["internal_states"])
    assert server.get_json("/get_server_info")["engine"] == "simulated"
    assert server.get_json("/model_info")["model_path"] == "opt-13b-tp2-a100"
    assert server.get_json("/get_model_info")["is_generation"] is True
    models = server.get_json("/v1/models")
    assert models["data"][0]["id"] == "opt-13b-tp2-a100" and models["data"][0]["max_model_len"] == 4096
    assert server.get_json("/health")["status"] == "ok"
    assert httpx.get(server.url + "/health_generate", timeout=30).status_code == 200
    assert httpx.post(server.url + "/flush_cache", timeout=10).status_code == 200


def test_metrics_exposes_tiers_and_attainment(server):
    post(server, "/generate", {"text": "metrics", "sampling_params": {"max_new_tokens": 4}})
    text = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'sloserve_ttft_seconds_bucket{le="0.01",tier="slo"}' in text
    assert 'sloserve_tpot_seconds_count{tier="slo"}' in text
    assert "sloserve_admissions_total{" in text
    assert "sloserve_slo_attainment " in text
