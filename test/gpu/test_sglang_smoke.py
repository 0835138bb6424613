"""GPU smoke test: SGLang with the sloserve plugin serves tagged requests in their tier.

Skipped without CUDA or SGLang. Uses dummy weights, so only the model's config must be
reachable: set SLOSERVE_GPU_TEST_MODEL to a local model directory on machines without network
(default: Qwen/Qwen2.5-0.5B-Instruct from the Hugging Face hub).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

MODEL = os.environ.get("SLOSERVE_GPU_TEST_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
STARTUP_S = float(os.environ.get("SLOSERVE_GPU_TEST_STARTUP_S", "600"))


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if not _cuda():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("sglang", reason="needs SGLang installed with its CUDA dependencies")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("sglang") / "server.log"
    cmd = [sys.executable, "-m", "sloserve.sglang.launch", "--policy", "slos-serve", "--model-path", MODEL,
           "--load-format", "dummy", "--port", str(port), "--mem-fraction-static", "0.5", "--disable-cuda-graph"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + STARTUP_S
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(2)
        else:
            pytest.fail(f"server not healthy after {STARTUP_S:.0f}s:\n{log.read_text()[-3000:]}")
        yield base
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def _generate(base: str, custom: dict) -> tuple[int, dict | str]:
    return _post(base + "/generate", {"text": "Hello, my name is", "sampling_params": {
        "max_new_tokens": 16, "temperature": 0, "ignore_eos": True, "custom_params": custom}})


def test_tagged_requests_are_served_in_their_tier(server):
    status, slo = _generate(server, {"slo_ttft_ms": 5000.0, "slo_tpot_ms": 200.0, "slo_arrival_s": time.time()})
    assert status == 200, slo
    assert slo["meta_info"]["slo_tier"] == "slo" and slo["meta_info"]["completion_tokens"] == 16
    assert slo["meta_info"]["slo_ttft_deadline_s"] > 0
    status, be = _generate(server, {"slo_best_effort": True})
    assert status == 200, be
    assert be["meta_info"]["slo_tier"] == "best_effort"


def test_bad_slo_key_is_rejected_with_its_name(server):
    status, body = _generate(server, {"slo_tpot_ms": "fast"})
    assert status == 400 and "slo_tpot_ms" in str(body)
