"""Pure translation between SGLang's view of requests and sloserve's (no sglang import).

SGLang objects are reduced to ``ReqSnapshot`` (plain ints) by the SGLang-side code, so every
rule here is testable without SGLang: building a sloserve ``Request`` from ``custom_params``,
turning a ``StepPlan`` into the decisions SGLang's hooks take (``PlanDecision``), the waiting
queue order, retraction order and the per-request SLO report in ``meta_info``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from sloserve.core.plan import StepPlan
from sloserve.core.request import Request, Tier
from sloserve.metrics.report import SLO_REPORT_KEYS, TokenLog, segment_fields
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
    aborting: bool = False  # SGLang is ending it with an abort (client gone, bad input, engine error)


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


def stamp_arrival(sampling_params: Any, now_unix_s: float) -> int:
    """Stamp ``slo_arrival_s`` into each request's ``custom_params`` where the client gave none.

    Called at the HTTP front (SGLang's tokenizer manager) as a request comes in, so its TTFT
    deadline starts where the client's clock starts: tokenizing, queueing in front of the
    scheduler and the scheduler's current step all count against it, as they do for the client.
    ``sampling_params`` is one request's dict or a batch's list of them (anything else is left
    for SGLang's own validation); returns how many were stamped.
    """
    items = sampling_params if isinstance(sampling_params, list) else [sampling_params]
    stamped = 0
    for params in items:
        if not isinstance(params, dict):
            continue
        custom = params.get("custom_params")
        if custom is None:
            custom = params["custom_params"] = {}
        if isinstance(custom, dict) and custom.get("slo_arrival_s") is None:
            custom["slo_arrival_s"] = now_unix_s
            stamped += 1
    return stamped


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
    req.route_best_effort = bool(slo.best_effort or slo.routed_best_effort)
    req.user_best_effort = bool(slo.best_effort)  # the client's own choice: never expired
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


def with_aborted(decision: PlanDecision, aborted: Mapping[str, int]) -> PlanDecision:
    """Let requests SGLang already aborted through first, whatever the plan says.

    SGLang finishes an aborted request (a bad field, a prompt too long...) by running it
    through one prefill step of its one remaining token, which emits the error to the client.
    The planner never knows such a request, so without this it would wait forever: the client
    hangs and the scheduler loop spins on a non-empty queue.
    """
    if not aborted:
        return decision
    tokens = {rid: max(int(n), 1) for rid, n in aborted.items()}
    tokens.update((rid, n) for rid, n in decision.prefill_tokens.items() if rid not in tokens)
    order = tuple(aborted) + tuple(r for r in decision.order if r not in aborted)
    return PlanDecision(tokens, order, False, decision.spec_steps)


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


def slo_report(
    req: Request | None, log: TokenLog | None, admission: str | None, replica: int, done: bool, engine: str = "sglang"
) -> dict[str, Any]:
    """The request's SLO report for ``meta_info`` (``SLO_REPORT_KEYS``, plain scalars)."""
    out: dict[str, Any] = dict.fromkeys(SLO_REPORT_KEYS)
    out.update(engine=engine, replica=replica, admission=admission)
    if req is None:
        out["tier"] = "unknown"
        return out
    out.update(
        tier=req.tier.value,
        slo_class=req.slo_class,
        slo_stage=req.stage_name,
        slo_program_id=req.program_id,
        slo_ttft_ms=req.ttft_slo_s * 1e3,
        ttft_deadline_ms=req.ttft_slo_s * 1e3,
    )
    out.update(segment_fields(req.segments))
    log = log or TokenLog()
    out.update(log.measured(req.arrival_s))
    if done:
        out.update(log.final(req.arrival_s, req.ttft_slo_s, req.segments))
    return out
