"""The planner's tier state.

``TierState`` is the SLO tier and the best-effort tier: who is admitted, the KV promised to
them, the step in flight, the step length and the plan's first step, and the tier view the
planner plans on (cached until the state changes). Collaborators read it and change it only
through its methods.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, NamedTuple

from sloserve.core.kv import KVPool
from sloserve.core.plan import EventKind, RequestEvent, StepPlan
from sloserve.core.request import Request, Tier
from sloserve.planner.admission import leftover_to_s
from sloserve.planner.view import TierView, build_view, extend_view


class FirstStep(NamedTuple):
    """The first step of the grid the last plan was checked on: the next step follows it."""

    start_s: float
    end_s: float
    carries_all: bool  # stretched: it carries every decode


class TierState:
    """The SLO and best-effort tiers, their KV reservations and the step in flight."""

    def __init__(
        self,
        kv: KVPool,
        yield_kv: float,
        planned_output: Callable[[Request], int],
        mem_blocks: Callable[[Request], int],
        dl,
    ) -> None:
        self.kv, self.yield_kv = kv, yield_kv
        self.planned_output, self.mem_blocks, self.dl = planned_output, mem_blocks, dl
        self.slo: dict[str, Request] = {}  # admitted: deadlines guaranteed by the plan
        self.be: dict[str, Request] = {}  # best effort, FIFO by insertion
        self.undecided: dict[str, Request] = {}  # timer mode: waiting for the next re-plan
        self.reserved: dict[str, int] = {}  # KV blocks promised to admitted requests
        self.reserved_total = 0
        self.step_len_s: float | None = None  # L: at most the tightest TPOT in the SLO tier
        self.inflight: dict[str, int] = {}
        self.inflight_end_s: float | None = None
        self.first_step: FirstStep | None = None
        self.slack_s = math.inf
        self.pending_events: list[RequestEvent] = []
        self.on_extended: Callable[[Request, TierView, TierView], None] = lambda r, old, new: None
        self._view: TierView | None = None

    # ---- the view -------------------------------------------------------------------------
    def view(self) -> TierView:
        """The SLO tier after the step in flight, cached until the state changes."""
        if self._view is None:
            self._view = build_view(self.slo.values(), self.inflight, self.planned_output, self.dl)
        return self._view

    def invalidate(self) -> None:
        self._view = None

    def plan_start_s(self, now_s: float) -> float:
        """Plans start when the step in flight ends."""
        return self.inflight_end_s if self.inflight_end_s is not None else now_s

    # ---- membership -----------------------------------------------------------------------
    def admit(self, r: Request, before_reserve: Callable[[Request], None]) -> None:
        """``r`` joins the SLO tier; ``before_reserve`` fixes what its reservation is sized on."""
        if self._view is not None and r.num_output_tokens == 0 and r.request_id not in self.inflight:
            old = self._view
            self._view = extend_view(old, r, self.planned_output(r), self.dl)
            self.on_extended(r, old, self._view)
        else:
            self._view = None
        r.tier = Tier.SLO
        self.slo[r.request_id] = r
        before_reserve(r)
        blocks = self.mem_blocks(r)
        self.reserved[r.request_id] = blocks
        self.reserved_total += blocks

    def to_best_effort(self, r: Request) -> None:
        r.tier = Tier.BEST_EFFORT
        self.be[r.request_id] = r

    def leave(self, r: Request) -> None:
        """``r`` leaves the SLO tier and its reservation (no event: ``demote`` reports one)."""
        self.reserved_total -= self.reserved.pop(r.request_id)
        del self.slo[r.request_id]
        self._view = None

    def rejoin(self, r: Request, now_s: float, reason: str) -> None:
        """A best-effort request tried in the SLO tier (``admit``) stays there: it leaves the
        best-effort tier (a ``TIER`` event)."""
        del self.be[r.request_id]
        self.pending_events.append(
            RequestEvent(EventKind.TIER, r.request_id, now_s, tier=Tier.SLO.value, reason=reason)
        )

    def unadmit(self, r: Request) -> None:
        """Undo ``admit`` of a request still in the best-effort tier, which keeps its place there."""
        self.leave(r)
        r.tier = Tier.BEST_EFFORT

    def demote(self, r: Request, now_s: float, reason: str) -> None:
        """An admitted request leaves the SLO tier for best effort (a ``TIER`` event)."""
        self.leave(r)
        self.to_best_effort(r)
        self.pending_events.append(RequestEvent(EventKind.TIER, r.request_id, now_s, tier=r.tier.value, reason=reason))

    def resize(self, request_id: str, blocks: int) -> None:
        """An admitted request's planned length moved: its reservation follows."""
        self.reserved_total += blocks - self.reserved[request_id]
        self.reserved[request_id] = blocks
        self._view = None

    def remove(self, request_id: str) -> None:
        self._view = None
        self.slo.pop(request_id, None)
        self.be.pop(request_id, None)
        self.undecided.pop(request_id, None)
        self.reserved_total -= self.reserved.pop(request_id, 0)
        self.clear_step_len_if_empty()

    def clear_step_len_if_empty(self) -> None:
        if not self.slo:
            self.step_len_s = None

    def commit(self, res, step, grid, by_id: dict[str, Request], before_reserve, reasons: Counter, now_s: float):
        """Apply a feasible plan: admit its selected candidates (promoted and timer-mode ones emit
        ``TIER``), adopt its step length, and make the next step follow the grid it was checked on."""
        for rid in res.selected:
            r = by_id[rid]
            promoted, waited = r.tier is Tier.BEST_EFFORT, rid in self.undecided
            self.be.pop(rid, None)
            self.undecided.pop(rid, None)
            self.admit(r, before_reserve)
            if promoted:
                reasons["promoted"] += 1
            if promoted or waited:  # a request added just now reports its tier in its decision
                reason = "promoted" if promoted else "timer"
                self.pending_events.append(RequestEvent(EventKind.TIER, rid, now_s, tier=Tier.SLO.value, reason=reason))
        if step is not None:
            self.step_len_s = step
        if grid is not None:
            self.slack_s = leftover_to_s(res.min_leftover_tokens, grid)
            self.first_step = FirstStep(grid.start_s, grid.first_end_s, grid.first_all)

    # ---- KV and the step in flight --------------------------------------------------------
    def reserved_kv_binds(self) -> bool:
        """The SLO tier's reserved KV is above ``best_effort_yield_kv`` of the pool."""
        return self.reserved_total > self.yield_kv * self.kv.capacity_blocks

    def set_inflight(self, plan: StepPlan, end_s: float) -> None:
        self.inflight = {i.request_id: i.num_tokens for i in plan.items}
        self.inflight_end_s = end_s
        self._view = None

    def clear_inflight(self) -> None:
        self.inflight, self.inflight_end_s = {}, None

    def take_events(self) -> list[RequestEvent]:
        out, self.pending_events = self.pending_events, []
        return out
