"""Helpers for the end-to-end tests of the real SGLang 0.5.23 server (fixtures: conftest.py).

A unique module name (not ``conftest``): several conftest.py files live in this test tree."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sloserve.core.plan import ReplicaSummary
from sloserve.launch_server import cuda_available
from sloserve.sglang.process import ServerStartError, SglangProcess, start
from sloserve.sglang.summaries import read_summaries as read_replica_summaries

STARTUP_S = float(os.environ.get("SLOSERVE_E2E_STARTUP_S", "420"))  # cold starts on a busy 2-core machine
REQUEST_S = float(os.environ.get("SLOSERVE_E2E_REQUEST_S", "120"))
SMALL_KV_TOKENS = 512


def missing_packages() -> str | None:
    for mod in ("sglang", "torch", "transformers", "tokenizers"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed: run scripts/install_sglang_cpu.sh"
    return None


def cuda() -> bool:
    return cuda_available()


def device() -> str:
    return "cuda" if cuda() else "cpu"


def device_args() -> list[str]:
    return ["--mem-fraction-static", "0.3", "--disable-cuda-graph"] if cuda() else []


# name -> (with the sloserve plugin?, arguments beyond model, port and device, environment).
CONFIGS: dict[str, tuple[bool, list[str], dict[str, str]]] = {
    "plain": (False, ["--max-total-tokens", "32768"], {}),
    "plugin": (True, ["--policy", "slos-serve", "--max-total-tokens", "32768"], {}),
    # A pool far too small for the load, and SGLang told to expect short outputs (it admits
    # on 16 new tokens a request): it over-admits best effort, runs short during decode and must
    # retract. The planner reserves every SLO-tier request's max_new_tokens, so only best
    # effort may be retracted; best effort never yields to the SLO tier's reservations here
    # (best_effort_yield_kv=1.0), so whether it runs does not hang on timing.
    "small_kv": (
        True,
        f"--policy slos-serve --max-total-tokens {SMALL_KV_TOKENS} --chunked-prefill-size 128 "
        "--schedule-conservativeness 0.01 --policy-opt best_effort_yield_kv=1.0".split(),
        {"SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION": "16"},
    ),
    "dp2": (True, "--policy slos-serve --dp-size 2 --router slo-sequential --max-total-tokens 16384".split(), {}),
}


@dataclass
class SglangServer:
    """A started server with request helpers (``SglangProcess`` does the process side)."""

    handle: SglangProcess

    @property
    def url(self) -> str:
        return self.handle.url

    @property
    def summary_dir(self) -> Path:
        return self.handle.summary_dir

    def post(self, path: str, body: dict, timeout: float = REQUEST_S) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=timeout)


class ServerSet:
    """Starts every configuration on first use (overlapping cold starts), stops them all."""

    def __init__(self, model_dir: Path, log_dir: Path) -> None:
        self.model_dir, self.log_dir = model_dir, log_dir
        self.servers: dict[str, SglangProcess] = {}

    def get(self, name: str) -> SglangServer:
        if not self.servers:
            for config, (plugin, extra, env) in CONFIGS.items():
                self.servers[config] = start(
                    config,
                    self.model_dir,
                    self.log_dir,
                    [*device_args(), *extra],
                    plugin=plugin,
                    device=device(),
                    env_overrides=env,
                )
        handle = self.servers[name]
        try:
            handle.wait_ready(STARTUP_S)
        except ServerStartError as exc:
            pytest.fail(str(exc))
        assert handle.alive(), f"{name} server died:\n{handle.log_tail()}"
        return SglangServer(handle)

    def stop(self) -> None:
        for handle in self.servers.values():
            handle.stop()


def generate(
    server: SglangServer,
    text: str = "Hello, my name is",
    max_new_tokens: int = 8,
    custom: dict | None = None,
    timeout: float = REQUEST_S,
    **sampling,
) -> httpx.Response:
    params = {"max_new_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True, **sampling}
    if custom is not None:
        params["custom_params"] = custom
    return server.post("/generate", {"text": text, "sampling_params": params}, timeout=timeout)


def read_summaries(server: SglangServer) -> dict[int, ReplicaSummary]:
    return read_replica_summaries(server.summary_dir)
