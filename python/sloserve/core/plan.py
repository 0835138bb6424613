"""Plans, results, events and admission decisions: frozen plain data, units in names."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping


class AdmitReason(str, Enum):
    """Why a request was placed where it was. Counted in stats and shown in responses."""

    ADMITTED = "admitted"  # in the SLO tier; the plan guarantees its deadlines
    QUEUED = "queued"  # accepted, waiting (FCFS-style baselines decide later)
    BEST_EFFORT = "best_effort"  # served from leftover capacity, no guarantee
    NO_KV = "no_kv"  # not admitted: KV memory would not fit
    NO_TIME = "no_time"  # not admitted: prefill budget before its deadline is short
    INFEASIBLE_SLO = "infeasible_slo"  # cannot meet even alone on an idle replica
    TOO_LONG = "too_long"  # prompt plus output exceed the maximum sequence length/KV
    REJECTED = "rejected"  # refused outright (reject mode / routing)

    @property
    def accepted(self) -> bool:
        """True when the request will be served in some tier."""
        return self in (AdmitReason.ADMITTED, AdmitReason.QUEUED, AdmitReason.BEST_EFFORT)


@dataclass(frozen=True)
class AdmitDecision:
    reason: AdmitReason
    slack_s: float = 0.0  # margin before the tightest deadline the admission would touch
    detail: str = ""

    @property
    def admitted(self) -> bool:
        return self.reason is AdmitReason.ADMITTED

    @property
    def accepted(self) -> bool:
        return self.reason.accepted


@dataclass(frozen=True)
class ScheduledItem:
    """``num_tokens`` tokens of one request computed in this step.

    For a speculative verify, ``num_tokens = 1 + spec_draft_tokens``: the last real token
    plus the drafts; the step produces between 1 and ``num_tokens`` new tokens.
    """

    request_id: str
    num_tokens: int
    spec_draft_tokens: int = 0
    context_tokens: int = 0  # tokens already in KV before this step (for attention cost)


@dataclass(frozen=True)
class StepPlan:
    items: tuple[ScheduledItem, ...] = ()
    events: tuple["RequestEvent", ...] = ()  # decided while scheduling (preempt, reject, tier)
    spec_steps: int = 0  # draft-model steps this batch runs (max draft length in the batch)
    # When the plan is empty although work is pending, the driver calls schedule() again at
    # this time at the latest (a policy that idles on purpose, e.g. a re-plan timer).
    wakeup_s: float | None = None

    @property
    def num_tokens(self) -> int:
        return sum(item.num_tokens for item in self.items)

    @property
    def is_empty(self) -> bool:
        return not self.items


@dataclass(frozen=True)
class StepResult:
    """What the engine reports for a plan.

    ``produced_tokens`` maps a request to the output tokens this step produced for it (a
    request whose scheduled tokens did not close its compute gap is absent). ``finished``
    lists requests whose output ended (length or stop) with this step.
    """

    step_s: float
    produced_tokens: Mapping[str, int] = field(default_factory=dict)
    finished: frozenset[str] = frozenset()


class EventKind(str, Enum):
    FIRST_TOKEN = "first_token"
    TOKENS = "tokens"
    FINISHED = "finished"
    PREEMPTED = "preempted"
    REJECTED = "rejected"
    TIER = "tier"  # tier changed (value in ``tier``)
    ABORTED = "aborted"


@dataclass(frozen=True)
class RequestEvent:
    kind: EventKind
    request_id: str
    time_s: float
    num_tokens: int = 0
    tier: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ReplicaSummary:
    """What a replica publishes after each plan. ``time_s`` says how fresh it is."""

    replica_id: int
    time_s: float = 0.0
    num_requests: int = 0  # resident (running + waiting)
    num_waiting: int = 0
    outstanding_tokens: int = 0  # prefill tokens not yet computed + planned decode tokens left
    free_kv_tokens: int = 0
    kv_capacity_tokens: int = 0
    admitted_by_tier: Mapping[str, int] = field(default_factory=dict)
    slack_s: float = 0.0  # the replica's smallest deadline margin
    healthy: bool = True
    # Optional, for routers that must decide from summaries alone (no can_admit: the live ZMQ
    # router, SGLang's DP controller). Defaults mean "not published". See docs/routing.md.
    prefill_backlog_tokens: int | None = None  # prompt tokens accepted but not yet computed
    prefill_tokens_per_s: float = 0.0  # prefill throughput at the current decode load
    # (horizon_s, tokens) ascending: new prefill tokens the replica could still finish within
    # horizon_s of time_s while every admitted request keeps its deadlines (planner leftover).
    spare_prefill_tokens: tuple[tuple[float, int], ...] = ()
