"""A real gateway in front of sloserve: SGLang's router (``sglang-router`` 0.3.2, the Rust ``smg``
binary behind ``python -m sglang_router.launch_router``) over two embedded-runtime servers.

What is checked is what the router really does (docs/routing.md, "Putting a gateway in front"):

* it registers sloserve servers (``/health``, ``/server_info``, ``/model_info``) and serves
  ``/generate``, ``/v1/completions`` and ``/v1/chat/completions``, streaming and not, through them,
  reaching both servers (round_robin; counted by each server's ``sglang:num_requests_total``);
* SLO keys: top-level ``custom_params`` survive on ``/v1/completions``; the router rebuilds chat and
  ``/generate`` bodies from its own schema and drops ``custom_params`` there, so chat carries them
  in OpenAI ``metadata`` (strings, read by sloserve) and ``/generate`` loses them (the server's
  default SLO applies: asserted, so a router release that keeps them shows up here);
* ``power_of_two`` polls sloserve's ``GET /get_load`` (0.3.2 does not read ``/v1/loads``) and sends
  everything to the server that is not loaded;
* a server that is killed fails its health checks, is marked unhealthy and routed around; the
  requests sent before that are retried on connection errors (the router's own policy).

Waits are on state (router ``/workers``, the router's log, per-server counters), never on time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from gateway_probe import samples
from sloserve.runtime.transport import free_port

pytest.importorskip("sglang_router.sglang_router_rs", reason="the real gateway is optional: pip install -e .[gateway]")

pytestmark = pytest.mark.slow

MODEL = "opt-13b-tp2-a100"
HANG_S = 120.0  # a hang guard only: every wait below ends on an event long before this
SLO_TPOT_MS = 40.0  # sent on every tagged request; the server's default is different
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SELECTION = re.compile(r"Power-of-two selection: (\S+)=(-?\d+) vs (\S+)=(-?\d+) -> selected (\S+)")


def _die_with_parent() -> None:
    """In the router child: SIGTERM it if pytest itself dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Router:
    """``python -m sglang_router.launch_router`` as a subprocess in its own process group."""

    def __init__(self, policy: str, urls: list[str], log_path: Path) -> None:
        self.port, self.log_path = free_port(), log_path
        cmd = [
            sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(self.port),
            "--policy", policy, "--worker-urls", *urls,
            # its Prometheus exporter binds 0.0.0.0:29000 by default: one per router here
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
            # the load monitor's poll interval is the startup check interval in 0.3.2 (default 30 s)
            "--worker-startup-check-interval", "1", "--health-check-interval-secs", "1",
            "--shutdown-grace-period-secs", "1", "--log-level", "debug",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
            )
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return ANSI.sub("", self.log_path.read_text(errors="replace"))

    def workers(self) -> dict[str, bool]:
        """``{worker url: is_healthy}`` from the router's ``/workers``."""
        body = httpx.get(self.url + "/workers", timeout=10).json()
        return {w["url"]: w["is_healthy"] for w in body["workers"]}

    def wait_for(self, what: str, cond) -> None:
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"router exited with {self.proc.returncode}:\n{self.log()[-4000:]}"
            try:
                if cond():
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"router: {what} never happened\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)


@pytest.fixture(scope="module")
def servers(server_factory):
    args = ("--model", MODEL, "--policy", "slos-serve", "--max-seq-len", "8192")
    return [server_factory(*args), server_factory(*args)]


@pytest.fixture(scope="module")
def start_router(servers, tmp_path_factory):
    routers: list[Router] = []
    log_dir = tmp_path_factory.mktemp("router-logs")

    def start(policy: str) -> Router:
        router = Router(policy, [s.url for s in servers], log_dir / f"router-{len(routers)}-{policy}.log")
        routers.append(router)
        urls = {s.url for s in servers}
        router.wait_for("both workers registered healthy", lambda: router.workers() == dict.fromkeys(urls, True))
        return router

    yield start
    for router in routers:
        router.stop()


