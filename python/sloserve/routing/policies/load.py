"""Load-balancing dispatchers that read replica summaries: SGLang's DP balance methods and
power-of-two choices.

All three add what they routed since each summary's time (``PendingLedger``), like SGLang's
``DPBudget`` bumps a rank's count on dispatch until its next load snapshot: without it every
request of a burst between two snapshots lands on the replica that looked emptiest.
Ties go to the replica after the last choice in rotation, not always to replica 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

from sloserve.core.request import Request
from sloserve.routing.base import ReplicaView, RouteDecision, Router, healthy_replicas, register_router
from sloserve.routing.summary import EffectiveLoad, PendingLedger


@dataclass(frozen=True)
class LoadRouterConfig:
    pending_ttl_s: float = field(
        default=30.0, metadata={"help": "forget a dispatch a replica's summary has not reflected after this long (s)"}
    )


class _LeastLoadRouter(Router):
    """Pick the replica with the smallest ``_load`` key of its effective load."""

    Config = LoadRouterConfig
    reason = ""

    def __init__(self, config=None, seed: int = 0) -> None:
        super().__init__(config, seed)
        self.ledger = PendingLedger(self.config.pending_ttl_s)
        self._turn = 0

    @staticmethod
    def _load(load: EffectiveLoad) -> tuple:
        raise NotImplementedError

    def route(self, request: Request, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        healthy = healthy_replicas(replicas)
        n = len(healthy)
        start = self._turn % n
        best_key, best = None, healthy[0]
        for i, view in enumerate(healthy):
            load = self.ledger.effective(view.summary(), now_s)
            key = (self._load(load), (i - start) % n)
            if best_key is None or key < best_key:
                best_key, best = key, view
        self._turn += 1
        self.ledger.record(best.replica_id, request, now_s)
        return RouteDecision(best.replica_id, reason=self.reason)


@register_router("total-tokens")
class TotalTokensRouter(_LeastLoadRouter):
    """Least outstanding tokens (SGLang ``--load-balance-method total_tokens``)."""

    reason = "least_tokens"

    @staticmethod
    def _load(load: EffectiveLoad) -> tuple:
        return (load.outstanding_tokens, load.num_requests)


@register_router("total-requests")
class TotalRequestsRouter(_LeastLoadRouter):
    """Fewest resident requests (SGLang ``--load-balance-method total_requests``)."""

    reason = "least_requests"

    @staticmethod
    def _load(load: EffectiveLoad) -> tuple:
        return (load.num_requests,)


@dataclass(frozen=True)
class PowerOfTwoConfig:
    pending_ttl_s: float = field(
        default=30.0, metadata={"help": "forget a dispatch a replica's summary has not reflected after this long (s)"}
    )
    choices: int = field(default=2, metadata={"help": "replicas sampled per request (d in power-of-d)"})

    def __post_init__(self) -> None:
        if self.choices < 1:
            raise ValueError("choices must be >= 1")


@register_router("power-of-two")
class PowerOfTwoRouter(Router):
    """Sample ``choices`` distinct replicas with a seeded generator; take the least loaded
    (outstanding tokens). Cheap at any replica count, and it never herds onto one stale
    favourite because the sample differs per request."""

    Config = PowerOfTwoConfig

    def __init__(self, config=None, seed: int = 0) -> None:
        super().__init__(config, seed)
        self.rng = random.Random(seed)
        self.ledger = PendingLedger(self.config.pending_ttl_s)

    def route(self, request: Request, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        healthy = healthy_replicas(replicas)
        k = min(self.config.choices, len(healthy))
        best, best_key = healthy[0], None
        for pos, i in enumerate(self.rng.sample(range(len(healthy)), k)):
            key = (self.ledger.effective(healthy[i].summary(), now_s).outstanding_tokens, pos)
            if best_key is None or key < best_key:
                best, best_key = healthy[i], key
        self.ledger.record(best.replica_id, request, now_s)
        return RouteDecision(best.replica_id, reason=f"power_of_{k}")
