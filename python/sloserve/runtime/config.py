"""Configuration of the embedded serving runtime: one frozen dataclass, the CLI generated from it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Sequence

from sloserve.cli_dataclass import OneLineParser, add_dataclass_arguments, dataclass_values
from sloserve.core.options import parse_kv
from sloserve.perf.context import model_context_tokens
from sloserve.runtime.reqlog import LOG_FORMATS, LOG_LEVELS


@dataclass(frozen=True)
class ServerConfig:
    host: str = field(default="127.0.0.1", metadata={"help": "address the HTTP server binds"})
    port: int = field(default=30000, metadata={"help": "HTTP port"})
    model: str = field(
        default="opt-13b-tp2-a100",
        metadata={
            "help": "batch-time model preset that simulates the engine (--model-path, SGLang's name, is the same flag)",
            "aliases": ("--model-path",),
            "names": lambda: _names("model"),
        },
    )
    served_model_name: str | None = field(
        default=None, metadata={"help": "model name reported by the API (default: --model)"}
    )
    backend: str = field(
        default="auto",
        metadata={
            "help": "embedded | sglang | auto (sglang when importable and CUDA is present)",
            "choices": ("embedded", "sglang", "auto"),
        },
    )
    policy: str = field(default="slos-serve", metadata={"help": "scheduling policy", "names": lambda: _names("policy")})
    policy_opt: tuple[str, ...] = field(
        default=(), metadata={"help": "policy option key=value (repeatable)", "repeat": True}
    )
    router: str = field(
        default="round-robin",
        metadata={"help": "routing policy across --dp-size replicas", "names": lambda: _names("router")},
    )
    router_opt: tuple[str, ...] = field(
        default=(), metadata={"help": "router option key=value (repeatable)", "repeat": True}
    )
    dp_size: int = field(default=1, metadata={"help": "number of scheduler processes (data-parallel replicas)"})
    ray_address: str | None = field(
        default=None,
        metadata={
            "help": "run each replica's scheduler as a Ray actor on this cluster (host:port, 'auto', or 'local' for a "
            "new one-machine cluster); the front, router and admission stay here (pip install -e .[ray]; "
            "docs/routing.md, 'Multi-node')"
        },
    )
    ray_replica_cpus: float = field(default=1.0, metadata={"help": "CPUs Ray reserves for each replica's actor"})
    ray_host: str | None = field(
        default=None,
        metadata={"help": "address the front and router listen on for the replicas (default: this node's Ray IP)"},
    )
    kv_tokens: int = field(default=97648, metadata={"help": "KV-cache capacity per replica, in tokens"})
    block_size: int = field(default=16, metadata={"help": "KV block size in tokens"})
    max_seq_len: int | None = field(
        default=None,
        metadata={
            "help": "context length in tokens (default: the preset model's, e.g. 2048 for OPT, capped at --kv-tokens)"
        },
    )
    time_scale: float = field(default=1.0, metadata={"help": "multiplies simulated step times; 0 = zero-time engine"})
    disable_online_calibration: bool = field(
        default=False,
        metadata={
            "help": "do not correct the planner's batch-time model by the wall time steps really take (the policy's "
            "calibrate option off; docs/perf_model.md, 'Closing the loop'); the correction is calibration_scale "
            "in /server_info's internal_states"
        },
    )
    skip_server_warmup: bool = field(
        default=False,
        metadata={"help": "report ready without first running a few synthetic steps per replica (SGLang's name)"},
    )
    tokenizer_path: str | None = field(
        default=None,
        metadata={"help": "local Hugging Face tokenizer (dir or tokenizer.json); default: built-in byte tokenizer"},
    )
    reject_on_overload: bool = field(
        default=False, metadata={"help": "answer 429 instead of serving best effort when the policy does not admit"}
    )
    default_max_new_tokens: int = field(
        default=128, metadata={"help": "max_new_tokens when a request gives none (SGLang's default)"}
    )
    seed: int = field(default=0, metadata={"help": "seed for synthetic tokens and engine randomness"})
    drain_timeout_s: float = field(
        default=5.0, metadata={"help": "on SIGTERM, seconds to let in-flight requests finish before aborting them"}
    )
    startup_timeout_s: float = field(
        default=60.0, metadata={"help": "seconds to wait for the router and schedulers to come up"}
    )
    log_level: str = field(default="info", metadata={"help": f"logging level: {', '.join(LOG_LEVELS)}"})
    log_format: str = field(
        default="text", metadata={"help": "log lines as text or one JSON object each", "choices": LOG_FORMATS}
    )
    log_interval_s: float = field(
        default=10.0, metadata={"help": "seconds between throughput/queue log lines while serving (0: none)"}
    )
    # ---- limits and security (docs/runtime.md, "Security and limits") ----
    max_queued_requests: int = field(
        default=1024,
        metadata={
            "help": "most requests waiting for their first token (all replicas); past it new requests get 429 with "
            "Retry-After; 0 = unbounded (SGLang's name; its default is unbounded)"
        },
    )
    queue_timeout_s: float = field(
        default=60.0,
        metadata={
            "help": "a request with no first token after this many seconds (or its TTFT SLO, if longer) ends with "
            "429; 0 = never (SGLang: SGLANG_REQ_WAITING_TIMEOUT)"
        },
    )
    best_effort_expiry: bool = field(
        default=True,
        metadata={
            "help": "a request the plan did not admit, whose client set its TTFT SLO, ends with 429 once that "
            "deadline passes without a first token (as the SGLang plugin does; docs/sglang.md, 'Overload')",
            "negatable": True,
        },
    )
    watchdog_timeout: float = field(
        default=20.0,
        metadata={
            "help": "seconds a scheduler or router process may go without a heartbeat before it is declared hung, "
            "killed and restarted (its requests fail with 503); SGLang's name (its default 300 s, then it exits)"
        },
    )
    api_key: str | None = field(
        default=None,
        metadata={"help": "require 'Authorization: Bearer KEY' on every route but /health (401 otherwise)"},
    )
    admin_api_key: str | None = field(
        default=None,
        metadata={"help": "key for /abort_request and /flush_cache; when set, those routes accept only this key"},
    )
    enable_api_docs: bool = field(default=False, metadata={"help": "serve /docs and /openapi.json"})
    max_body_bytes: int = field(
        default=16 * 1024 * 1024, metadata={"help": "largest request body; a larger one gets 413"}
    )
    max_header_bytes: int = field(
        default=16 * 1024,
        metadata={"help": "largest request line plus headers (h11 incomplete-event limit); a larger one gets 400"},
    )
    max_connections: int = field(
        default=4096,
        metadata={"help": "most concurrent connections and requests (uvicorn limit_concurrency); past it 503"},
    )
    timeout_keep_alive: float = field(
        default=30.0,
        metadata={
            "help": "seconds a connection may sit outside a request (idle keep-alive, or headers still incomplete) "
            "before it is closed; also the limit for reading a request body (408)"
        },
    )
    max_restarts: int = field(
        default=5,
        metadata={"help": "router/scheduler restarts allowed within 60 s; one more and the server exits with code 1"},
    )

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
        if self.max_queued_requests < 0 or self.queue_timeout_s < 0 or self.max_restarts < 0:
            raise ValueError("--max-queued-requests, --queue-timeout-s and --max-restarts must be >= 0")
        if self.watchdog_timeout <= 0 or self.timeout_keep_alive <= 0:
            raise ValueError("--watchdog-timeout and --timeout-keep-alive must be > 0")
        if self.max_body_bytes < 1024 or self.max_header_bytes < 1024 or self.max_connections < 1:
            raise ValueError("--max-body-bytes and --max-header-bytes must be >= 1024, --max-connections >= 1")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}; got {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}; got {self.log_format!r}")
        if self.log_interval_s < 0:
            raise ValueError("--log-interval-s must be >= 0")

    @property
    def context_len(self) -> int:
        """--max-seq-len, else the preset model's context length (as SGLang reads it from the
        model's config), never more than one replica's KV pool."""
        if self.max_seq_len is not None:
            return self.max_seq_len
        return min(model_context_tokens(self.model) or self.kv_tokens, self.kv_tokens)

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model

    def policy_options(self) -> dict[str, Any]:
        return parse_kv(self.policy_opt, "--policy-opt")

    def router_options(self) -> dict[str, Any]:
        return parse_kv(self.router_opt, "--router-opt")


def _names(kind: str) -> list[str]:
    """Valid names for --help (the registries are imported only when help is built)."""
    if kind == "model":
        from sloserve.perf import preset_names  # noqa: PLC0415

        return preset_names()
    if kind == "router":
        from sloserve.routing.base import ROUTERS  # noqa: PLC0415

        return ROUTERS.names()
    return servable_policies()


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
    parser = OneLineParser(
        prog="python -m sloserve.launch_server",
        description="sloserve server (SGLang-compatible API, SLO-aware scheduling)",
    )
    return add_dataclass_arguments(parser, cls)


def config_from_args(argv: Sequence[str] | None = None) -> ServerConfig:
    return ServerConfig(**dataclass_values(build_parser().parse_args(argv), ServerConfig))
