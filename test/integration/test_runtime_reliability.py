"""Disconnects, aborts, hundreds of concurrent streams, a killed scheduler, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import httpx
import orjson
import pytest

POLICY = os.environ.get("SLOSERVE_TEST_POLICY", "fcfs")


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("--model", "opt-13b-tp2-a100", "--policy", POLICY, "--time-scale", "0.05")


def wait_for(pred, timeout_s: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def replica_state(server, i: int = 0) -> dict:
    return server.get_json("/server_info")["internal_states"][i]


def idle(server) -> bool:
    s = replica_state(server)
    return s.get("num_requests") == 0 and s.get("kv_used_blocks") == 0 and \
        server.get_json("/server_info")["requests_in_flight"] == 0


async def stream_events(session, url: str, body: dict) -> list:
    out = []
    async with session.post(url, json=body) as resp:
        if resp.status != 200:
            return [("status", resp.status, await resp.text())]
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                payload = line[6:]
                out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def test_stream_disconnect_aborts_and_frees_kv(server):
    wait_for(lambda: idle(server), what="idle server")
    body = {"text": "long " * 50, "stream": True, "sampling_params": {"max_new_tokens": 20000}}
    with httpx.stream("POST", server.url + "/generate", json=body, timeout=30) as resp:
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        wait_for(lambda: (lambda st: st["num_requests"] == 1 and st["kv_used_blocks"] > 0)(replica_state(server)),
                 what="the request to hold KV")
    wait_for(lambda: idle(server), what="KV freed after the client disconnected")


def test_non_stream_disconnect_aborts(server):
    wait_for(lambda: idle(server), what="idle server")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/generate", timeout=0.5,
                   json={"text": "wait", "sampling_params": {"max_new_tokens": 20000}})
    wait_for(lambda: idle(server), what="request aborted after the client went away")


def test_abort_request_ends_stream_with_abort(server):
    async def run():
        async with aiohttp.ClientSession() as s:
            task = asyncio.create_task(stream_events(s, server.url + "/generate", {
                "text": "abort me", "rid": "to-abort", "stream": True, "sampling_params": {"max_new_tokens": 20000}}))
            await asyncio.sleep(0.3)
            async with s.post(server.url + "/abort_request", json={"rid": "to-abort"}) as r:
                assert r.status == 200
            return await asyncio.wait_for(task, 10)

    events = asyncio.run(run())
    assert events[-1] == "[DONE]"
    final = events[-2]["meta_info"]["finish_reason"]
    assert final["type"] == "abort" and "abort_request" in final["message"]
    wait_for(lambda: idle(server), what="KV freed after abort")


def test_hundreds_of_concurrent_streams_each_end_once(server):
    n = 300

    async def run():
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as s:
            return await asyncio.gather(*(stream_events(s, server.url + "/generate", {
                "text": f"req {i}", "stream": True, "sampling_params": {"max_new_tokens": 16}}) for i in range(n)))

    t0 = time.monotonic()
    results = asyncio.run(run())
    elapsed = time.monotonic() - t0
    for events in results:
        assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
        finals = [e for e in events[:-1] if e["meta_info"]["finish_reason"] is not None]
        assert len(finals) == 1 and finals[0] is events[-2]
        assert finals[0]["meta_info"]["completion_tokens"] == 16
    assert len({ev[-2]["meta_info"]["id"] for ev in results}) == n
    assert elapsed < 60


def test_killed_scheduler_fails_its_requests_and_router_avoids_it(server_factory):
    srv = server_factory("--model", "opt-13b-tp2-a100", "--policy", POLICY, "--dp-size", "2", "--time-scale", "0.2")
    victim = srv.get_json("/server_info")["internal_states"][1]["pid"]

    async def run():
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(stream_events(s, srv.url + "/generate", {
                "text": f"load {i}", "stream": True, "sampling_params": {"max_new_tokens": 150}})) for i in range(30)]
            await asyncio.sleep(0.3)
            os.kill(victim, signal.SIGKILL)
            return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    results = asyncio.run(run())
    failed = ok = 0
    for events in results:
        assert events[-1] == "[DONE]"
        reason = events[-2]["meta_info"]["finish_reason"]
        if reason["type"] == "abort":
            assert "replica 1 exited" in reason["message"] and events[-2]["meta_info"]["replica"] == 1
            failed += 1
        else:
            assert reason["type"] == "length" and events[-2]["meta_info"]["replica"] == 0
            ok += 1
    # round robin puts every other request on replica 1: those in flight at the kill fail
    assert failed >= 5 and ok >= 5 and failed + ok == 30
    health = httpx.get(srv.url + "/health", timeout=5)
    assert health.status_code == 503
    assert health.json()["replicas"][1] == {"replica": 1, "up": False, "exit_code": -signal.SIGKILL}
    for i in range(6):  # the router now sends everything to the survivor
        r = httpx.post(srv.url + "/generate", json={"text": f"after {i}", "sampling_params": {"max_new_tokens": 3}},
                       timeout=10)
        assert r.status_code == 200 and r.json()["meta_info"]["replica"] == 0
    assert "sloserve_replicas_healthy 1.0" in httpx.get(srv.url + "/metrics", timeout=5).text


def test_sigterm_drains_in_flight_requests_and_exits_cleanly(server_factory):
    srv = server_factory("--model", "opt-13b-tp2-a100", "--policy", POLICY, "--time-scale", "0.2",
                         "--drain-timeout-s", "10")

    async def run():
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(stream_events(s, srv.url + "/generate", {
                "text": f"drain {i}", "stream": True, "sampling_params": {"max_new_tokens": 100}})) for i in range(5)]
            await asyncio.sleep(0.3)
            srv.proc.send_signal(signal.SIGTERM)
            return await asyncio.wait_for(asyncio.gather(*tasks), 30)

    results = asyncio.run(run())
    for events in results:
        assert events[-1] == "[DONE]"
        assert events[-2]["meta_info"]["finish_reason"]["type"] == "length"
    assert srv.proc.wait(15) == 0
    srv.stop()  # asserts no orphan process and no socket directory


def test_sigterm_past_drain_timeout_aborts_and_exits(server_factory):
    srv = server_factory("--model", "opt-13b-tp2-a100", "--policy", POLICY, "--time-scale", "1.0",
                         "--drain-timeout-s", "1")
    with httpx.stream("POST", srv.url + "/generate", timeout=30,
                      json={"text": "forever", "stream": True, "sampling_params": {"max_new_tokens": 50000}}) as resp:
        it = (line for line in resp.iter_lines() if line.startswith("data: "))
        lines = [next(it)]
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        lines += list(it)
    assert lines[-1] == "data: [DONE]"
    final = orjson.loads(lines[-2][6:])["meta_info"]["finish_reason"]
    assert final["type"] == "abort" and "shut down" in final["message"]
    assert 0.9 < time.monotonic() - t0 < 5
    assert srv.proc.wait(15) == 0
    srv.stop()
