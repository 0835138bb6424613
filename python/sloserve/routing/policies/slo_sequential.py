"""The paper's SLO routing: trial and error over replicas' admission.

First hop round-robin; the replica's planner is asked ``can_admit``; on refusal the next
replica (in id order after it) is asked, up to ``max_hops`` replicas. A replica that accepts
without an admission guarantee (``QUEUED``: a policy with no admission control) counts as
accepting, so over such policies this is round-robin. If every hop refuses, the request goes to
the last replica asked, in its best-effort tier: best effort only on the last hop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from sloserve.core.plan import AdmitReason
from sloserve.core.request import Request
from sloserve.routing.base import ReplicaView, RouteDecision, Router, healthy_replicas, register_router

_ACCEPTING = (AdmitReason.ADMITTED, AdmitReason.QUEUED)


@dataclass(frozen=True)
class SLOSequentialConfig:
    max_hops: int = field(
        default=3, metadata={"help": "replicas asked per request, first hop included (0: all replicas)"}
    )

    def __post_init__(self) -> None:
        if self.max_hops < 0:
            raise ValueError("max_hops must be >= 0")


@register_router("slo-sequential")
class SLOSequentialRouter(Router):
    Config = SLOSequentialConfig

    def __init__(self, config=None, seed: int = 0) -> None:
        super().__init__(config, seed)
        self._next = 0
        self.hops_total = 0
        self.decisions = {"admitted": 0, "best_effort_last_hop": 0}

    def route(self, request: Request, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        healthy = healthy_replicas(replicas)
        n = len(healthy)
        start = self._next % n
        self._next += 1
        limit = n if self.config.max_hops == 0 else min(self.config.max_hops, n)
        view = healthy[start]
        for hop in range(limit):
            view = healthy[(start + hop) % n]
            decision = view.can_admit(request, now_s)
            if decision.reason in _ACCEPTING:
                self.hops_total += hop + 1
                self.decisions["admitted"] += 1
                return RouteDecision(view.replica_id, hops=hop + 1, reason=decision.reason.value)
        self.hops_total += limit
        self.decisions["best_effort_last_hop"] += 1
        return RouteDecision(view.replica_id, best_effort=True, hops=limit, reason="best_effort_last_hop")

    def stats(self) -> dict:
        routed = sum(self.decisions.values())
        return {**self.decisions, "mean_hops": self.hops_total / routed if routed else 0.0}
