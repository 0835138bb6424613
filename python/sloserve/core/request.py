"""Runtime state of one schedulable request (one stage of a program).

Work is tokens to catch up: ``num_tokens`` (prompt plus generated output) is what the
request's context holds, ``num_computed_tokens`` is how much of it has KV. A step schedules
some of the gap; when the gap closes the model emits a new output token. A prefill chunk, a
decode token, a recompute after preemption and a speculative verify are all the same shape.

Output tokens are numbered from 1. Token 1 (from the prefill) is due at the TTFT deadline.
Token i >= 2 is due at ``t0 + sum(tpot(j) for j in 2..i)`` with
``t0 = max(ttft_deadline, actual first-token time)`` (a cumulative deadline: early tokens
bank slack for later ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from sloserve.core.slo import DecodeSegment


class Tier(str, Enum):
    """Where a request is served."""

    PENDING = "pending"  # not yet decided
    SLO = "slo"  # admitted: its SLO is guaranteed by the plan
    BEST_EFFORT = "best_effort"  # served from leftover capacity
    REJECTED = "rejected"  # never served


@dataclass(eq=False)
class Request:
    """One stage of a program as the scheduler sees it. Mutated by the scheduler."""

    request_id: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int  # true length: the engine finishes here. Planners use planning_output_tokens.
    ttft_slo_s: float
    segments: tuple[DecodeSegment, ...]
    slo_class: str = "default"
    program_id: str = ""
    stage_index: int = 0
    stage_name: str = "main"
    weight: float = 1.0
    output_tokens_known: bool = True
    max_new_tokens: int | None = None
    # best effort asked for up front: by the router (no replica would admit it; the replica does
    # not try), or by the client (``slo_best_effort``; never refused by ``--reject-on-overload``)
    route_best_effort: bool = False
    user_best_effort: bool = False
    # progress, owned by the scheduler
    num_computed_tokens: int = 0
    num_output_tokens: int = 0
    first_token_s: float | None = None
    finish_s: float | None = None
    tier: Tier = Tier.PENDING
    num_preemptions: int = 0
    spec_steps_total: int = 0
    spec_tokens_total: int = 0
    spec_verify_steps: int = 0

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1:
            raise ValueError("prompt_tokens must be >= 1")
        if self.output_tokens < 1:
            raise ValueError("output_tokens must be >= 1")
        if not self.segments:
            raise ValueError("a request needs at least one decode segment")
        if not self.program_id:
            self.program_id = self.request_id

    # ---- token accounting -------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        """Tokens in the context: prompt plus generated output."""
        return self.prompt_tokens + self.num_output_tokens

    @property
    def remaining_compute_tokens(self) -> int:
        """Tokens that must be computed before the next output token appears."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_prefilling(self) -> bool:
        """True until the first output token exists (or while recomputing after preemption)."""
        return self.num_tokens - self.num_computed_tokens > 1 or self.num_output_tokens == 0

    @property
    def is_finished(self) -> bool:
        return self.finish_s is not None

    @property
    def planning_output_tokens(self) -> int:
        """Output length a planner may assume: the true one if known, else max_new_tokens."""
        if self.output_tokens_known:
            return self.output_tokens
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return self.output_tokens  # nothing better is known; drivers should set max_new_tokens

    @property
    def planning_remaining_output(self) -> int:
        return max(self.planning_output_tokens - self.num_output_tokens, 0)

    # ---- deadlines --------------------------------------------------------------------
    @property
    def ttft_deadline_s(self) -> float:
        return self.arrival_s + self.ttft_slo_s

    @property
    def decode_t0_s(self) -> float:
        """Origin of the cumulative decode deadlines."""
        if self.first_token_s is None:
            return self.ttft_deadline_s
        return max(self.ttft_deadline_s, self.first_token_s)

    def tpot_s_of_token(self, index: int) -> float:
        """TPOT SLO (seconds) of output token ``index`` (>= 2)."""
        return tpot_s_of_token(self.segments, index)

    def cumulative_tpot_s(self, index: int) -> float:
        """Sum of the TPOT SLOs of output tokens 2..index (0 for index <= 1)."""
        return cumulative_tpot_s(self.segments, index)

    def token_deadline_s(self, index: int) -> float:
        """Deadline of output token ``index`` (1-based)."""
        if index <= 1:
            return self.ttft_deadline_s
        return self.decode_t0_s + self.cumulative_tpot_s(index)

    @property
    def next_token_deadline_s(self) -> float:
        return self.token_deadline_s(self.num_output_tokens + 1)

    @property
    def current_tpot_s(self) -> float:
        return self.tpot_s_of_token(max(self.num_output_tokens + 1, 2))

    @property
    def min_tpot_s(self) -> float:
        segs = self.segments
        return (segs[0].tpot_ms if len(segs) == 1 else min(seg.tpot_ms for seg in segs)) / 1e3


class RequestView(Protocol):
    """What a driver or an engine may read of a resident request (``Scheduler.resident``); only
    the policy changes a request. Drivers change what a request asks for through
    ``Scheduler.update_segments``."""

    @property
    def request_id(self) -> str: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def max_new_tokens(self) -> int | None: ...
    @property
    def num_computed_tokens(self) -> int: ...
    @property
    def num_output_tokens(self) -> int: ...
    @property
    def num_tokens(self) -> int: ...
    @property
    def tier(self) -> Tier: ...
    @property
    def segments(self) -> tuple[DecodeSegment, ...]: ...
    @property
    def first_token_s(self) -> float | None: ...
    @property
    def is_finished(self) -> bool: ...


def tpot_s_of_token(segments: tuple[DecodeSegment, ...], index: int) -> float:
    """TPOT of output token ``index``: segments cover output tokens 1, 2, ... in order."""
    start = 1
    for seg in segments:
        if seg.num_tokens is None or index < start + seg.num_tokens:
            return seg.tpot_ms / 1e3
        start += seg.num_tokens
    return segments[-1].tpot_ms / 1e3


def cumulative_tpot_s(segments: tuple[DecodeSegment, ...], index: int) -> float:
    """Sum of TPOTs of output tokens 2..index, in O(number of segments)."""
    if index <= 1:
        return 0.0
    if len(segments) == 1:  # the common case, same arithmetic as the loop
        return (index - 1) * segments[0].tpot_ms / 1e3
    total = 0.0
    start = 1  # first output token index covered by this segment
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        end = index if (seg.num_tokens is None or last) else min(index, start + seg.num_tokens - 1)
        lo = max(start, 2)
        if end >= lo:
            total += (end - lo + 1) * seg.tpot_ms / 1e3
        if seg.num_tokens is None or last or end >= index:
            break
        start += seg.num_tokens
    return total
