"""Proactive, burst-aware SLO routing: know every replica's admission margin before dispatching.

Per request, in one pass over the healthy replicas:

1. Assess each replica: its side-effect-free ``can_admit`` (admitted with slack, or refused),
   or, where that is unavailable (the live ZMQ router, SGLang's DP controller) or answers only
   ``QUEUED`` (a policy without admission control), an estimate from its published summary
   plus what this router sent it since (``SummaryAdmission`` over ``PendingLedger``).
2. Among the replicas that would admit, send it where the margin is best. During a burst of its
   tier, a tight-TPOT request's margin is charged ``spread_penalty_s`` per tight request recently
   sent to that replica, so a burst of tight work spreads over the replicas instead of filling
   the momentarily emptiest one (whose slack only shrinks once its planner has seen the work).
3. If no replica would admit: the least-loaded replica (effective outstanding tokens) gets it.
   During a burst it goes straight to that replica's best-effort tier, so it does not sit in an
   admission queue while the burst builds; outside a burst the replica decides on arrival.

The arrival rate per SLO tier (``BurstDetector``) is updated from ``now_s`` on every request.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from sloserve.core.plan import AdmitReason
from sloserve.core.request import Request
from sloserve.routing.base import ReplicaView, RouteDecision, Router, healthy_replicas, register_router
from sloserve.routing.burst import TOTAL, BurstConfig, BurstDetector, DecayingRate
from sloserve.routing.summary import EffectiveLoad, PendingLedger, SummaryAdmission


@dataclass(frozen=True)
class SLOProactiveConfig:
    use_can_admit: bool = field(
        default=True, metadata={"help": "ask replicas' can_admit; False: decide from published summaries only"}
    )
    tight_tpot_ms: float = field(
        default=60.0, metadata={"help": "a request whose tightest TPOT SLO is at most this is tight-SLO work"}
    )
    spread_penalty_s: float = field(
        default=0.05, metadata={"help": "in a burst, margin charged per tight request recently sent to a replica (s)"}
    )
    burst_fast_tau_s: float = field(default=2.0, metadata={"help": "short-term arrival-rate time constant (s)"})
    burst_slow_tau_s: float = field(default=30.0, metadata={"help": "long-term arrival-rate time constant (s)"})
    burst_ratio: float = field(default=2.0, metadata={"help": "burst when short-term rate >= ratio x long-term"})
    burst_min_events: float = field(default=6.0, metadata={"help": "and at least this many recent arrivals"})
    burst_best_effort: bool = field(
        default=True,
        metadata={
            "help": "in a burst, send what no replica admits to best effort directly (False: let the replica decide)"
        },
    )
    summary_headroom: float = field(
        default=0.1, metadata={"help": "fraction of a summary's spare prefill budget kept in reserve (estimate error)"}
    )
    summary_spare: bool = field(
        default=True,
        metadata={
            "help": "judge by a summary's spare prefill budget when published (False: backlog and rate only; ablation)"
        },
    )
    prefill_tokens_per_s: float = field(
        default=0.0, metadata={"help": "prefill throughput to assume when summaries do not publish one (0: unknown)"}
    )
    pending_ttl_s: float = field(
        default=30.0, metadata={"help": "forget a dispatch a replica's summary has not reflected after this long (s)"}
    )

    def __post_init__(self) -> None:
        if self.tight_tpot_ms <= 0 or self.spread_penalty_s < 0:
            raise ValueError("tight_tpot_ms must be > 0 and spread_penalty_s >= 0")
        self.burst_config()  # validates the burst fields

    def burst_config(self) -> BurstConfig:
        return BurstConfig(self.burst_fast_tau_s, self.burst_slow_tau_s, self.burst_ratio, self.burst_min_events)


@dataclass
class _Candidate:
    view: ReplicaView
    load: EffectiveLoad
    admitted: bool
    margin_s: float
    position: int  # rotation order, for ties


@register_router("slo-proactive")
class SLOProactiveRouter(Router):
    Config = SLOProactiveConfig

    def __init__(self, config=None, seed: int = 0) -> None:
        super().__init__(config, seed)
        cfg = self.config
        self.burst = BurstDetector(cfg.burst_config())
        self.ledger = PendingLedger(cfg.pending_ttl_s)
        self.estimator = SummaryAdmission(cfg.summary_headroom, cfg.prefill_tokens_per_s, cfg.summary_spare)
        self._recent_tight: dict[int, DecayingRate] = {}
        self._can_admit_ok = cfg.use_can_admit
        self._turn = 0
        self.decisions: Counter[str] = Counter()
        self.queries = 0

    @property
    def reads_spare_budget(self) -> bool:  # type: ignore[override]
        # With can_admit, summaries judge only views that cannot answer (summary-only transports)
        # or answer QUEUED (no admission control: such policies publish no spare budget).
        return self.config.summary_spare and not self.config.use_can_admit

    # ---- the decision -------------------------------------------------------------------
    def route(self, request: Request, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        healthy = healthy_replicas(replicas)
        self.burst.observe(request.slo_class, now_s)
        burst = self.burst.in_burst(request.slo_class, now_s) or self.burst.in_burst(TOTAL, now_s)
        tight = request.min_tpot_s * 1e3 <= self.config.tight_tpot_ms
        candidates = self._assess(request, healthy, now_s)
        self._turn += 1
        admitted = [c for c in candidates if c.admitted]
        if admitted:
            penalty = self.config.spread_penalty_s if (burst and tight) else 0.0
            pick = max(admitted, key=lambda c: self._score(c, penalty, now_s))
            reason, best_effort = ("admitted_burst" if burst else "admitted"), False
        else:
            pick = min(candidates, key=lambda c: (c.load.outstanding_tokens, c.load.num_requests, c.position))
            if burst and self.config.burst_best_effort:
                reason, best_effort = "best_effort_burst", True
            else:
                reason, best_effort = "least_loaded_refused", False
        rid = pick.view.replica_id
        self.ledger.record(rid, request, now_s)
        if tight:
            self._tight_counter(rid).add(now_s)
        self.decisions[reason] += 1
        return RouteDecision(rid, best_effort=best_effort, hops=1, reason=reason)

    def _score(self, c: _Candidate, penalty_s: float, now_s: float) -> tuple:
        crowd = (
            self._recent_tight[c.view.replica_id].mass(now_s)
            if (penalty_s and c.view.replica_id in self._recent_tight)
            else 0.0
        )
        return (c.margin_s - penalty_s * crowd, -c.load.outstanding_tokens, -c.position)

    def _tight_counter(self, replica_id: int) -> DecayingRate:
        counter = self._recent_tight.get(replica_id)
        if counter is None:
            tau = self.config.burst_fast_tau_s
            counter = self._recent_tight[replica_id] = DecayingRate(tau, tau)
        return counter

    # ---- assessment ---------------------------------------------------------------------
    def _assess(self, request: Request, healthy: Sequence[ReplicaView], now_s: float) -> list[_Candidate]:
        n = len(healthy)
        start = self._turn % n
        out: list[_Candidate] = []
        for i, view in enumerate(healthy):
            summary = view.summary()
            load = self.ledger.effective(summary, now_s)
            admitted, margin = self._ask(request, view, now_s)
            if admitted is None:  # no usable can_admit answer: judge from the summary
                est = self.estimator.estimate(request, summary, load, now_s)
                admitted = est.admitted
                # Nothing to judge time by: rank by load alone (least outstanding tokens wins).
                margin = est.margin_s if est.known else 0.0
            out.append(_Candidate(view, load, admitted, margin, (i - start) % n))
        return out

    def _ask(self, request: Request, view: ReplicaView, now_s: float) -> tuple[bool | None, float]:
        """(admitted, slack) from can_admit; (None, 0) when it is unavailable or uninformative."""
        if not self._can_admit_ok:
            return None, 0.0
        ask = getattr(view, "can_admit", None)
        if ask is None:
            return None, 0.0
        try:
            decision = ask(request, now_s)
        except NotImplementedError:
            self._can_admit_ok = False  # a summary-only transport: stop asking
            return None, 0.0
        self.queries += 1
        if decision.reason is AdmitReason.ADMITTED:
            return True, decision.slack_s
        if decision.reason is AdmitReason.QUEUED:
            return None, 0.0  # no admission control there: the summary says more
        return False, 0.0

    def stats(self) -> dict:
        return {**dict(sorted(self.decisions.items())), "can_admit_queries": self.queries}
