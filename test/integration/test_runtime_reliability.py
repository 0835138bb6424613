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
# OPT-13B's context is 2048 tokens: these tests need requests that outlive the action they race
LONG = ("--model", "opt-13b-tp2-a100", "--max-seq-len", "60000")
HANG_S = 120  # guards against a hang only; every wait below is on an event or server state


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory(*LONG, "--policy", POLICY, "--time-scale", "0.05")


def wait_for(pred, timeout_s: float = 60.0, what: str = "condition"):
    """Poll server state until ``pred`` holds; the timeout is a hang guard, not a speed bound."""
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
    return (
        s.get("num_requests") == 0
        and s.get("kv_used_blocks") == 0
        and server.get_json("/server_info")["requests_in_flight"] == 0
    )


async def stream_events(
    session, url: str, body: dict, started: asyncio.Event | None = None, out: list | None = None
) -> list:
    """The stream's events; ``started`` is set once the first chunk arrived (the request is in
    flight on a replica), so a test acts on that state instead of sleeping and hoping."""
    out = [] if out is None else out
    try:
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                out.append(("status", resp.status, await resp.text()))
                return out
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    payload = line[6:]
                    out.append(payload if payload == "[DONE]" else orjson.loads(payload))
                    if started is not None:
                        started.set()
    finally:
        if started is not None:
            started.set()  # also on failure: the waiter then sees the error in ``out``
    return out


async def start_streams(session, url: str, bodies: list[dict]) -> tuple[list[asyncio.Task], list[list]]:
    """Start one stream per body and return once every one has its first chunk."""
    flags = [asyncio.Event() for _ in bodies]
    outs: list[list] = [[] for _ in bodies]
    tasks = [asyncio.create_task(stream_events(session, url, b, f, o)) for b, f, o in zip(bodies, flags, outs)]
    await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), HANG_S)
    for out in outs:
        assert out and out[0] != "[DONE]" and not isinstance(out[0], tuple), out[:2]
    return tasks, outs


def test_stream_disconnect_aborts_and_frees_kv(server):
    wait_for(lambda: idle(server), what="idle server")
    body = {"text": "long " * 50, "stream": True, "sampling_params": {"max_new_tokens": 20000}}
    with httpx.stream("POST", server.url + "/generate", json=body, timeout=HANG_S) as resp:
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        wait_for(
            lambda: (lambda st: st["num_requests"] == 1 and st["kv_used_blocks"] > 0)(replica_state(server)),
            what="the request to hold KV",
        )
    wait_for(lambda: idle(server), what="KV freed after the client disconnected")


def test_non_stream_disconnect_aborts(server):
    wait_for(lambda: idle(server), what="idle server")
    with pytest.raises(httpx.ReadTimeout):  # a generous connect timeout: only the read may time out
        httpx.post(
            server.url + "/generate",
            timeout=httpx.Timeout(0.5, connect=HANG_S),
            json={"text": "wait", "sampling_params": {"max_new_tokens": 20000}},
        )
    wait_for(lambda: idle(server), what="request aborted after the client went away")


def test_abort_request_ends_stream_with_abort(server):
    async def run():
        async with aiohttp.ClientSession() as s:
            (task,), _ = await start_streams(
                s,
                server.url + "/generate",
                [{"text": "abort me", "rid": "to-abort", "stream": True, "sampling_params": {"max_new_tokens": 20000}}],
            )
            async with s.post(server.url + "/abort_request", json={"rid": "to-abort"}) as r:
                assert r.status == 200
            return await asyncio.wait_for(task, HANG_S)

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
            return await asyncio.gather(
                *(
                    stream_events(
                        s,
                        server.url + "/generate",
                        {"text": f"req {i}", "stream": True, "sampling_params": {"max_new_tokens": 16}},
                    )
                    for i in range(n)
                )
            )

    results = asyncio.run(run())
    for events in results:
        assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
        finals = [e for e in events[:-1] if e["meta_info"]["finish_reason"] is not None]
        assert len(finals) == 1 and finals[0] is events[-2]
        assert finals[0]["meta_info"]["completion_tokens"] == 16
    assert len({ev[-2]["meta_info"]["id"] for ev in results}) == n


