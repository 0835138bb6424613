"""Shared bookkeeping for the baseline policies: a waiting queue, a running list, preemption.

The real systems the baselines copy (vLLM, Sarathi-Serve, SGLang, DistServe) all keep two
queues: requests waiting for their (re)prefill and requests already running. Preempted
requests lose their KV (recompute) and go back to the waiting queue; where exactly (front or
back) is each system's own choice, so ``preempt_to_waiting`` takes it as an argument.
"""

from __future__ import annotations

from collections import deque

from sloserve.core.plan import AdmitDecision, AdmitReason, EventKind, RequestEvent, ScheduledItem
from sloserve.core.request import Request, Tier
from sloserve.core.scheduler import Scheduler


def item_for(req: Request, num_tokens: int) -> ScheduledItem:
    """A batch item computing ``num_tokens`` more tokens of ``req``."""
    return ScheduledItem(req.request_id, num_tokens, context_tokens=req.num_computed_tokens)


def require_positive(config: object, *names: str) -> None:
    """ValueError naming the first listed int field of ``config`` that is below 1."""
    for name in names:
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{type(config).__name__}.{name} must be an integer >= 1, got {value!r}")


class QueuedScheduler(Scheduler):
    """A waiting deque and a running list on top of the base scheduler.

    ``waiting`` holds requests without (complete) KV that the policy has not started;
    ``running`` holds requests the policy has started (decoding or mid-prefill), in the
    order the policy admitted them. Every baseline accepts every request that fits the
    context (no SLO admission control), so all land in the SLO tier and are counted as
    ``queued``.
    """

    def __init__(self, ctx, config=None) -> None:
        super().__init__(ctx, config)
        self.waiting: deque[str] = deque()
        self.running: list[str] = []

    def enqueue(self, request: Request, now_s: float) -> AdmitDecision:
        request.tier = Tier.SLO
        self.waiting.append(request.request_id)
        return AdmitDecision(AdmitReason.QUEUED)

    def on_removed(self, request: Request) -> None:
        rid = request.request_id
        if rid in self.running:
            self.running.remove(rid)
        else:
            try:
                self.waiting.remove(rid)
            except ValueError:
                pass  # a policy-specific queue holds it; subclasses clean their own

    def preempt_to_waiting(self, req: Request, now_s: float, front: bool = True) -> RequestEvent:
        """Recompute preemption: free the KV and move ``req`` from running to waiting."""
        if req.request_id in self.running:
            self.running.remove(req.request_id)
        event = self.preempt(req, now_s)
        if front:
            self.waiting.appendleft(req.request_id)
        else:
            self.waiting.append(req.request_id)
        return event

    def reserve_preempting_newest(
        self, req: Request, num_tokens: int, now_s: float, events: list[RequestEvent]
    ) -> bool:
        """Reserve KV for ``req``, preempting the last running request (vLLM's
        ``running.pop()``) until it fits. False when ``req`` itself had to go."""
        while not self.reserve(req, num_tokens):
            victim = self.requests[self.running[-1]]
            events.append(self.preempt_to_waiting(victim, now_s, front=True))
            if victim is req:
                return False
        return True

    def drop_unservable(self, req: Request, now_s: float, reason: str) -> RequestEvent:
        """Give up on a request the policy can never serve (the real systems abort it too).

        Reported as REJECTED (a failure in every metric), with ``reason`` counted in stats.
        """
        self.requests.pop(req.request_id, None)
        self.kv.free(req.request_id)
        self.on_removed(req)
        req.tier = Tier.REJECTED
        self.reasons[reason] += 1
        return RequestEvent(EventKind.REJECTED, req.request_id, now_s, tier=Tier.REJECTED.value, reason=reason)

    def never_fits(self, req: Request, watermark_blocks: int) -> bool:
        """vLLM's AllocStatus.NEVER: the whole context cannot pass the watermark even on an
        empty pool (possible after a preemption grew the context to recompute)."""
        return self.kv.capacity_blocks - self.kv.blocks_for(req.num_tokens) < watermark_blocks

    def stats(self) -> dict:
        out = super().stats()
        out["num_waiting"] = len(self.waiting)
        out["num_running"] = len(self.running)
        return out
