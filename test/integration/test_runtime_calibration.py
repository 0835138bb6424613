"""Online calibration and warm-up in the embedded runtime (runtime/step_timing.py, warmup.py).

The engine is made deterministically slower than the planner's model with ``--time-scale 1.5``:
the planner plans with the unscaled model, the engine sleeps 1.5x the model's time, so every
observed/predicted ratio is at least 1.5 whatever the machine's load. Nothing here asserts on
wall-clock durations; the tests wait on the state /server_info reports.
"""

from __future__ import annotations

import time

import httpx

SLOWER = ("--model", "opt-13b-tp2-a100", "--policy", "slos-serve", "--time-scale", "1.5")
WAIT_S = 60.0


def replica_state(server) -> dict:
    return server.get_json("/server_info")["internal_states"][0]


def wait_for(server, predicate, what: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        state = replica_state(server)
        if predicate(state):
            return state
        assert time.monotonic() < deadline, f"{what} not reached: {state}\n{server.log_tail()}"
        time.sleep(0.1)


def serve_a_few(server, n: int = 3) -> None:
    for i in range(n):
        r = httpx.post(
            server.url + "/generate",
            timeout=60,
            json={"text": f"calibrate {i} " * 8, "sampling_params": {"max_new_tokens": 8}},
        )
        assert r.status_code == 200, r.text


def test_warmup_measures_the_slower_engine_before_ready(server_factory):
    server = server_factory(*SLOWER)
    state = wait_for(server, lambda s: "warmup_steps" in s, "stats")
    assert state["warmup_steps"] >= 8 and state["num_requests"] == 0  # warm-up requests are gone
    assert state["calibration_enabled"] is True
    assert state["calibration_scale"] >= 1.49  # learned before the first request
    assert state["step_ratio_p50"] >= 1.49


def test_correction_moves_with_live_steps(server_factory):
    server = server_factory(*SLOWER, "--skip-server-warmup")
    state = wait_for(server, lambda s: "warmup_steps" in s, "stats")
    assert state["warmup_steps"] == 0 and state["steps_timed"] == 0 and state["calibration_scale"] == 1.0
    serve_a_few(server)
    state = wait_for(server, lambda s: s["steps_timed"] >= 8 and s["num_requests"] == 0, "8 timed steps")
    assert state["calibration_scale"] >= 1.49 and state["step_ratio_p50"] >= 1.49


def test_calibration_off_keeps_the_model(server_factory):
    server = server_factory(*SLOWER, "--disable-online-calibration")
    serve_a_few(server)
    state = wait_for(server, lambda s: s.get("steps_timed", 0) >= 8 and s["num_requests"] == 0, "8 timed steps")
    assert state["calibration_enabled"] is False and state["calibration_scale"] == 1.0
    assert state["step_ratio_p50"] >= 1.49  # the engine is slower; the planner is not told
    assert server.get_json("/server_info")["internal_states"][0]["reasons"].get("calibrated", 0) == 0
