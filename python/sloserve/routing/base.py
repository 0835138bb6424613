"""Routing interface: pure policies that pick a replica for each arriving request.

The same policy object runs in the simulator's cluster, in the runtime's ZMQ router process
and in SGLang's data-parallel controller. A policy sees replicas only through ``ReplicaView``:
a side-effect-free ``can_admit`` and a published ``ReplicaSummary`` (possibly a few steps old).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Protocol, Sequence

from sloserve.core.plan import AdmitDecision, ReplicaSummary  # noqa: F401 (re-exported)
from sloserve.core.registry import Registry, build_config
from sloserve.core.request import Request


class ReplicaView(Protocol):
    replica_id: int

    def can_admit(self, request: Request, now_s: float) -> AdmitDecision: ...

    def summary(self) -> ReplicaSummary: ...


@dataclass(frozen=True)
class RouteDecision:
    replica_id: int
    best_effort: bool = False  # ask the replica to place it in its best-effort tier directly
    hops: int = 1  # replicas asked (sequential routing)
    reason: str = ""


@dataclass(frozen=True)
class EmptyRouterConfig:
    pass


class Router(ABC):
    Config: ClassVar[type] = EmptyRouterConfig
    registry_name: ClassVar[str] = ""
    # Whether decisions read ``ReplicaSummary.spare_prefill_tokens`` of replicas that answer
    # ``can_admit`` (the simulator's; it skips computing the field after every step otherwise).
    reads_spare_budget: ClassVar[bool] = False

    def __init__(self, config: Any = None, seed: int = 0) -> None:
        self.config = config if config is not None else self.Config()
        self.seed = seed

    @abstractmethod
    def route(self, request: Request, replicas: Sequence[ReplicaView], now_s: float) -> RouteDecision:
        """Pick a replica. ``replicas`` are the healthy ones, in replica-id order."""

    def on_finished(self, request: Request, replica_id: int, now_s: float) -> None:
        """Hook: a request routed earlier has finished."""

    def stats(self) -> dict:
        """Counters for reports (decisions by reason, bursts seen...)."""
        return {}


class NoReplicaError(RuntimeError):
    """No healthy replica to route to (empty list, or every summary says unhealthy)."""


def healthy_replicas(replicas: Sequence[ReplicaView]) -> list[ReplicaView]:
    """The replicas whose published summary says healthy; NoReplicaError when none is.

    Drivers should pass only healthy replicas, but a summary can turn unhealthy between the
    driver's check and the decision (a crashed scheduler process), so policies that read
    summaries filter again.
    """
    if not replicas:
        raise NoReplicaError("no replica to route to (empty replica list)")
    healthy = [r for r in replicas if r.summary().healthy]
    if not healthy:
        ids = ", ".join(str(r.replica_id) for r in replicas)
        raise NoReplicaError(f"no healthy replica to route to (all unhealthy: {ids})")
    return healthy


ROUTERS: Registry[Router] = Registry("router", plugins=("sloserve.routing.policies",))
register_router = ROUTERS.register


def create_router(name: str, options: Mapping[str, Any] | None = None, seed: int = 0) -> Router:
    cls = ROUTERS.get(name)
    return cls(build_config(cls.Config, options, f"router {name!r}"), seed)
