"""Per-request planner state, owned by the planner (not carried on ``Request``).

What the planner decides about a request beyond what the request says (a learned output length
fixed at admission, re-paced deadlines) lives here, keyed by request id, so every reader goes
through one typed table and the request holds no planner state.
"""

from __future__ import annotations

from typing import NamedTuple


class Repace(NamedTuple):
    """Re-paced deadlines (planner/repace.py): token ``j > index`` is due by
    ``min(its planned deadline, origin_s + (j - index) * tau_s)``."""

    index: int
    origin_s: float
    tau_s: float


class PlanTable:
    """Per-request planner state, by request id (dropped when the request leaves)."""

    def __init__(self) -> None:
        self.pred: dict[str, int | None] = {}  # planned output length fixed at admission (learn mode)
        self.repace: dict[str, Repace] = {}

    def drop(self, request_id: str) -> None:
        self.pred.pop(request_id, None)
        self.repace.pop(request_id, None)
