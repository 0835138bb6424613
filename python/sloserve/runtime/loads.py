"""The embedded runtime's load, per replica, in SGLang 0.5.23's ``/v1/loads`` schema.

A model gateway in front of several servers (SGLang's ``smg``, successor of ``sglang-router``)
polls ``GET /v1/loads?include=core`` and balances on the ``loads[]`` entries (one per DP rank:
``num_used_tokens``, ``num_running_reqs``, ``num_waiting_reqs``, ``token_usage``...). SGLang
fills them from each scheduler's ``LoadSnapshot``; here they come from what the HTTP front
already knows: which requests sit on which replica and whether they have a first token yet
(running vs waiting), the schedulers' KV blocks (their ``stats`` messages), and the tokens the
front received from each replica (generation throughput). docs/routing.md lists the fields.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from sloserve import __version__

# include= sections SGLang accepts; "core" alone gives the flat scalars only.
VALID_SECTIONS = frozenset({"core", "memory", "spec", "lora", "disagg", "queues", "all"})
# Prometheus prefixes of nested sections in format=prometheus (SGLang's names)
SECTION_PREFIXES = {"speculative": "spec", "disaggregation": "disagg"}
THROUGHPUT_WINDOW_S = 5.0  # gen_throughput averages over about this much wall time


class LoadsQueryError(ValueError):
    """A bad ``include=`` list (HTTP 400, as in SGLang)."""


@dataclass(frozen=True)
class InFlight:
    """One request the front is serving, as the load report sees it."""

    replica: int
    prompt_tokens: int
    started: bool  # it has its first token (SGLang: in the running batch, not the waiting queue)


class RateWindow:
    """Tokens per second over about the last ``window_s``, from a cumulative count sampled
    whenever a report is built (no timer: a poller every 1 s and a scrape every 15 s both get
    a rate over the time since the samples they can see)."""

    def __init__(self, window_s: float = THROUGHPUT_WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def rate(self, now_s: float, total_tokens: int) -> float:
        self.samples.append((now_s, total_tokens))
        while len(self.samples) > 2 and self.samples[1][0] <= now_s - self.window_s:
            self.samples.popleft()
        t0, n0 = self.samples[0]
        if now_s <= t0:
            return 0.0
        return max(total_tokens - n0, 0) / (now_s - t0)  # a stop string can trim a few tokens


def _core(dp_rank: int, kv: tuple[int, int], reqs: list[InFlight], tokens_per_s: float, block_size: int) -> dict:
    used_blocks, capacity_blocks = kv
    used, capacity = used_blocks * block_size, capacity_blocks * block_size
    waiting = [r for r in reqs if not r.started]
    waiting_tokens = sum(r.prompt_tokens for r in waiting)  # no prefix cache: every prompt token is uncached
    return {
        "timestamp": time.time(),
        "dp_rank": dp_rank,
        "num_running_reqs": len(reqs) - len(waiting),
        "num_waiting_reqs": len(waiting),
        "num_waiting_uncached_tokens": waiting_tokens,
        "num_used_tokens": used,
        "num_total_tokens": used + waiting_tokens,
        "num_active_tokens": used + waiting_tokens,
        "num_prealloc_ready_tokens": 0,
        "max_total_num_tokens": capacity,
        # no batch-size cap in the embedded engine: KV blocks bound the requests that can run
        "max_running_requests": capacity_blocks,
        "token_usage": round(used / capacity, 4) if capacity else 0.0,
        "gen_throughput": round(tokens_per_s, 2),
        "cache_hit_rate": 0.0,
        "utilization": 0.0,
        "total_prefill_uncached_tokens": 0,
        "total_prefill_busy_us": 0,
        "decode_moments": None,
    }


def _sections(reqs: list[InFlight]) -> dict:
    """The sections the embedded engine can fill (SGLang omits memory/spec/lora when unknown;
    the front does not see retractions as they happen, so ``retracted`` stays 0)."""
    return {
        "disaggregation": {
            "mode": "null",
            "prefill_bootstrap_queue_reqs": 0,
            "prefill_inflight_queue_reqs": 0,
            "decode_prealloc_queue_reqs": 0,
            "decode_transfer_queue_reqs": 0,
            "decode_retracted_queue_reqs": 0,
            "kv_transfer_speed_gb_s": 0.0,
            "kv_transfer_latency_ms": 0.0,
        },
        "queues": {
            "waiting": sum(1 for r in reqs if not r.started),
            "grammar": 0,
            "paused": 0,
            "retracted": 0,
            "prealloc_ready": 0,
        },
    }


def select(load: dict, include: set[str] | None) -> dict:
    """SGLang's ``LoadSnapshot.to_dict(include)``: the core scalars, plus the sections asked for."""
    core = {k: v for k, v in load.items() if not isinstance(v, dict)}
    if include is None or "all" in include:
        return dict(load)
    if not include <= VALID_SECTIONS:
        raise LoadsQueryError(
            f"Invalid include sections: {include - VALID_SECTIONS}. Valid options: {sorted(VALID_SECTIONS)}"
        )
    wanted = {"disaggregation" if s == "disagg" else s for s in include}
    return {**core, **{k: v for k, v in load.items() if isinstance(v, dict) and k in wanted}}