def test_killed_scheduler_fails_its_requests_and_router_avoids_it(server_factory):
    srv = server_factory(*LONG, "--policy", POLICY, "--dp-size", "2", "--time-scale", "0.2")
    victim = srv.get_json("/server_info")["internal_states"][1]["pid"]
    n = 10
    # Long requests, all streaming before the kill: none can finish on its own first, and none
    # is still being admitted when the replica dies (that would be a 503 instead of a stream abort).
    bodies = [{"text": f"load {i}", "stream": True, "sampling_params": {"max_new_tokens": 20000}} for i in range(n)]

    async def run():
        async with aiohttp.ClientSession() as s:
            tasks, outs = await start_streams(s, srv.url + "/generate", bodies)
            on = {i: out[0]["meta_info"]["replica"] for i, out in enumerate(outs)}
            os.kill(victim, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*(t for i, t in enumerate(tasks) if on[i] == 1)), HANG_S)
            # the survivors keep streaming after the kill, then are aborted by the client
            seen = {i: len(outs[i]) for i in on if on[i] == 0}
            while any(len(outs[i]) <= seen[i] for i in seen):
                await asyncio.sleep(0.05)
            async with s.post(srv.url + "/abort_request", json={"abort_all": True}) as r:
                assert r.status == 200
            return on, await asyncio.wait_for(asyncio.gather(*tasks), HANG_S)

    on, results = asyncio.run(run())
    # round robin alternates the replicas
    assert sorted(on.values()).count(1) == n // 2
    for i, events in enumerate(results):
        assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
        final = events[-2]["meta_info"]
        assert final["finish_reason"]["type"] == "abort" and final["replica"] == on[i]
        expected = "replica 1 exited" if on[i] == 1 else "abort_request"
        assert expected in final["finish_reason"]["message"], final
    # the dead scheduler is restarted (docs/runtime.md, "Reliability"); /health says so per replica
    health = httpx.get(srv.url + "/health", timeout=HANG_S)
    assert health.status_code == 200, health.text  # replica 0 serves throughout
    rep = health.json()["replicas"][1]
    assert rep["exit_code"] == -signal.SIGKILL and rep["restarts"] == 1 and "exited" in rep["last_failure"]
    wait_for(
        lambda: httpx.get(srv.url + "/health", timeout=HANG_S).json()["replicas"][1]["up"],
        timeout_s=HANG_S,
        what="replica 1 restarted",
    )
    assert replica_state(srv, 1)["pid"] != victim
    replicas = set()
    for i in range(6):  # round robin uses the restarted replica again
        r = httpx.post(
            srv.url + "/generate", json={"text": f"after {i}", "sampling_params": {"max_new_tokens": 3}}, timeout=HANG_S
        )
        assert r.status_code == 200
        replicas.add(r.json()["meta_info"]["replica"])
    assert replicas == {0, 1}
    assert "sloserve_replicas_healthy 2.0" in httpx.get(srv.url + "/metrics", timeout=HANG_S).text


def test_sigterm_drains_in_flight_requests_and_exits_cleanly(server_factory):
    # a drain timeout far above the requests' length: the drain ends when they finish
    srv = server_factory(*LONG, "--policy", POLICY, "--time-scale", "0.2", "--drain-timeout-s", str(HANG_S))

    async def run():
        async with aiohttp.ClientSession() as s:
            tasks, _ = await start_streams(
                s,
                srv.url + "/generate",
                [{"text": f"drain {i}", "stream": True, "sampling_params": {"max_new_tokens": 100}} for i in range(5)],
            )
            srv.proc.send_signal(signal.SIGTERM)
            return await asyncio.wait_for(asyncio.gather(*tasks), HANG_S)

    results = asyncio.run(run())
    for events in results:
        assert events[-1] == "[DONE]"
        assert events[-2]["meta_info"]["finish_reason"]["type"] == "length"
    assert srv.proc.wait(HANG_S) == 0
    srv.stop()  # asserts no orphan process and no socket directory


def test_sigterm_past_drain_timeout_aborts_and_exits(server_factory):
    srv = server_factory(*LONG, "--policy", POLICY, "--time-scale", "1.0", "--drain-timeout-s", "1")
    with httpx.stream(
        "POST",
        srv.url + "/generate",
        timeout=HANG_S,
        json={"text": "forever", "stream": True, "sampling_params": {"max_new_tokens": 50000}},
    ) as resp:
        it = (line for line in resp.iter_lines() if line.startswith("data: "))
        lines = [next(it)]
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        lines += list(it)
    assert lines[-1] == "data: [DONE]"
    final = orjson.loads(lines[-2][6:])["meta_info"]["finish_reason"]
    assert final["type"] == "abort" and "shut down" in final["message"]
    # it waited out the drain timeout (a timer never fires early); no upper bound: load only delays
    assert time.monotonic() - t0 >= 0.9
    assert srv.proc.wait(HANG_S) == 0
    srv.stop()
