"""Replica summaries as a router sees them: published state plus what was routed since.

A replica publishes a ``ReplicaSummary`` after each step, so between two steps (or when the
transport lags) the router's view is a few steps old. Every load-reading router therefore keeps
a ``PendingLedger``: what it dispatched to each replica after that replica's summary time.
``effective_load`` adds it to the summary, so a burst of arrivals between two publications is
not piled onto the one replica whose old summary looked empty (SGLang's DP budget does the
same with its speculative "+1 on dispatch").

A dispatch counts as seen by a summary only when ``summary.time_s > dispatch time``: a summary
stamped at the dispatch instant may have been published just before the request arrived (the
simulator publishes at step end, before same-time arrivals), and counting a request twice is
the safe error (it spreads load) while forgetting it is not.

``SummaryAdmission`` estimates admission from a summary alone, for drivers without
``can_admit``; its inputs are the optional summary fields documented in docs/routing.md.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Deque

from sloserve.core.plan import ReplicaSummary
from sloserve.core.request import Request


def request_tokens(request: Request) -> tuple[int, int]:
    """(outstanding tokens, KV tokens) a request adds to a replica, as summaries count them."""
    prefill = max(request.num_tokens - request.num_computed_tokens, 0)
    outstanding = prefill + request.planning_remaining_output
    kv = request.prompt_tokens + request.planning_output_tokens
    return outstanding, kv


@dataclass(frozen=True)
class PendingLoad:
    """Work dispatched to one replica that its current summary has not seen yet."""

    num_requests: int = 0
    outstanding_tokens: int = 0
    prefill_tokens: int = 0
    kv_tokens: int = 0


@dataclass(frozen=True)
class EffectiveLoad:
    """A replica's summary plus its pending dispatches: what routers compare."""

    replica_id: int
    num_requests: int
    outstanding_tokens: int
    prefill_backlog_tokens: int | None
    free_kv_tokens: int
    pending: PendingLoad


class _Entry:
    __slots__ = ("time_s", "outstanding", "prefill", "kv")

    def __init__(self, time_s: float, outstanding: int, prefill: int, kv: int) -> None:
        self.time_s = time_s
        self.outstanding = outstanding
        self.prefill = prefill
        self.kv = kv


class PendingLedger:
    """Per-replica FIFO of dispatches not yet reflected in that replica's summary.

    ``ttl_s`` bounds the damage when a replica stops publishing (a hung process): entries older
    than that are dropped even without a newer summary.
    """

    def __init__(self, ttl_s: float = 30.0) -> None:
        if ttl_s <= 0:
            raise ValueError("ledger ttl_s must be positive")
        self.ttl_s = ttl_s
        self._entries: dict[int, Deque[_Entry]] = {}
        self._sums: dict[int, list[int]] = {}  # replica -> [count, outstanding, prefill, kv]

    def record(self, replica_id: int, request: Request, now_s: float) -> None:
        outstanding, kv = request_tokens(request)
        prefill = max(request.num_tokens - request.num_computed_tokens, 0)
        self._entries.setdefault(replica_id, deque()).append(_Entry(now_s, outstanding, prefill, kv))
        sums = self._sums.setdefault(replica_id, [0, 0, 0, 0])
        sums[0] += 1
        sums[1] += outstanding
        sums[2] += prefill
        sums[3] += kv

    def sync(self, replica_id: int, summary_time_s: float, now_s: float) -> None:
        """Forget dispatches the summary has seen (strictly older) or that outlived the TTL."""
        entries = self._entries.get(replica_id)
        if not entries:
            return
        horizon = max(summary_time_s, now_s - self.ttl_s)
        sums = self._sums[replica_id]
        while entries and entries[0].time_s < horizon:
            e = entries.popleft()
            sums[0] -= 1
            sums[1] -= e.outstanding
            sums[2] -= e.prefill
            sums[3] -= e.kv

    def pending(self, replica_id: int) -> PendingLoad:
        sums = self._sums.get(replica_id)
        if not sums or not sums[0]:
            return PendingLoad()
        return PendingLoad(sums[0], sums[1], sums[2], sums[3])

    def effective(self, summary: ReplicaSummary, now_s: float) -> EffectiveLoad:
        """Sync with ``summary`` and return summary + pending."""
        rid = summary.replica_id
        self.sync(rid, summary.time_s, now_s)
        pend = self.pending(rid)
        backlog = summary.prefill_backlog_tokens
        return EffectiveLoad(
            replica_id=rid,
            num_requests=summary.num_requests + pend.num_requests,
            outstanding_tokens=summary.outstanding_tokens + pend.outstanding_tokens,
            prefill_backlog_tokens=None if backlog is None else backlog + pend.prefill_tokens,
            free_kv_tokens=summary.free_kv_tokens - pend.kv_tokens,
            pending=pend,
        )


