"""Round-robin: the simplest dispatcher, and the first hop of sequential SLO routing."""

from __future__ import annotations

from typing import Sequence

from sloserve.core.request import Request
from sloserve.routing.base import ReplicaView, RouteDecision, Router, register_router


@register_router("round-robin")
class RoundRobinRouter(Router):
    def __init__(self, config=None, seed: int = 0) -> None:
        super().__init__(config, seed)
        self._next = 0

    def route(self, request: Request, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        if not replicas:
            raise RuntimeError("no healthy replica to route to")
        replica = replicas[self._next % len(replicas)]
        self._next += 1
        return RouteDecision(replica.replica_id, reason="round-robin")