def served(server) -> float:
    """Requests this server has finished (both ``is_streaming`` series)."""
    return sum(samples(server, "sglang:num_requests_total").values())


def which_server(servers, before: list[float]) -> int:
    """The index of the one server whose finished count grew since ``before``."""
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        grown = [i for i, s in enumerate(servers) if served(s) > before[i]]
        if grown:
            assert len(grown) == 1, grown
            return grown[0]
        time.sleep(0.05)
    raise AssertionError("no server counted the request")


def generate_body(stream: bool) -> dict:
    custom = {"slo_ttft_ms": 2000, "slo_tpot_ms": SLO_TPOT_MS}
    return {"text": "hello there", "stream": stream, "sampling_params": {"max_new_tokens": 8, "custom_params": custom}}


def completion_body(stream: bool) -> dict:
    custom = {"slo_ttft_ms": 2000, "slo_tpot_ms": SLO_TPOT_MS}
    return {"model": MODEL, "prompt": "hello there", "max_tokens": 8, "stream": stream, "custom_params": custom}


def chat_body(stream: bool) -> dict:
    # OpenAI metadata values are strings; the router refuses numbers there (400)
    meta = {"slo_ttft_ms": "2000", "slo_tpot_ms": str(SLO_TPOT_MS), "origin": "test"}
    messages = [{"role": "user", "content": "hi"}]
    return {"model": MODEL, "messages": messages, "max_tokens": 8, "stream": stream, "metadata": meta}


ROUTES = {"/generate": generate_body, "/v1/completions": completion_body, "/v1/chat/completions": chat_body}


def post(url: str, path: str, body: dict) -> tuple[int, list[dict] | dict]:
    """Status and the JSON answer, or the list of SSE events (up to ``[DONE]``) when streaming."""
    if not body.get("stream"):
        resp = httpx.post(url + path, json=body, timeout=HANG_S)
        return resp.status_code, resp.json()
    events = []
    with httpx.stream("POST", url + path, json=body, timeout=HANG_S) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
        return resp.status_code, events


def slo_tpot(path: str, answer) -> float | None:
    if isinstance(answer, list):  # /generate's chunks carry meta_info; the OpenAI chunks do not
        return answer[-1]["meta_info"]["slo_tpot_ms"] if path == "/generate" else None
    return answer["meta_info"]["slo_tpot_ms"]


def streamed_text(path: str, events: list[dict]) -> str:
    if path == "/generate":
        return events[-1]["text"]  # cumulative
    return "".join(c.get("text") or c.get("delta", {}).get("content") or "" for e in events for c in e["choices"])


def test_router_serves_all_routes_on_both_replicas(servers, start_router):
    router = start_router("round_robin")
    landed: dict[str, set[int]] = {}
    for path, make in ROUTES.items():
        for stream in (False, True):
            before = [served(s) for s in servers]
            status, answer = post(router.url, path, make(stream))
            assert status == 200 and answer, (path, stream, answer)
            landed.setdefault(path, set()).add(which_server(servers, before))
            tpot = slo_tpot(path, answer)
            if path == "/generate":
                # the router rebuilds /generate from its own schema: sampling_params.custom_params is gone
                assert tpot is not None and tpot != SLO_TPOT_MS, (path, stream, tpot)
            elif tpot is not None:
                assert tpot == SLO_TPOT_MS, (path, stream, tpot)
            if stream:
                assert streamed_text(path, answer), (path, answer)
    # round_robin alternates: each route's two requests went to different servers
    assert landed == dict.fromkeys(ROUTES, {0, 1}), landed
    # the same /generate body sent to a server directly keeps its SLO
    status, answer = post(servers[0].url, "/generate", generate_body(False))
    assert status == 200 and answer["meta_info"]["slo_tpot_ms"] == SLO_TPOT_MS