def spare_at(points: tuple[tuple[float, int], ...], horizon_s: float) -> float:
    """Spare prefill tokens within ``horizon_s`` of the summary time: piecewise linear from
    (0, 0) through the published points, flat after the last one (never extrapolate up)."""
    if horizon_s <= 0 or not points:
        return 0.0
    prev_h, prev_n = 0.0, 0.0
    for h, n in points:
        if horizon_s <= h:
            if h <= prev_h:
                return float(n)
            return prev_n + (n - prev_n) * (horizon_s - prev_h) / (h - prev_h)
        prev_h, prev_n = h, float(n)
    return prev_n


@dataclass(frozen=True)
class Estimate:
    """A summary-only admission guess: would the replica admit, with what margin (seconds)."""

    admitted: bool
    margin_s: float
    known: bool  # False when the summary publishes nothing to judge time by
    reason: str


class SummaryAdmission:
    """Admission from a (possibly stale) summary plus pending dispatches.

    In order of preference: the planner's published spare prefill budget by horizon; else the
    prefill backlog and throughput (a queueing estimate); else only KV is judged and the
    estimate says ``known=False`` so the caller falls back to load balancing.
    ``headroom`` keeps that fraction of the spare budget in reserve against estimate error;
    ``use_spare=False`` ignores a published spare budget (ablation: backlog and rate only).
    """

    def __init__(
        self, headroom: float = 0.1, fallback_prefill_tokens_per_s: float = 0.0, use_spare: bool = True
    ) -> None:
        if not 0.0 <= headroom < 1.0:
            raise ValueError("headroom must be in [0, 1)")
        self.headroom = headroom
        self.fallback_rate = fallback_prefill_tokens_per_s
        self.use_spare = use_spare

    def estimate(self, request: Request, summary: ReplicaSummary, load: EffectiveLoad, now_s: float) -> Estimate:
        _, kv_need = request_tokens(request)
        if summary.kv_capacity_tokens and kv_need > load.free_kv_tokens:
            return Estimate(False, -float(kv_need - load.free_kv_tokens) / max(kv_need, 1), True, "no_kv")
        need = max(request.num_tokens - request.num_computed_tokens, 1)
        age_s = max(now_s - summary.time_s, 0.0)
        until_deadline_s = request.ttft_deadline_s - now_s
        if self.use_spare and summary.spare_prefill_tokens:
            return self._from_spare(summary, load, need, age_s, until_deadline_s)
        rate = summary.prefill_tokens_per_s or self.fallback_rate
        if rate > 0:
            return self._from_backlog(load, rate, need, age_s, until_deadline_s)
        return Estimate(True, 0.0, False, "unknown")

    def _from_spare(
        self, summary: ReplicaSummary, load: EffectiveLoad, need: int, age_s: float, until_deadline_s: float
    ) -> Estimate:
        points = summary.spare_prefill_tokens
        # Budget between the summary time and now has passed (used by best effort or idle).
        window = spare_at(points, age_s + until_deadline_s) - spare_at(points, age_s)
        usable = window * (1.0 - self.headroom) - load.pending.prefill_tokens
        last_h, last_n = points[-1]
        rate = last_n / last_h if last_h > 0 and last_n > 0 else 0.0
        spare_tokens = usable - need
        margin = spare_tokens / rate if rate > 0 else (0.0 if spare_tokens >= 0 else -until_deadline_s)
        return Estimate(spare_tokens >= 0, margin, True, "spare_budget")

    def _from_backlog(
        self, load: EffectiveLoad, rate: float, need: int, age_s: float, until_deadline_s: float
    ) -> Estimate:
        if load.prefill_backlog_tokens is not None:
            summary_backlog = load.prefill_backlog_tokens - load.pending.prefill_tokens
            # The replica worked on its backlog since the summary; pending work is all new.
            backlog = max(summary_backlog - rate * age_s, 0.0) + load.pending.prefill_tokens
        else:
            backlog = float(load.outstanding_tokens)  # over-estimate: counts decode tokens too
        finish_s = (backlog + need) / rate
        margin = until_deadline_s * (1.0 - self.headroom) - finish_s
        return Estimate(margin >= 0, margin, True, "backlog")
