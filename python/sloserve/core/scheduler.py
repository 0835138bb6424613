"""The one scheduler interface every policy implements, and the bookkeeping they share.

Drivers (the simulator, the embedded runtime, the SGLang adapter) call, in order:
``add`` on arrival, ``schedule`` when the engine is idle, the engine executes the plan, then
``on_step_done`` with the engine's result. ``can_admit`` is side-effect free (routers call it).
Policies never read a clock: ``now_s`` is always passed in.

``DRIVER_INTERFACE`` is everything a driver may use; the rest (the request table, the KV pool,
a policy's queues) belongs to the policy. Drivers read requests through ``resident`` /
``request`` (read-only views), change what a request asks for only through
``update_segments``, and an external engine that decides on its own (SGLang) reports what it
did through ``sync_external``. ``test/unit/test_driver_interface.py`` runs every driver against a
proxy that allows nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Iterable, Mapping

from sloserve.core.kv import KVPool
from sloserve.core.plan import AdmitDecision, AdmitReason, EventKind, ReplicaSummary, RequestEvent, StepPlan, StepResult
from sloserve.core.registry import Registry, build_config
from sloserve.core.request import Request, RequestView, Tier
from sloserve.core.slo import DecodeSegment

DRIVER_INTERFACE = frozenset(
    {
        "add",
        "can_admit",
        "abort",
        "release",
        "schedule",
        "on_step_done",
        "summary",
        "stats",
        "has_work",
        "resident",
        "request",
        "update_segments",
        "sync_external",
        "registry_name",
        "num_steps",
        "kv_blocks",
    }
)


@dataclass(frozen=True)
class SchedulerContext:
    """What every policy gets from its replica: the batch-time model and the KV capacity."""

    perf: Any  # sloserve.perf.BatchTimeModel (kept untyped so core does not import perf)
    kv_capacity_tokens: int
    block_size_tokens: int = 16
    max_seq_len_tokens: int | None = None
    spec: Any = None  # sloserve.spec.SpecConfig or None (speculation off)
    replica_id: int = 0


@dataclass(frozen=True)
class EmptyConfig:
    """Policies without options use this."""


class Scheduler(ABC):
    """Base class: request table, KV pool, token progression, events and counters."""

    Config: ClassVar[type] = EmptyConfig
    registry_name: ClassVar[str] = ""

    def __init__(self, ctx: SchedulerContext, config: Any = None) -> None:
        self.ctx = ctx
        self.config = config if config is not None else self.Config()
        self.kv = KVPool(ctx.kv_capacity_tokens, ctx.block_size_tokens)
        self.requests: dict[str, Request] = {}
        self._resident: Mapping[str, RequestView] = MappingProxyType(self.requests)
        self.reasons: Counter[str] = Counter()
        self.num_steps = 0

    # ---- what drivers read ----------------------------------------------------------------
    @property
    def resident(self) -> Mapping[str, RequestView]:
        """The requests this replica holds, by id (read-only; engines execute plans against it)."""
        return self._resident

    def request(self, request_id: str) -> RequestView | None:
        return self.requests.get(request_id)

    def update_segments(self, request_id: str, segments: tuple[DecodeSegment, ...]) -> bool:
        """The client's request changed what it asks for (the end-of-thinking marker fixed the
        thinking segment's length). False if the request is not here."""
        req = self.requests.get(request_id)
        if req is None:
            return False
        req.segments = tuple(segments)
        return True

    def sync_external(
        self,
        now_s: float,
        *,
        aborted: Iterable[str] = (),
        retracted: Iterable[str] = (),
        kv_tokens: Mapping[str, int] | None = None,
    ) -> list[RequestEvent]:
        """An external engine (SGLang) that acts on its own reports what it did, each change going
        through the policy as the interface's own calls would: ``aborted`` requests were dropped
        (client abort; counted as aborts, never as finished), ``retracted`` ones lost their KV
        (recompute from scratch), and ``kv_tokens`` is the KV it holds per resident request now
        (the policy's pool is set to exactly that). Requests it finished arrive through
        ``on_step_done`` (``StepResult.finished``) as with any engine."""
        events = [self.preempt(self.requests[rid], now_s) for rid in retracted if rid in self.requests]
        for rid in aborted:
            self.abort(rid, now_s)
        if kv_tokens is not None:
            for rid, tokens in kv_tokens.items():
                if rid in self.requests:
                    self.kv.free(rid)
                    if tokens:
                        self.kv.grow(rid, tokens)
        return events

    # ---- the interface ------------------------------------------------------------------
    def add(self, request: Request, now_s: float) -> AdmitDecision:
        """Take a new request. Returns where it went and why."""
        if request.request_id in self.requests:
            raise ValueError(f"duplicate request id {request.request_id!r}")
        too_long = self.check_length(request)
        if too_long is not None:
            request.tier = Tier.REJECTED
            self.reasons[too_long.reason.value] += 1
            return too_long
        decision = self.enqueue(request, now_s)
        self.reasons[decision.reason.value] += 1
        if decision.accepted:
            self.requests[request.request_id] = request
        else:
            request.tier = Tier.REJECTED
        return decision

    def can_admit(self, request: Request, now_s: float) -> AdmitDecision:
        """Side-effect free: would ``add`` accept this request now, and with what slack?"""
        too_long = self.check_length(request)
        if too_long is not None:
            return too_long
        return AdmitDecision(AdmitReason.QUEUED)

    def abort(self, request_id: str, now_s: float) -> bool:
        """Drop a request wherever it is and free its KV. False if unknown or already done."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return False
        self.kv.free(request_id)
        self.on_removed(req)
        self.reasons["aborted"] += 1
        return True

    def release(self, request_id: str) -> Request | None:
        """Hand a request over to another replica (disaggregated prefill -> decode): free its
        KV and forget it without counting an abort. Returns the request, or None if unknown."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return None
        self.kv.free(request_id)
        self.on_removed(req)
        return req

    def summary(self, now_s: float, publish_spare: bool = True) -> ReplicaSummary:
        """What this replica publishes to routers after each step (policies may enrich it).
        ``publish_spare=False`` skips the optional, costlier fields only summary-only routers read
        (slos-serve: ``spare_prefill_tokens``); the simulator, publishing after every step of
        every replica, passes it when its router never reads them."""
        waiting = sum(1 for r in self.requests.values() if r.num_output_tokens == 0)
        outstanding = sum(r.remaining_compute_tokens + r.planning_remaining_output for r in self.requests.values())
        return ReplicaSummary(
            replica_id=self.ctx.replica_id,
            time_s=now_s,
            num_requests=len(self.requests),
            num_waiting=waiting,
            outstanding_tokens=outstanding,
            free_kv_tokens=self.kv.free_tokens,
            kv_capacity_tokens=self.kv.capacity_tokens,
        )

    @abstractmethod
    def enqueue(self, request: Request, now_s: float) -> AdmitDecision:
        """Policy-specific part of ``add``: place the request in the policy's queues."""

    @abstractmethod
    def schedule(self, now_s: float) -> StepPlan:
        """Choose the next batch. Must reserve KV (``self.kv.grow``) for every item."""

    def on_removed(self, request: Request) -> None:
        """Hook: a request left (finished or aborted); drop it from the policy's queues."""

    def on_step_done(self, plan: StepPlan, result: StepResult, now_s: float) -> list[RequestEvent]:
        """Advance every scheduled request by what the engine computed; emit events."""
        self.num_steps += 1
        events: list[RequestEvent] = []
        for item in plan.items:
            req = self.requests.get(item.request_id)
            if req is None:  # aborted while the step ran
                continue
            produced = int(result.produced_tokens.get(item.request_id, 0))
            if produced > 0:
                first = req.num_output_tokens == 0
                if req.output_tokens_known:
                    produced = min(produced, req.output_tokens - req.num_output_tokens)
                produced = max(produced, 1)  # a step that closes the gap always emits a token
                req.num_output_tokens += produced
                req.num_computed_tokens = req.num_tokens - 1
                if item.spec_draft_tokens:
                    req.spec_verify_steps += 1
                    req.spec_steps_total += item.spec_draft_tokens
                    req.spec_tokens_total += produced
                if first:
                    req.first_token_s = now_s
                    events.append(RequestEvent(EventKind.FIRST_TOKEN, req.request_id, now_s, 1, req.tier.value))
                    if produced > 1:
                        events.append(RequestEvent(EventKind.TOKENS, req.request_id, now_s, produced - 1))
                else:
                    events.append(RequestEvent(EventKind.TOKENS, req.request_id, now_s, produced))
            else:
                req.num_computed_tokens = min(req.num_computed_tokens + item.num_tokens, req.num_tokens)
            self.kv.shrink(req.request_id, req.num_tokens)
            if item.request_id in result.finished:
                req.finish_s = now_s
                self.requests.pop(req.request_id, None)
                self.kv.free(req.request_id)
                self.on_removed(req)
                events.append(
                    RequestEvent(EventKind.FINISHED, req.request_id, now_s, req.num_output_tokens, req.tier.value)
                )
        self.after_step(events, now_s)
        return events

    def after_step(self, events: list[RequestEvent], now_s: float) -> None:
        """Hook for policies that re-plan on completions."""

    def has_work(self) -> bool:
        return bool(self.requests)

    def kv_blocks(self) -> tuple[int, int]:
        """(held, capacity) KV blocks now: a driver's memory metric, cheap enough for every step
        (``stats`` builds the whole counter dict)."""
        return self.kv.used_blocks, self.kv.capacity_blocks

    def stats(self) -> dict:
        return {
            "policy": self.registry_name,
            "num_requests": len(self.requests),
            "kv_used_blocks": self.kv.used_blocks,
            "kv_capacity_blocks": self.kv.capacity_blocks,
            "num_steps": self.num_steps,
            "reasons": dict(sorted(self.reasons.items())),
        }

    # ---- shared helpers -----------------------------------------------------------------
    def check_length(self, request: Request) -> AdmitDecision | None:
        """TOO_LONG when the request could never fit this replica's context or KV."""
        total = request.prompt_tokens + request.planning_output_tokens
        limit = self.ctx.max_seq_len_tokens
        if limit is not None and total > limit:
            return AdmitDecision(AdmitReason.TOO_LONG, detail=f"{total} tokens > max_seq_len {limit}")
        if self.kv.blocks_for(total) > self.kv.capacity_blocks:
            return AdmitDecision(AdmitReason.TOO_LONG, detail=f"{total} tokens > KV capacity {self.kv.capacity_tokens}")
        return None

    def preempt(self, req: Request, now_s: float) -> RequestEvent:
        """Recompute-style preemption: drop the KV; the request catches up from scratch later."""
        self.kv.free(req.request_id)
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.reasons["preempted"] += 1
        return RequestEvent(EventKind.PREEMPTED, req.request_id, now_s, reason="no_kv")

    def reserve(self, req: Request, num_tokens: int) -> bool:
        """Reserve KV for computing ``num_tokens`` more tokens of ``req``."""
        return self.kv.grow(req.request_id, req.num_computed_tokens + num_tokens)


SCHEDULERS: Registry[Scheduler] = Registry(
    "policy", plugins=("sloserve.policies", "sloserve.planner", "sloserve.spec.slos")
)
register = SCHEDULERS.register


def create_scheduler(name: str, ctx: SchedulerContext, options: Mapping[str, Any] | None = None) -> Scheduler:
    """Instantiate a registered policy by name with its options (unknown options fail clearly)."""
    cls = SCHEDULERS.get(name)
    config = build_config(cls.Config, options, f"policy {name!r}")
    return cls(ctx, config)
