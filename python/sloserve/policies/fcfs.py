"""FCFS continuous batching with chunked prefill: the plainest complete policy.

Each step: running decodes first (one token each), then waiting/prefilling requests in
arrival order into what is left of a token budget, chunked. When KV runs out, the most
recently arrived running request is preempted (recompute). Baselines specialise this shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sloserve.core.plan import AdmitDecision, AdmitReason, RequestEvent, ScheduledItem, StepPlan
from sloserve.core.request import Request, Tier
from sloserve.core.scheduler import Scheduler, register


@dataclass(frozen=True)
class FCFSConfig:
    token_budget: int = field(default=2048, metadata={"help": "max tokens per step"})
    max_running: int = field(default=256, metadata={"help": "max requests in a batch"})

    def __post_init__(self) -> None:
        if self.token_budget < 1 or self.max_running < 1:
            raise ValueError("token_budget and max_running must be >= 1")


@register("fcfs")
class FCFSScheduler(Scheduler):
    Config = FCFSConfig

    def __init__(self, ctx, config=None) -> None:
        super().__init__(ctx, config)
        self.order: list[str] = []  # arrival order of resident requests

    def enqueue(self, request: Request, now_s: float) -> AdmitDecision:
        request.tier = Tier.SLO
        self.order.append(request.request_id)
        return AdmitDecision(AdmitReason.QUEUED)

    def on_removed(self, request: Request) -> None:
        self.order.remove(request.request_id)

    def schedule(self, now_s: float) -> StepPlan:
        budget = self.config.token_budget
        items: list[ScheduledItem] = []
        events: list[RequestEvent] = []
        for rid in list(self.order):
            if budget <= 0 or len(items) >= self.config.max_running:
                break
            req = self.requests[rid]
            want = min(req.remaining_compute_tokens, budget)
            while not self.reserve(req, want):
                victim = self._newest_holding(exclude=rid, scheduled={i.request_id for i in items})
                if victim is None:
                    want = 0
                    break
                events.append(self.preempt(victim, now_s))
            if want <= 0:
                break  # FCFS: do not let later requests overtake one that lacks memory
            items.append(ScheduledItem(rid, want, context_tokens=req.num_computed_tokens))
            budget -= want
        return StepPlan(tuple(items), tuple(events))

    def _newest_holding(self, exclude: str, scheduled: set[str]) -> Request | None:
        for rid in reversed(self.order):
            if rid != exclude and rid not in scheduled and self.kv.held_blocks(rid):
                return self.requests[rid]
        return None
