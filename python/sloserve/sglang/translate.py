"""Pure translation between SGLang's view of requests and sloserve's (no sglang import).

SGLang objects are reduced to ``ReqSnapshot`` (plain ints) by the SGLang-side code, so every
rule here is testable without SGLang: building a sloserve ``Request`` from ``custom_params``,
turning a ``StepPlan`` into the decisions SGLang's hooks take (``PlanDecision``), the waiting
queue order, retraction order and the per-request ``meta_info`` fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from sloserve.core.plan import StepPlan
from sloserve.core.request import Request, Tier
from sloserve.runtime.slo_params import SloDefaults, parse_slo

MAX_ARRIVAL_SKEW_S = 1.0  # an HTTP-front stamp may be this far ahead of the scheduler's clock
_TIER_RANK = {Tier.SLO: 0, Tier.PENDING: 1, Tier.BEST_EFFORT: 2, Tier.REJECTED: 3}


@dataclass(frozen=True)
class ReqSnapshot:
    """What the shadow planner needs from one SGLang request, as plain numbers."""

    rid: str
    prompt_tokens: int
    num_output_tokens: int
    num_computed_tokens: int  # tokens with KV (prefix hits included)
    running: bool  # in SGLang's running batch (decoding) rather than waiting/chunked


@dataclass(frozen=True)
class PlanDecision:
    """A StepPlan restated as the decisions SGLang's hooks make."""

    prefill_tokens: Mapping[str, int] = field(default_factory=dict)  # waiting rid -> tokens this step
    order: tuple[str, ...] = ()  # waiting rids in plan order (they go first in the queue)
    defer_prefill: bool = False  # run a decode-only step although requests wait
    spec_steps: int = 0

    @property
    def prefill_budget_tokens(self) -> int:
        return sum(self.prefill_tokens.values())


def build_request(
    rid: str,
    prompt_tokens: int,
    max_new_tokens: int,
    custom_params: Mapping[str, Any] | None,
    now_s: float,
    zero_load_prefill_s,
    defaults: SloDefaults = SloDefaults(),
) -> Request:
    """A sloserve Request for an SGLang request; raises SloParamError on a bad slo_* key.

    Deadlines start at ``slo_arrival_s`` (stamped at the HTTP front, Unix seconds) when given,
    so queueing before the scheduler counts against the TTFT; else at ``now_s``.
    """
    slo = parse_slo(custom_params, defaults)
    arrival = now_s
    if slo.arrival_unix_s is not None:
        arrival = min(slo.arrival_unix_s, now_s + MAX_ARRIVAL_SKEW_S)
    prompt = max(int(prompt_tokens), 1)
    req = Request(
        request_id=rid,
        arrival_s=arrival,
        prompt_tokens=prompt,
        output_tokens=max(int(max_new_tokens), 1),
        ttft_slo_s=slo.ttft_slo_s(prompt, zero_load_prefill_s),
        segments=slo.segments(),
        slo_class=slo.slo_class,
        program_id=slo.program_id or rid,
        stage_index=slo.stage_index,
        stage_name=slo.stage,
        output_tokens_known=False,  # SGLang stops on EOS: only the cap is known
        max_new_tokens=max(int(max_new_tokens), 1),
    )
    if slo.best_effort:
        req.extra["route_best_effort"] = True
    return req


def plan_to_decision(plan: StepPlan, waiting: Iterable[str], running_nonempty: bool) -> PlanDecision:
    """Prefill tokens per waiting request, their order, and whether to skip prefill this step."""
    waiting_set = set(waiting)
    tokens: dict[str, int] = {}
    order: list[str] = []
    for item in plan.items:
        if item.request_id in waiting_set and item.num_tokens > 0 and item.request_id not in tokens:
            tokens[item.request_id] = item.num_tokens
            order.append(item.request_id)
    defer = bool(waiting_set) and not tokens and running_nonempty
    return PlanDecision(tokens, tuple(order), defer, plan.spec_steps)


def waiting_order(rids: Sequence[str], decision: PlanDecision, requests: Mapping[str, Request]) -> list[int]:
    """Indices of ``rids`` sorted: planned first (plan order), then tier, TTFT deadline, arrival.

    Deterministic (ties broken by position) so every TP rank sorts alike.
    """
    planned = {rid: i for i, rid in enumerate(decision.order)}

    def key(i: int):
        rid = rids[i]
        if rid in planned:
            return (0, planned[rid], 0, 0.0, i)
        req = requests.get(rid)
        if req is None:  # unknown to the planner (e.g. a request SGLang re-queued): last
            return (2, 0, 0, math.inf, i)
        return (1, 0, _TIER_RANK.get(req.tier, 1), req.ttft_deadline_s, i)

    return sorted(range(len(rids)), key=key)


def retraction_order(rids: Sequence[str], requests: Mapping[str, Request], now_s: float) -> list[int]:
    """Indices from most- to least-preferred to keep (SGLang retracts from the end).

    Best-effort requests go first, then SLO requests with the most slack to their next token's
    deadline (they can afford the recompute), keeping the tightest ones running.
    """
    def key(i: int):
        req = requests.get(rids[i])
        if req is None:
            return (3, 0.0, i)
        slack = req.next_token_deadline_s - now_s
        return (_TIER_RANK.get(req.tier, 1), slack, i)

    return sorted(range(len(rids)), key=key)


def slo_meta(req: Request | None, now_s: float) -> dict[str, Any]:
    """Per-request fields reported in SGLang's ``meta_info`` (msgpack-safe scalars only)."""
    if req is None:
        return {"slo_tier": "unknown", "slo_ttft_deadline_s": None, "slo_verdict": "unknown"}
    ttft_ok = req.first_token_s is None or req.first_token_s <= req.ttft_deadline_s + 1e-9
    if req.first_token_s is None and now_s > req.ttft_deadline_s:
        ttft_ok = False
    verdict = "on_track" if ttft_ok and req.next_token_deadline_s >= now_s - 1e-9 else "late"
    return {
        "slo_tier": req.tier.value,
        "slo_class": req.slo_class,
        "slo_ttft_deadline_s": round(req.ttft_deadline_s, 6),
        "slo_next_deadline_s": round(req.next_token_deadline_s, 6),
        "slo_verdict": verdict,
    }
