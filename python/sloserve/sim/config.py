"""Simulation configuration: one frozen dataclass, help text in field metadata."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class SimConfig:
    model: str = field(default="opt-13b-tp2-a100", metadata={"help": "batch-time model preset (or fitted .json path)"})
    policy: str = field(default="slos-serve", metadata={"help": "registered scheduling policy"})
    policy_options: Mapping[str, Any] = field(default_factory=dict, metadata={"help": "policy config fields"})
    kv_tokens: int = field(default=97648, metadata={"help": "KV-cache capacity per replica, tokens"})
    block_size_tokens: int = field(default=16, metadata={"help": "KV block size, tokens"})
    max_seq_len: int | None = field(default=None, metadata={"help": "max prompt+output tokens per request"})
    replicas: int = field(default=1, metadata={"help": "data-parallel replicas"})
    router: str = field(default="round-robin", metadata={"help": "registered routing policy"})
    router_options: Mapping[str, Any] = field(default_factory=dict, metadata={"help": "router config fields"})
    seed: int = field(default=0, metadata={"help": "seed for every random draw in the run"})
    tolerance: float = field(default=0.05, metadata={"help": "deadline tolerance when checking attainment"})
    spec: Any = field(default=None, metadata={"help": "speculative decoding config (None: off)"})
    alpha: float = field(default=0.0, metadata={"help": "true per-token draft acceptance rate"})
    chrome_trace: bool = field(default=False, metadata={"help": "record steps for a Chrome trace"})
    step_time_noise: float = field(
        default=0.0,
        metadata={"help": "coefficient of variation of lognormal per-step noise on the engine's step time (seeded)"},
    )
    step_time_bias: float = field(
        default=0.0,
        metadata={"help": "the engine's steps take (1 + bias) x the model's time (the planner is not told)"},
    )
    step_time_bias_known: bool = field(
        default=False,
        metadata={
            "help": "an oracle for comparison: the policies plan with the model times (1 + step_time_bias), the engine's true mean speed; SLOs stay those of the model as given"
        },
    )
    step_time_trace: str = field(
        default="",
        metadata={
            "help": "file of a real engine's observed/predicted step-time ratios (one per line, in run order): the engine replays them from a seeded offset (sim/engine.py)"
        },
    )
    engine_model: str = field(
        default="",
        metadata={
            "help": "the simulated engine's own step-time model (a sim/step_cost.py JSON with a per-request term; the planner keeps `model`); empty: the planner's model"
        },
    )
    client_timeout: bool = field(
        default=False,
        metadata={
            "help": "clients abort a request still without a first token past its TTFT deadline (with tolerance), every policy alike; a miss"
        },
    )
    best_effort_expiry: bool = field(
        default=False,
        metadata={
            "help": "the SGLang plugin's overload rule (docs/sglang.md, 'Overload'): a request the policy did not admit that has not started by its TTFT deadline is ended there (a miss)"
        },
    )
    warmup: bool = field(
        default=True,
        metadata={
            "help": "each replica runs a served replica's warm-up requests before the first arrival when the engine is not the model (noise, bias, a ratio trace, an engine model), so a calibrating policy has measured it (sim/warmup.py)"
        },
    )
    charge_scheduler_time: bool = field(
        default=False,
        metadata={
            "help": "charge the scheduler's CPU time (deterministic cost model, sim/overhead.py) to the next engine step"
        },
    )

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("replicas must be >= 1")
        if self.kv_tokens < self.block_size_tokens:
            raise ValueError("kv_tokens must hold at least one block")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError("alpha must be in [0, 1)")
        if self.step_time_noise < 0 or self.step_time_bias <= -1:
            raise ValueError("step_time_noise must be >= 0 and step_time_bias > -1")

    @property
    def gpus_per_replica(self) -> int:
        """Tensor-parallel degree read from the preset name (``...-tp2-...``), else 1."""
        match = re.search(r"-tp(\d+)", self.model)
        return int(match.group(1)) if match else 1
