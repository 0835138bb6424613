"""Pure core: request/SLO model, plan and result types, scheduler interface, registry.

Imports only the standard library and numpy.
"""

from sloserve.core.plan import (
    AdmitDecision,
    AdmitReason,
    EventKind,
    ReplicaSummary,
    RequestEvent,
    ScheduledItem,
    StepPlan,
    StepResult,
)
from sloserve.core.request import Request, Tier
from sloserve.core.slo import TTFTSLO, DecodeSegment, ProgramSpec, StageSpec

__all__ = [
    "AdmitDecision",
    "AdmitReason",
    "DecodeSegment",
    "EventKind",
    "ProgramSpec",
    "Request",
    "ReplicaSummary",
    "RequestEvent",
    "ScheduledItem",
    "StageSpec",
    "StepPlan",
    "StepResult",
    "TTFTSLO",
    "Tier",
]