def parse_include(include: str | None) -> set[str] | None:
    return {s.strip() for s in include.split(",")} if include else None


def loads_body(loads: list[dict]) -> dict:
    """The JSON document of ``GET /v1/loads`` (one simulated accelerator per replica)."""
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "version": __version__,
        "accelerator": None,
        "num_accelerators": 1,
        "loads": loads,
    }


def loads_prometheus(loads: list[dict]) -> str:
    """``format=prometheus``: every numeric field as a ``sglang_<field>{dp_rank=...}`` gauge."""
    samples: dict[str, list[tuple[int, float]]] = {}
    for load in loads:
        rank = load["dp_rank"]
        for key, value in load.items():
            if isinstance(value, dict):
                prefix = SECTION_PREFIXES.get(key, key)
                for sub, v in value.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        samples.setdefault(f"sglang_{prefix}_{sub}", []).append((rank, v))
            elif key != "dp_rank" and isinstance(value, (int, float)) and not isinstance(value, bool):
                samples.setdefault(f"sglang_{key}", []).append((rank, value))
    lines = []
    for name, rows in samples.items():
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f'{name}{{dp_rank="{rank}"}} {value}' for rank, value in rows)
    return "\n".join(lines) + "\n"


class LoadTracker:
    """Per-replica load reports of one server; ``request_done`` is told of every ended request
    (a ``RequestLog`` observer) so generated tokens stay counted after a request leaves."""

    def __init__(self, dp_size: int, block_size: int, kv_tokens: int) -> None:
        self.dp_size = dp_size
        self.block_size = block_size
        self.default_blocks = kv_tokens // block_size
        self.done_tokens = [0] * dp_size  # tokens of ended requests, per replica
        self.windows = [RateWindow() for _ in range(dp_size)]

    def request_done(self, state, reason: dict, status: int) -> None:
        if 0 <= state.replica < self.dp_size:
            self.done_tokens[state.replica] += state.num_out

    def snapshot(self, states: Iterable, replica_stats: dict[int, dict], now_s: float | None = None) -> list[dict]:
        """One SGLang ``LoadSnapshot`` dict per replica, from the front's in-flight states and
        the schedulers' last stats messages."""
        now_s = time.monotonic() if now_s is None else now_s
        per: list[list[InFlight]] = [[] for _ in range(self.dp_size)]
        live_tokens = [0] * self.dp_size
        for s in states:
            if 0 <= s.replica < self.dp_size:
                per[s.replica].append(InFlight(s.replica, len(s.prompt_ids), s.num_out > 0))
                live_tokens[s.replica] += s.num_out
        out = []
        for i in range(self.dp_size):
            stats = replica_stats.get(i, {})
            kv = (int(stats.get("kv_used_blocks", 0)), int(stats.get("kv_capacity_blocks", self.default_blocks)))
            rate = self.windows[i].rate(now_s, self.done_tokens[i] + live_tokens[i])
            out.append({**_core(i, kv, per[i], rate, self.block_size), **_sections(per[i])})
        return out
