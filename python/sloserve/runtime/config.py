"""Configuration of the embedded serving runtime: one frozen dataclass, the CLI generated from it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Sequence

from sloserve.cli_dataclass import add_dataclass_arguments, dataclass_values
from sloserve.core.options import parse_kv


@dataclass(frozen=True)
class ServerConfig:
    host: str = field(default="127.0.0.1", metadata={"help": "address the HTTP server binds"})
    port: int = field(default=30000, metadata={"help": "HTTP port"})
    model: str = field(default="opt-13b-tp2-a100", metadata={"help": "batch-time preset (sloserve.perf.preset_names())"})
    served_model_name: str | None = field(default=None, metadata={"help": "model name reported by the API (default: --model)"})
    backend: str = field(default="auto", metadata={"help": "embedded | sglang | auto (sglang when importable and CUDA is present)",
                                                       "choices": ("embedded", "sglang", "auto")})
    policy: str = field(default="slos-serve", metadata={"help": "scheduling policy (registered name)"})
    policy_opt: tuple[str, ...] = field(default=(), metadata={"help": "policy option key=value (repeatable)", "repeat": True})
    router: str = field(default="round-robin", metadata={"help": "routing policy across --dp-size replicas (registered name)"})
    router_opt: tuple[str, ...] = field(default=(), metadata={"help": "router option key=value (repeatable)", "repeat": True})
    dp_size: int = field(default=1, metadata={"help": "number of scheduler processes (data-parallel replicas)"})
    kv_tokens: int = field(default=97648, metadata={"help": "KV-cache capacity per replica, in tokens"})
    block_size: int = field(default=16, metadata={"help": "KV block size in tokens"})
    max_seq_len: int | None = field(default=None, metadata={"help": "context length (default: --kv-tokens)"})
    time_scale: float = field(default=1.0, metadata={"help": "multiplies simulated step times; 0 = zero-time engine"})
    tokenizer_path: str | None = field(default=None, metadata={"help": "local Hugging Face tokenizer (dir or tokenizer.json); default: built-in byte tokenizer"})
    reject_on_overload: bool = field(default=False, metadata={"help": "answer 429 instead of serving best effort when the policy does not admit"})
    default_max_new_tokens: int = field(default=128, metadata={"help": "max_new_tokens when a request gives none (SGLang's default)"})
    seed: int = field(default=0, metadata={"help": "seed for synthetic tokens and engine randomness"})
    drain_timeout_s: float = field(default=5.0, metadata={"help": "on SIGTERM, seconds to let in-flight requests finish before aborting them"})
    startup_timeout_s: float = field(default=60.0, metadata={"help": "seconds to wait for the router and schedulers to come up"})
    log_level: str = field(default="info", metadata={"help": "logging level"})

    def __post_init__(self) -> None:
        if self.dp_size < 1:
            raise ValueError("--dp-size must be >= 1")
        if self.kv_tokens < self.block_size or self.block_size < 1:
            raise ValueError("--kv-tokens must be >= --block-size >= 1")
        if self.time_scale < 0:
            raise ValueError("--time-scale must be >= 0")
        if self.max_seq_len is not None and self.max_seq_len < 2:
            raise ValueError("--max-seq-len must be >= 2")
        if self.backend not in ("embedded", "sglang", "auto"):
            raise ValueError("--backend must be embedded, sglang or auto")

    @property
    def context_len(self) -> int:
        return self.max_seq_len if self.max_seq_len is not None else self.kv_tokens

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model

    def policy_options(self) -> dict[str, Any]:
        return parse_kv(self.policy_opt, "--policy-opt")

    def router_options(self) -> dict[str, Any]:
        return parse_kv(self.router_opt, "--router-opt")


def simulator_only_policies() -> list[str]:
    """Registered policy names that one replica cannot serve alone: DistServe's prefill and
    decode roles, and ``distserve`` (the pair, with KV hand-off, only in the simulator)."""
    from sloserve.policies.distserve import DISAGGREGATED  # noqa: PLC0415

    return sorted({*DISAGGREGATED, *(role for roles in DISAGGREGATED.values() for role in roles)})


def servable_policies() -> list[str]:
    """The policies the embedded server (and the SGLang plugin) run: one scheduler per replica."""
    from sloserve.core.scheduler import SCHEDULERS  # noqa: PLC0415

    return [name for name in SCHEDULERS.names() if name not in simulator_only_policies()]


def build_parser(cls: type = ServerConfig) -> argparse.ArgumentParser:
    """An argparse parser generated from the dataclass fields and their help metadata."""
    parser = argparse.ArgumentParser(prog="python -m sloserve.launch_server",
                                     description="sloserve server (SGLang-compatible API, SLO-aware scheduling)")
    return add_dataclass_arguments(parser, cls)


def config_from_args(argv: Sequence[str] | None = None) -> ServerConfig:
    return ServerConfig(**dataclass_values(build_parser().parse_args(argv), ServerConfig))