def test_power_of_two_reads_get_load(servers, start_router):
    router = start_router("power_of_two")
    busy, idle = servers
    rids = [f"busy-{uuid.uuid4().hex}" for _ in range(2)]
    body = {
        "input_ids": [i % 200 + 1 for i in range(900)],
        "sampling_params": {"max_new_tokens": 6000, "ignore_eos": True},
        "stream": True,
    }

    def hold(rid: str) -> None:  # a long request straight to the busy server, read until aborted
        with httpx.stream("POST", busy.url + "/generate", json={**body, "rid": rid}, timeout=HANG_S * 5) as resp:
            for _ in resp.iter_lines():
                pass

    threads = [threading.Thread(target=hold, args=(rid,), daemon=True) for rid in rids]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + HANG_S
        while sum(x["num_tokens"] for x in httpx.get(busy.url + "/get_load", timeout=10).json()) < 1800:
            assert time.monotonic() < deadline, "the busy server never reported its load"
            time.sleep(0.05)
        # route single requests until a pick (logged at debug level) shows the busy server's load:
        # the router has polled /get_load since the busy server filled up

        def router_saw_load() -> bool:
            status, _ = post(router.url, "/v1/completions", completion_body(False))
            assert status == 200
            picks = [dict(((m[1], int(m[2])), (m[3], int(m[4])))) for m in SELECTION.finditer(router.log())]
            return any(pick[busy.url] > 0 for pick in picks)

        router.wait_for("a power_of_two pick that saw the busy server's load", router_saw_load)
        # every pick compares both servers; from now on the busy one's polled load is higher
        picks_before = len(SELECTION.findall(router.log()))
        for _ in range(8):
            for path, make in ROUTES.items():
                before = [served(s) for s in servers]
                status, _ = post(router.url, path, make(False))
                assert status == 200 and which_server(servers, before) == 1, path
        picks = SELECTION.findall(router.log())[picks_before:]
        assert len(picks) >= 24, picks
        for url1, load1, url2, load2, selected in picks:
            loads = {url1: int(load1), url2: int(load2)}
            assert loads[busy.url] > loads[idle.url] >= 0, picks  # both polled from /get_load (no -1)
            assert selected == idle.url, picks
    finally:
        for rid in rids:
            httpx.post(busy.url + "/abort_request", json={"rid": rid}, timeout=10)
        for t in threads:
            t.join(HANG_S)


def test_killed_replica_is_routed_around(servers, start_router):
    router = start_router("power_of_two")
    alive, victim = servers
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(HANG_S)
    deadline = time.monotonic() + HANG_S
    while True:  # the rest of its process group goes with it
        try:
            os.killpg(victim.proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    if victim.ipc_dir:
        shutil.rmtree(victim.ipc_dir, ignore_errors=True)  # SIGKILL leaves its sockets behind
    # Before the router notices, it retries a failed connection (5 attempts, re-picking each time),
    # but power_of_two keeps picking the dead server: once its load poll fails its cached load is
    # -1, below any live one. A request whose 5 attempts all fail answers 500; the dead server's
    # circuit breaker opens after 10 consecutive failures (or its health check fails 3 times), so
    # at most 10 / 5 = 2 requests fail, and the rest are served.
    early = [post(router.url, "/v1/completions", completion_body(False)) for _ in range(6)]
    failed = [answer for code, answer in early if code != 200]
    assert len(failed) <= 2, early
    assert all(
        a["error"]["code"] == "call_upstream_request_error" and victim.url in a["error"]["message"] for a in failed
    )
    print(f"\nright after the kill: {[code for code, _ in early]}")
    router.wait_for("the killed server marked unhealthy", lambda: router.workers()[victim.url] is False)
    before = served(alive)
    for path, make in ROUTES.items():
        for stream in (False, True):
            status, answer = post(router.url, path, make(stream))
            assert status == 200 and answer, (path, stream, answer)
    deadline = time.monotonic() + HANG_S
    while served(alive) < before + 2 * len(ROUTES):
        assert time.monotonic() < deadline, (served(alive), before)
        time.sleep(0.05)
    assert router.workers() == {alive.url: True, victim.url: False}
