"""The server's log: one structured line per ended request (finished, 429, abort), periodic
stats lines, JSON with --log-format json, and "ready" only once the port is bound."""

from __future__ import annotations

import json
import time

import httpx

HANG_S = 120  # a hang guard only: every wait polls the log for a line that must come


def json_lines(server) -> list[dict]:
    text = server.log_path.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def wait_line(server, pred, what: str) -> dict:
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        hit = next((doc for doc in json_lines(server) if pred(doc)), None)
        if hit is not None:
            return hit
        time.sleep(0.05)
    raise AssertionError(f"no log line for {what}:\n{server.log_tail()}")


def test_json_request_lines_for_finished_rejected_and_aborted(server_factory):
    srv = server_factory(
        "--policy",
        "slos-serve",
        "--reject-on-overload",
        "--time-scale",
        "0.05",
        "--log-format",
        "json",
        "--log-interval-s",
        "0.2",
    )
    ok = httpx.post(
        srv.url + "/generate",
        timeout=HANG_S,
        json={"text": "hello", "rid": "log-ok", "sampling_params": {"max_new_tokens": 8}},
    )
    assert ok.status_code == 200
    refused = httpx.post(
        srv.url + "/generate",
        timeout=HANG_S,
        json={
            "text": "hello",
            "rid": "log-429",
            "sampling_params": {"max_new_tokens": 8, "custom_params": {"slo_ttft_ms": 0.001}},
        },
    )
    assert refused.status_code == 429
    with httpx.stream(
        "POST",
        srv.url + "/generate",
        timeout=HANG_S,
        json={"text": "abort", "rid": "log-abort", "stream": True, "sampling_params": {"max_new_tokens": 1500}},
    ) as r:
        lines = r.iter_lines()  # kept referenced: a closed line iterator closes the stream
        next(line for line in lines if line.startswith("data: "))  # in flight now
        assert httpx.post(srv.url + "/abort_request", json={"rid": "log-abort"}, timeout=HANG_S).status_code == 200

    done = wait_line(srv, lambda d: d.get("rid") == "log-ok", "the finished request")
    assert done["logger"] == "sloserve.requests" and done["event"] == "finished" and done["verdict"] == "met"
    assert done["tier"] == "slo" and done["admission"] == "admitted" and done["completion_tokens"] == 8
    assert done["ttft_ms"] > 0 and done["tpot_ms"] > 0 and done["status"] == 200
    rejected = wait_line(srv, lambda d: d.get("rid") == "log-429", "the 429")
    assert rejected["event"] == "rejected" and rejected["status"] == 429 and rejected["verdict"] == "n/a"
    assert "not admitted" in rejected["detail"]
    aborted = wait_line(srv, lambda d: d.get("rid") == "log-abort", "the aborted request")
    assert aborted["event"] == "aborted" and "abort_request" in aborted["detail"]
    stats = wait_line(srv, lambda d: d.get("event") == "stats" and d["ended"] > 0, "a stats line")
    assert stats["logger"] == "sloserve.stats" and {"in_flight", "kv_usage", "gen_tokens_per_s"} <= set(stats)
    # every line of the front is JSON (uvicorn's included)
    front = [line for line in srv.log_path.read_text().splitlines() if not line.startswith("[")]
    assert front and all(line.startswith("{") for line in front), front[:3]


def test_ready_is_logged_after_the_port_is_bound(server_factory):
    srv = server_factory("--policy", "fcfs", "--time-scale", "0")
    lines = srv.log_path.read_text().splitlines()
    bound = next(i for i, line in enumerate(lines) if "Uvicorn running on" in line)
    ready = [i for i, line in enumerate(lines) if "ready" in line.lower()]
    assert ready and all(i > bound for i in ready), lines
    assert f"ready: serving http://127.0.0.1:{srv.port}" in lines[ready[0]]
