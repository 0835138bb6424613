"""Executing the plan: one step's items from the SLO tier, then the best-effort tier.

Order of filling a step that starts at t and may last until ``end_s = min(t + L, earliest SLO
decode deadline)``: forced SLO decodes (due by t + 2L), admitted prefills in deadline order
(chunked), SLO decodes that are not due yet, then best-effort requests in FIFO order. The token
cap is the batch-time model's inverse of ``end_s - t``, so a batch that carries a big prefill
chunk still ends before the next decode deadline (the gap bug of the authors' code). With a
model that charges the KV a step reads or each request in it, the cap is taken again at the KV
read and the request count of the items so far plus the next one (``cap_at``): each request in a
step costs its context and its own share too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from sloserve.core.plan import ScheduledItem
from sloserve.core.request import Request
from sloserve.planner.batch import EPS_S


@dataclass
class StepBuilder:
    """Accumulates items against a token cap; ``reserve`` returns False when KV cannot be had.

    ``cap_at`` (models with a KV or per-request term): the token cap at a KV read and a request
    count; the cap is then ``max(cap_at(kv_read, requests), cap_tokens)``, ``cap_tokens`` being
    the floor that keeps every forced decode in the step."""

    cap_tokens: int
    reserve: Callable[[Request, int, bool], bool]
    items: list[ScheduledItem] = field(default_factory=list)
    used: int = 0
    ids: set = field(default_factory=set)
    cap_at: Callable[[int, int], int] | None = None
    kv_read: int = 0

    def room_with(self, context_tokens: int) -> int:
        """Tokens left for one more item, which reads ``context_tokens`` of KV."""
        if self.cap_at is None:
            return self.cap_tokens - self.used
        return max(self.cap_at(self.kv_read + context_tokens, len(self.items) + 1), self.cap_tokens) - self.used

    @property
    def room(self) -> int:
        return self.room_with(0)

    def add(self, req: Request, want: int, slo: bool) -> int:
        """Schedule up to ``want`` tokens of ``req``; returns how many were scheduled."""
        context = req.num_computed_tokens
        n = min(want, self.room_with(context))
        if n <= 0 or req.request_id in self.ids:
            return 0
        if not self.reserve(req, n, slo):
            return 0
        self.items.append(ScheduledItem(req.request_id, n, context_tokens=context))
        self.ids.add(req.request_id)
        self.used += n
        self.kv_read += context
        return n


def is_decoding(r: Request) -> bool:
    return r.num_output_tokens > 0 and r.remaining_compute_tokens == 1


def step_window(now_s: float, step_len_s: float, decoders: list[tuple[float, Request]]) -> tuple[float, list, list]:
    """(end_s, forced, optional): the step's latest end and the SLO decodes split by urgency."""
    end_s = now_s + step_len_s
    forced, optional = [], []
    for due, r in decoders:
        end_s = min(end_s, due)
        (forced if due <= now_s + 2 * step_len_s + EPS_S else optional).append((due, r))
    forced.sort(key=lambda x: x[0])
    optional.sort(key=lambda x: x[0])
    return end_s, forced, optional


def fill_step(
    builder: StepBuilder,
    forced: list,
    prefills: list[Request],
    best_effort: list[Request],
    optional: list,
    best_effort_cap: Callable[[int, int], int] | None = None,
    forced_best_effort: Sequence[Request] = (),
) -> int:
    """Fill in priority order; returns the number of forced decodes that did not fit.
    ``best_effort_cap`` (the token cap at a KV read and a request count) bounds the step once best effort joins;
    ``forced_best_effort``: best-effort decodes the engine runs anyway, right after the SLO ones."""
    dropped = 0
    for _, r in forced:
        if builder.add(r, 1, True) == 0:
            dropped += 1
    for r in forced_best_effort:
        builder.add(r, 1, False)
    for r in prefills:
        if builder.room <= 0:
            break
        builder.add(r, r.remaining_compute_tokens, True)
    # decodes not yet due go before best effort: an admitted request that finishes sooner
    # frees its KV reservation sooner (pacing tokens at the TPOT would hold KV longest)
    for _, r in optional:
        if builder.room <= 0:
            break
        builder.add(r, 1, True)
    if best_effort_cap is not None and best_effort:
        builder.cap_at, builder.cap_tokens = best_effort_cap, 0  # forced decodes are in already
    for r in best_effort:
        if builder.room <= 0:
            break
        if builder.add(r, r.remaining_compute_tokens, False) == 0:
            break  # FIFO: a later best-effort request does not overtake one lacking memory
    return dropped
