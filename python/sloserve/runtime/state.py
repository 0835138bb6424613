"""Per-request state in the HTTP front: tokens seen, stop detection, terminal outcome, meta_info."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sloserve.core.request import Request
from sloserve.metrics.attainment import stage_attained, token_deadlines_s
from sloserve.runtime.protocol import GenInput
from sloserve.runtime.slo_params import SloSpec
from sloserve.runtime.tokenizer import Tokenizer

TOKENS_PER_CHAR = 4  # the most tokens one character can take (byte-level fallback of UTF-8)


@dataclass(eq=False)
class ReqState:
    rid: str
    gen: GenInput
    slo: SloSpec
    request: Request  # the core request: arrival, deadlines, segments (server time base)
    prompt_ids: list[int]
    output_ids: list[int]  # the synthetic output, fixed up front; clients see a prefix
    max_visible: int  # max_new_tokens (0 keeps the prefill-only token invisible)
    replica: int = -1
    tier: str = "pending"
    reason: str = ""
    admit_status: int = 0  # 0 while undecided; 200 accepted; else the HTTP error status
    admit_message: str = ""
    num_out: int = 0  # tokens the engine produced
    token_times: list[float] = field(default_factory=list)  # receipt time of each, server base
    num_preemptions: int = 0
    finish_reason: dict | None = None
    error_status: int = 0
    done: bool = False
    finish_s: float | None = None
    think_end: int | None = None
    text_cut: int | None = None  # trim the text here (a stop string matched)
    slo_met: bool | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    client_rid: str = ""  # the rid the client sent (``rid`` is unique in the server; see FrontEnd.new_state)
    ttft_asked: bool = False  # the client set the TTFT SLO itself (slo_params.asks_for_ttft)

    def __post_init__(self) -> None:
        self.client_rid = self.client_rid or self.rid

    @property
    def visible(self) -> int:
        return min(self.num_out, self.max_visible)

    def add_tokens(self, n: int, now_s: float) -> None:
        n = min(n, len(self.output_ids) - self.num_out)
        self.num_out += n
        self.token_times.extend([now_s] * n)

    def check_stop(self, tok: Tokenizer, before: int) -> str | None:
        """A stop token id or stop string among the tokens after ``before``; trims the output."""
        sp = self.gen.sampling
        if self.num_out < max(sp.min_new_tokens, 1):
            return None
        if sp.stop_token_ids:
            for i in range(before, self.visible):
                if self.output_ids[i] in sp.stop_token_ids:
                    self.num_out = i + 1
                    del self.token_times[i + 1 :]
                    return str(self.output_ids[i])
        if sp.stop:
            # Incremental: only the new tokens and a tail long enough to hold a stop string that
            # ends in them are decoded and searched (a char is at most 4 tokens: byte fallback).
            longest = max(map(len, sp.stop))
            start = max(before - TOKENS_PER_CHAR * longest - 1, 0)
            ids = self.output_ids[start : self.visible]
            text = tok.decode(ids)
            window = max(len(tok.decode(ids[: before - start])) - longest, 0)
            hits = [(pos, s) for s in sp.stop if (pos := text.find(s, window)) >= 0]
            if hits:
                pos, matched = min(hits)
                pos += len(tok.decode(self.output_ids[:start])) if start else 0  # once, at the match
                self.text_cut = pos if not sp.no_stop_trim else pos + len(matched)
                return matched
        return None

    def find_marker(self, tok: Tokenizer, before: int = 0) -> int | None:
        """Output tokens up to and including the end-of-thinking marker, once it appears
        (searched incrementally: the tokens after ``before`` and a tail that could hold it)."""
        marker = self.slo.think_marker
        if marker is None or self.think_end is not None:
            return None
        k = self.visible
        start = max(before - TOKENS_PER_CHAR * len(marker) - 1, 0)
        if marker not in tok.decode(self.output_ids[start:k]):
            return None
        while k > start + 1 and marker in tok.decode(self.output_ids[start : k - 1]):
            k -= 1
        self.think_end = k
        self.request.segments = self.slo.segments_after_marker(k)
        return k

    def text(self, tok: Tokenizer) -> str:
        text = tok.decode(self.output_ids[: self.visible])
        return text if self.text_cut is None else text[: self.text_cut]

    # ---- terminal outcome -------------------------------------------------------------
    def finish(self, now_s: float, reason: dict, status: int = 0) -> bool:
        """Mark terminal exactly once; False if it already was."""
        if self.done:
            return False
        self.done = True
        self.finish_s = now_s
        self.finish_reason = reason
        self.error_status = status
        times = self.token_times[: max(self.visible, 1)]
        if times and status == 0 and self.tier in ("slo", "best_effort"):
            r = self.request
            self.slo_met = stage_attained(r.arrival_s, r.ttft_slo_s, r.segments, times)
        self.changed.set()
        return True

    @property
    def ttft_s(self) -> float | None:
        return self.token_times[0] - self.request.arrival_s if self.token_times else None

    @property
    def tpot_s(self) -> float | None:
        n = self.visible
        if n < 2:
            return None
        return (self.token_times[n - 1] - self.token_times[0]) / (n - 1)

    def meta_info(self, now_s: float) -> dict:
        """SGLang-shaped meta_info plus the SLO report (flat keys; see docs/slo-api.md)."""
        r = self.request
        n = self.visible
        meta = {
            "id": self.client_rid,
            "finish_reason": self.finish_reason,
            "prompt_tokens": len(self.prompt_ids),
            "completion_tokens": n,
            "cached_tokens": 0,
            "reasoning_tokens": min(self.think_end or self.slo.think_tokens or 0, n),
            "weight_version": "default",
            "num_retractions": self.num_preemptions,
            "e2e_latency": (self.finish_s if self.finish_s is not None else now_s) - r.arrival_s,
            "tier": self.tier,
            "admission": self.reason,
            "replica": self.replica,
            "slo_class": r.slo_class,
            "slo_stage": r.stage_name,
            "slo_program_id": r.program_id,
            "slo_ttft_ms": r.ttft_slo_s * 1e3,
            "slo_tpot_ms": self.slo.tpot_ms,
            "slo_think_tpot_ms": self.slo.think_tpot_ms,
            "slo_think_tokens": self.think_end or self.slo.think_tokens,
            "ttft_deadline_ms": r.ttft_slo_s * 1e3,
            "last_token_deadline_ms": None,
            "ttft_ms": None if self.ttft_s is None else self.ttft_s * 1e3,
            "tpot_ms": None if self.tpot_s is None else self.tpot_s * 1e3,
            "slo_met": self.slo_met,
            "engine": "simulated",
        }
        if n and self.done:  # O(tokens): only in the final report, not in every stream chunk
            deadlines = token_deadlines_s(r.arrival_s, r.ttft_slo_s, r.segments, self.token_times[:n])
            meta["last_token_deadline_ms"] = (float(deadlines[-1]) - r.arrival_s) * 1e3
        return meta
