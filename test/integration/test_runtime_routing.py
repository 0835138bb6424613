"""Every registered routing policy runs in the router process over --dp-size 2 schedulers."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import pytest

from sloserve.routing.base import ROUTERS

POLICY = os.environ.get("SLOSERVE_TEST_POLICY", "fcfs")


async def burst(url: str, n: int) -> list[tuple[int, dict]]:
    async def one(s, i):
        body = {
            "text": "route " * (1 + i % 50),
            "sampling_params": {"max_new_tokens": 8 + i % 8, "custom_params": {"slo_ttft_slowdown": 20}},
        }
        async with s.post(url + "/generate", json=body) as r:
            return r.status, await r.json()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        return await asyncio.gather(*(one(s, i) for i in range(n)))


# round-robin; a can_admit router (asks the scheduler processes over ROUTER/DEALER); a
# summary-driven one. The others run with -m slow (a server start costs ~3 s on 2 cores).
FAST = {"round-robin", "slo-sequential", "power-of-two"}
CASES = [r if r in FAST else pytest.param(r, marks=pytest.mark.slow) for r in ROUTERS.names()]


@pytest.mark.parametrize("router", CASES)
def test_router_dispatches_over_two_replicas(server_factory, router):
    srv = server_factory("--policy", POLICY, "--router", router, "--dp-size", "2", "--time-scale", "0.05")
    results = asyncio.run(burst(srv.url, 24))
    assert all(status == 200 for status, _ in results), [b for s, b in results if s != 200][:3]
    replicas = {body["meta_info"]["replica"] for _, body in results}
    assert replicas <= {0, 1} and replicas
    assert srv.get_json("/server_info")["router"] == router
    srv.stop()  # one server at a time on the 2-core machine


def test_killed_router_fails_in_flight_requests_then_is_restarted(server_factory):
    import signal

    import httpx

    srv = server_factory("--policy", POLICY, "--time-scale", "0.2")
    info = srv.get_json("/server_info")
    assert httpx.get(srv.url + "/v1/models/" + info["served_model_name"], timeout=5).status_code == 200
    assert httpx.get(srv.url + "/v1/models/nope", timeout=5).status_code == 404

    async def run():
        async with aiohttp.ClientSession() as s:
            task = asyncio.create_task(
                s.post(srv.url + "/generate", json={"text": "x", "sampling_params": {"max_new_tokens": 2000}})
            )
            # kill the router once the request is in flight (state, not a guessed sleep)
            while (await (await s.get(srv.url + "/server_info")).json())["requests_in_flight"] == 0:
                await asyncio.sleep(0.02)
            os.kill(info["router_pid"], signal.SIGKILL)
            resp = await asyncio.wait_for(task, 120)  # a hang guard, not a speed bound
            return resp.status, await resp.json()

    status, body = asyncio.run(run())
    assert status == 503 and "router process exited" in body["error"]["message"]
    # then the router is restarted (docs/runtime.md, "Reliability"): /health says so and serves
    deadline = time.monotonic() + 120  # a hang guard, not a speed bound
    while True:
        health = httpx.get(srv.url + "/health", timeout=30).json()
        if health["router_up"] and health["router"]["restarts"] == 1:
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
    after = httpx.post(srv.url + "/generate", json={"text": "y", "sampling_params": {"max_new_tokens": 2}}, timeout=60)
    assert after.status_code == 200, after.text
