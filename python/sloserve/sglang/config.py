"""Configuration of the SGLang adapter, and how it reaches every SGLang process.

SGLang spawns its scheduler, detokenizer and data-parallel controller processes itself, so the
sloserve side cannot be handed a Python object: the launcher serialises this dataclass into an
environment variable that every spawned process inherits. The plugin does nothing unless
``SLOSERVE_SGLANG_PLUGIN=1`` is set, so installing sloserve never changes a plain SGLang server.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

ENV_ENABLE = "SLOSERVE_SGLANG_PLUGIN"
ENV_CONFIG = "SLOSERVE_SGLANG_CONFIG"


@dataclass(frozen=True)
class SglangAdapterConfig:
    policy: str = field(
        default="slos-serve", metadata={"help": "sloserve scheduling policy run as SGLang's shadow planner"}
    )
    policy_options: tuple[tuple[str, Any], ...] = field(default=(), metadata={"help": "policy options (key, value)"})
    router: str = field(default="round-robin", metadata={"help": "sloserve routing policy used by the DP controller"})
    router_options: tuple[tuple[str, Any], ...] = field(default=(), metadata={"help": "router options (key, value)"})
    perf_model: str = field(
        default="llama-3-8b-h100", metadata={"help": "batch-time preset (or fitted .json) for planning"}
    )
    kv_capacity_tokens: int = field(
        default=0, metadata={"help": "KV tokens the planner assumes; 0 = SGLang's pool size"}
    )
    block_size_tokens: int = field(default=16, metadata={"help": "KV accounting block size of the shadow planner"})
    default_tpot_ms: float = field(default=100.0, metadata={"help": "TPOT SLO of requests that name none"})
    default_ttft_slowdown: float = field(default=5.0, metadata={"help": "TTFT slowdown SLO of requests that name none"})
    spec_slo_aware: bool = field(default=True, metadata={"help": "replace SGLang's adaptive speculative step selector"})
    seed: int = field(default=0, metadata={"help": "seed for the router's randomness"})
    best_effort_expiry: bool = field(
        default=True,
        metadata={
            "help": "end a request the plan did not admit with 429 once its TTFT deadline passes without a "
            "first token (its SLO is lost): overload sheds work instead of queueing it"
        },
    )

    def __post_init__(self) -> None:
        if self.kv_capacity_tokens < 0 or self.block_size_tokens < 1:
            raise ValueError("kv_capacity_tokens must be >= 0 and block_size_tokens >= 1")
        if self.default_tpot_ms <= 0 or self.default_ttft_slowdown <= 0:
            raise ValueError("default SLOs must be positive")

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["policy_options"] = dict(self.policy_options)
        data["router_options"] = dict(self.router_options)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SglangAdapterConfig":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown sloserve SGLang config key(s): {', '.join(unknown)}")
        for key in ("policy_options", "router_options"):
            data[key] = tuple(sorted(dict(data.get(key) or {}).items()))
        return cls(**data)


def plugin_enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get(ENV_ENABLE, "").strip().lower() in ("1", "true", "yes", "on")


def load_config(environ: Mapping[str, str] | None = None) -> SglangAdapterConfig:
    """The adapter config this process was started with (defaults when none was passed)."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_CONFIG)
    return SglangAdapterConfig.from_json(text) if text else SglangAdapterConfig()


def export_env(config: SglangAdapterConfig, environ: dict | None = None) -> dict:
    """Enable the plugin with ``config`` in ``environ`` (os.environ by default: children inherit)."""
    env = os.environ if environ is None else environ
    env[ENV_ENABLE] = "1"
    env[ENV_CONFIG] = config.to_json()
    return env
