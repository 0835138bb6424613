"""Earliest-deadline-first over each request's next token deadline, under a token budget.

No production system ships this; it is the classic real-time baseline the SLOs-Serve paper
argues against. Every step, resident requests are ordered by the deadline of the next token
they owe (the TTFT deadline for a request still in its prompt, the cumulative decode deadline
``t0 + sum(TPOT)`` for a decoding one) and served in that order, prefills chunked, until the
token budget or ``max_num_seqs`` is spent. A request already holding KV that cannot grow
preempts (recompute) the holder with the latest deadline; a request with no KV yet waits
rather than evicting anyone, so a burst of arrivals cannot thrash running decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sloserve.core.plan import AdmitDecision, AdmitReason, RequestEvent, ScheduledItem, StepPlan
from sloserve.core.request import Request, Tier
from sloserve.core.scheduler import Scheduler, register
from sloserve.policies._common import item_for, require_positive


@dataclass(frozen=True)
class EDFConfig:
    token_budget: int = field(default=2048, metadata={"help": "max tokens computed per step"})
    max_num_seqs: int = field(default=256, metadata={"help": "max requests in one batch"})

    def __post_init__(self) -> None:
        require_positive(self, "token_budget", "max_num_seqs")


def _deadline_key(req: Request) -> tuple[float, float, str]:
    return (req.next_token_deadline_s, req.arrival_s, req.request_id)


@register("edf")
class EDFScheduler(Scheduler):
    Config = EDFConfig

    def enqueue(self, request: Request, now_s: float) -> AdmitDecision:
        request.tier = Tier.SLO
        return AdmitDecision(AdmitReason.QUEUED)

    def schedule(self, now_s: float) -> StepPlan:
        order = sorted(self.requests.values(), key=_deadline_key)
        budget = self.config.token_budget
        items: list[ScheduledItem] = []
        events: list[RequestEvent] = []
        taken: set[str] = set()  # scheduled or preempted this step
        for pos, req in enumerate(order):
            if budget <= 0 or len(items) >= self.config.max_num_seqs:
                break
            if req.request_id in taken:
                continue
            want = min(req.remaining_compute_tokens, budget)
            if not self.reserve(req, want):
                if not self.kv.held_blocks(req.request_id):
                    continue  # no KV yet: wait for memory, evict nobody
                if not self._evict_later(order, pos, req, want, taken, events, now_s):
                    continue
            items.append(item_for(req, want))
            taken.add(req.request_id)
            budget -= want
        return StepPlan(tuple(items), tuple(events))

    def _evict_later(
        self,
        order: list[Request],
        pos: int,
        req: Request,
        want: int,
        taken: set[str],
        events: list[RequestEvent],
        now_s: float,
    ) -> bool:
        """Preempt later-deadline KV holders, latest first, until ``req`` fits."""
        for victim in reversed(order[pos + 1 :]):
            if victim.request_id in taken or not self.kv.held_blocks(victim.request_id):
                continue
            events.append(self.preempt(victim, now_s))
            taken.add(victim.request_id)
            if self.reserve(req, want):
                return True
        return False
