"""Issue 13: bounded queues (429 + Retry-After), watchdog and restarts, API keys, HTTP limits."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time

import aiohttp
import httpx
import orjson
import pytest

POLICY = os.environ.get("SLOSERVE_TEST_POLICY", "fcfs")
LONG = ("--model", "opt-13b-tp2-a100", "--max-seq-len", "60000")
HANG_S = 120  # hang guards only: every wait is on a response, a closed socket or server state
GEN = "/generate"


def wait_for(pred, what: str, timeout_s: float = HANG_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def health(srv) -> dict:
    return httpx.get(srv.url + "/health", timeout=HANG_S).json()


def serves(srv, n: int = 4, headers=None) -> set:
    replicas = set()
    for i in range(n):
        r = httpx.post(
            srv.url + GEN,
            json={"text": f"ok {i}", "sampling_params": {"max_new_tokens": 3}},
            headers=headers,
            timeout=HANG_S,
        )
        assert r.status_code == 200, r.text
        replicas.add(r.json()["meta_info"]["replica"])
    return replicas


async def first_chunk(session, url: str, body: dict):
    """Open a stream and return (task finishing it, its first event)."""
    first: asyncio.Future = asyncio.get_running_loop().create_future()

    async def run():
        events = []
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                out = [("status", resp.status, await resp.text())]
                first.done() or first.set_result(out[0])
                return out
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    payload = line[6:]
                    events.append(payload if payload == "[DONE]" else orjson.loads(payload))
                    first.done() or first.set_result(events[0])
        return events

    task = asyncio.create_task(run())
    return task, await asyncio.wait_for(first, HANG_S)


# ---- defect 4: bounded queue, queue timeout ----------------------------------------------------
def test_queue_full_is_429_with_retry_after(server_factory):
    # an engine so slow that no first token comes while the test runs: the queue stays full
    srv = server_factory(
        *LONG, "--policy", POLICY, "--time-scale", "2000", "--max-queued-requests", "2", "--queue-timeout-s", "0"
    )

    waiting = [
        threading.Thread(
            target=httpx.post,
            args=(srv.url + GEN,),
            kwargs={"json": {"text": "x" * 500, "sampling_params": {"max_new_tokens": 4}}, "timeout": HANG_S},
        )
        for _ in range(2)
    ]
    for t in waiting:
        t.start()
    wait_for(lambda: srv.get_json("/server_info")["requests_in_flight"] == 2, "two queued requests")
    r = httpx.post(srv.url + GEN, json={"text": "third", "sampling_params": {"max_new_tokens": 4}}, timeout=HANG_S)
    status, body, retry = r.status_code, r.json(), r.headers.get("Retry-After")
    assert httpx.post(srv.url + "/abort_request", json={"abort_all": True}, timeout=HANG_S).status_code == 200
    for t in waiting:
        t.join(HANG_S)
    assert status == 429 and retry is not None and int(retry) >= 1
    assert "--max-queued-requests" in body["error"]["message"]
    wait_for(lambda: srv.get_json("/server_info")["requests_in_flight"] == 0, "the queue to drain")


def test_best_effort_past_queue_timeout_is_429(server_factory):
    srv = server_factory(*LONG, "--policy", POLICY, "--time-scale", "2000", "--queue-timeout-s", "1")
    r = httpx.post(
        srv.url + GEN,
        timeout=HANG_S,
        json={"text": "slow", "sampling_params": {"max_new_tokens": 4, "custom_params": {"slo_best_effort": True}}},
    )
    assert r.status_code == 429, r.text
    assert "--queue-timeout-s" in r.text and r.headers.get("Retry-After")
    wait_for(lambda: srv.get_json("/server_info")["requests_in_flight"] == 0, "the request to be freed")


@pytest.mark.parametrize("expiry", [True, False])
def test_unadmitted_request_past_its_ttft_deadline_ends_with_429(server_factory, expiry):
    """--best-effort-expiry (default, the SGLang plugin's rule): a TTFT SLO of 1 us cannot be
    planned, so the request is left to best effort and ends with 429 once the deadline passes.
    The control, --no-best-effort-expiry, keeps it queued until --queue-timeout-s ends it."""
    flags = [] if expiry else ["--no-best-effort-expiry"]
    # no first token comes; the queue ends it after 5 s (time for the admission on a busy host)
    slow = ("--time-scale", "2000", "--queue-timeout-s", "5")
    srv = server_factory("--model", "opt-13b-tp2-a100", "--policy", "slos-serve", *slow, *flags)
    custom = {"slo_ttft_ms": 0.001, "slo_tpot_ms": 500.0}
    r = httpx.post(
        srv.url + GEN,
        timeout=HANG_S,
        json={"text": "late", "sampling_params": {"max_new_tokens": 4, "custom_params": custom}},
    )
    assert r.status_code == 429 and r.headers.get("Retry-After"), r.text
    assert ("TTFT deadline" in r.text) is expiry and ("--queue-timeout-s" in r.text) is not expiry
    wait_for(lambda: srv.get_json("/server_info")["requests_in_flight"] == 0, "the request to be freed")


# ---- defects 5 and 6: a hung scheduler, dead processes -----------------------------------------
def test_hung_scheduler_is_detected_its_requests_fail_fast_and_it_is_restarted(server_factory):
    srv = server_factory(*LONG, "--policy", POLICY, "--dp-size", "2", "--time-scale", "0.2", "--watchdog-timeout", "2")
    victim = srv.get_json("/server_info")["internal_states"][1]["pid"]

    async def run():
        async with aiohttp.ClientSession() as s:
            streams = [
                await first_chunk(
                    s, srv.url + GEN, {"text": f"s{i}", "stream": True, "sampling_params": {"max_new_tokens": 20000}}
                )
                for i in range(2)
            ]
            on = [first["meta_info"]["replica"] for _, first in streams]
            os.kill(victim, signal.SIGSTOP)
            hung = streams[on.index(1)][0]
            # traffic keeps coming: requests routed to the hung replica must not count as its heartbeat
            statuses: list[int] = []

            async def keep_sending():
                while not hung.done():
                    async with s.post(
                        srv.url + GEN, json={"text": "more", "sampling_params": {"max_new_tokens": 2}}
                    ) as r:
                        statuses.append(r.status)
                    await asyncio.sleep(0.2)

            sender = asyncio.create_task(keep_sending())
            events = await asyncio.wait_for(hung, HANG_S)
            await asyncio.wait_for(sender, HANG_S)
            assert statuses and set(statuses) <= {200, 503}, statuses
            async with s.post(srv.url + "/abort_request", json={"abort_all": True}) as a:
                assert a.status == 200
            await asyncio.gather(*(t for t, _ in streams))
            return sorted(on), events

    try:
        on, events = asyncio.run(run())
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert on == [0, 1]
    final = events[-2]["meta_info"]["finish_reason"]
    assert final["type"] == "abort" and "replica 1 hung" in final["message"], final
    rep = health(srv)["replicas"][1]
    assert rep["restarts"] == 1 and "hung" in rep["last_failure"]
    wait_for(lambda: health(srv)["replicas"][1]["up"], "replica 1 restarted")
    assert serves(srv) == {0, 1}


def test_killed_router_is_restarted(server_factory):
    srv = server_factory(*LONG, "--policy", POLICY, "--time-scale", "0.05")
    router = srv.get_json("/server_info")["router_pid"]
    os.kill(router, signal.SIGKILL)
    wait_for(lambda: health(srv)["router"]["restarts"] == 1 and health(srv)["router_up"], "router restarted")
    assert srv.get_json("/server_info")["router_pid"] != router
    serves(srv)


def test_hung_router_is_killed_and_restarted(server_factory):
    srv = server_factory(*LONG, "--policy", POLICY, "--time-scale", "0.05", "--watchdog-timeout", "2")
    router = srv.get_json("/server_info")["router_pid"]
    os.kill(router, signal.SIGSTOP)
    try:
        wait_for(lambda: health(srv)["router"]["restarts"] == 1 and health(srv)["router_up"], "router restarted")
    finally:
        try:
            os.kill(router, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert "hung" in srv.log_path.read_text(errors="replace")
    serves(srv)


def test_restart_budget_spent_fails_fast_with_exit_code_1(server_factory):
    srv = server_factory(*LONG, "--policy", POLICY, "--time-scale", "0.05", "--max-restarts", "1")
    first = srv.get_json("/server_info")["router_pid"]
    os.kill(first, signal.SIGKILL)

    def new_router():
        h, pid = health(srv), srv.get_json("/server_info")["router_pid"]
        return (
            h["router_up"] and h["router"]["restarts"] == 1 and pid != first and os.path.exists(f"/proc/{pid}") and pid
        )

    os.kill(wait_for(new_router, "router restarted"), signal.SIGKILL)
    assert srv.proc.wait(HANG_S) == 1
    assert "--max-restarts" in srv.log_path.read_text(errors="replace")
    srv.stop()  # no orphan process, no socket dir


# ---- defect 8: API keys --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(server_factory):
    return server_factory(
        *LONG, "--policy", POLICY, "--time-scale", "0.05", "--api-key", "user-key", "--admin-api-key", "admin-key"
    )


USER = {"Authorization": "Bearer user-key"}
ADMIN = {"Authorization": "Bearer admin-key"}
ROUTES = [
    ("POST", GEN, {"text": "a", "sampling_params": {"max_new_tokens": 2}}),
    ("POST", "/v1/completions", {"model": "m", "prompt": "a", "max_tokens": 2}),
    ("POST", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "a"}], "max_tokens": 2}),
    ("GET", "/v1/models", None),
    ("GET", "/server_info", None),
    ("GET", "/get_model_info", None),
    ("GET", "/metrics", None),
    ("GET", "/health_generate", None),
    ("GET", "/ready", None),
    ("POST", "/abort_request", {"rid": "x"}),
    ("POST", "/flush_cache", None),
    ("GET", "/nope", None),
]


@pytest.mark.parametrize("method,path,body", ROUTES, ids=[r[1] for r in ROUTES])
@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer wrong"}, {"Authorization": "user-key2"}])
def test_every_route_but_health_needs_the_key(keyed, method, path, body, headers):
    r = httpx.request(method, keyed.url + path, json=body, headers=headers, timeout=HANG_S)
    assert r.status_code == 401, (path, r.status_code, r.text)
    assert r.json()["error"]["param"] == "Authorization"


def test_keys_open_their_routes(keyed):
    assert httpx.get(keyed.url + "/health", timeout=HANG_S).status_code == 200
    serves(keyed, 2, headers=USER)
    assert httpx.get(keyed.url + "/v1/models", headers=USER, timeout=HANG_S).status_code == 200
    # admin routes take only the admin key
    assert (
        httpx.post(keyed.url + "/abort_request", json={"abort_all": True}, headers=USER, timeout=HANG_S).status_code
        == 401
    )
    assert (
        httpx.post(keyed.url + "/abort_request", json={"abort_all": True}, headers=ADMIN, timeout=HANG_S).status_code
        == 200
    )
    assert httpx.post(keyed.url + "/flush_cache", headers=ADMIN, timeout=HANG_S).status_code == 200


def test_docs_only_when_asked(keyed, server_factory):
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert httpx.get(keyed.url + path, headers=USER, timeout=HANG_S).status_code == 404
    docs = server_factory(*LONG, "--policy", POLICY, "--time-scale", "0", "--enable-api-docs")
    assert httpx.get(docs.url + "/openapi.json", timeout=HANG_S).status_code == 200


# ---- defect 9: HTTP limits -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def limited(server_factory):
    return server_factory(
        *LONG, "--policy", POLICY, "--time-scale", "0.05", "--max-body-bytes", "4096", "--timeout-keep-alive", "1"
    )


def test_body_over_the_limit_is_413(limited):
    big = {"text": "x" * 5000, "sampling_params": {"max_new_tokens": 2}}
    r = httpx.post(limited.url + GEN, json=big, timeout=HANG_S)
    assert r.status_code == 413 and "--max-body-bytes" in r.text

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b"x" * 1000

    r = httpx.post(limited.url + GEN, content=chunks(), headers={"content-type": "application/json"}, timeout=HANG_S)
    assert r.status_code == 413, r.text
    serves(limited, 1)


def test_oversized_headers_are_refused(limited):
    r = httpx.get(limited.url + "/health", headers={"x-big": "y" * 20000}, timeout=HANG_S)
    assert 400 <= r.status_code < 500
    serves(limited, 1)


def _closed_by_server(sock: socket.socket, trickle: bytes | None) -> bool:
    """Keep the connection open (trickling ``trickle`` if given) until the server closes it."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.send(trickle)
            if sock.recv(1024) == b"":
                return True
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


@pytest.mark.parametrize(
    "start,trickle",
    [
        (b"", None),  # connects, says nothing
        (b"POST /generate HTTP/1.1\r\nHost: x\r\n", b"X-a: b\r\n"),
    ],  # slowloris
    ids=["idle", "slowloris"],
)
def test_idle_and_slowloris_connections_are_closed(limited, start, trickle):
    with socket.create_connection(("127.0.0.1", limited.port), timeout=HANG_S) as sock:
        if start:
            sock.sendall(start)
        assert _closed_by_server(sock, trickle)
    serves(limited, 1)


def test_slow_body_is_408(limited):
    with socket.create_connection(("127.0.0.1", limited.port), timeout=HANG_S) as sock:
        sock.sendall(
            b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, "closed without an answer"
            data += chunk
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
