"""Round-robin: the simplest dispatcher, and the first hop of sequential SLO routing."""

from __future__ import annotations

from typing import Sequence

from sloserve.core.request import Request
from sloserve.routing.base import ReplicaView, RouteDecision, Router, healthy_replicas, register_router


@register_router("round-robin")
class RoundRobinRouter(Router):
    """Blind rotation over the healthy replicas."""

    def __init__(self, config=None, seed: int = 0) -> None:
        super().__init__(config, seed)
        self._next = 0

    def route(self, request: Request, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        healthy = healthy_replicas(replicas)  # a summary may have turned unhealthy since
        replica = healthy[self._next % len(healthy)]
        self._next += 1
        return RouteDecision(replica.replica_id, reason="round-robin")
