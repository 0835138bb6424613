"""The ``slos-serve`` policy: DP admission into an SLO tier, TPOT-sized steps, best-effort tier.

Event-driven: every arrival runs the DP (the new request plus best-effort requests that could
still be promoted); every completion re-plans (promotions, a longer step once the tightest TPOT
has left). Between events ``schedule`` only fills steps. With ``replan_interval_s`` > 0
decisions wait for a timer instead (the authors' behaviour, ablation).

This class wires collaborators, one concern each, that use only each other's public methods:
``TierState`` (tiers, reservations, step in flight, view: state.py), ``PlanTable`` (per-request
planner state: table.py), ``LengthPlanner`` (lengths.py), ``KVProfile`` (kvprofile.py),
``AdmissionPlanner`` (planning.py), ``StepExecutor`` (executor.py), ``OverrunTracker``
(overrun.py), ``Repacer`` (repace.py) and ``SummaryPublisher`` (publish.py).
"""

from __future__ import annotations

import math
from dataclasses import replace

from sloserve.core.plan import AdmitDecision, AdmitReason, EventKind, ReplicaSummary, RequestEvent, StepPlan
from sloserve.core.request import Request, Tier
from sloserve.core.scheduler import Scheduler, register
from sloserve.planner.admission import Admission, leftover_to_s
from sloserve.planner.batch import EPS_S, StepGrid
from sloserve.planner.calibrate import CalibratedModel
from sloserve.planner.config import SLOsServeConfig
from sloserve.planner.deadlines import Deadlines
from sloserve.planner.executor import StepExecutor
from sloserve.planner.kvprofile import KVProfile
from sloserve.planner.lengths import LengthPlanner
from sloserve.planner.overrun import OverrunTracker
from sloserve.planner.planning import AdmissionPlanner, PlanChoice
from sloserve.planner.publish import SummaryPublisher
from sloserve.planner.repace import Repacer
from sloserve.planner.state import TierState
from sloserve.planner.table import PlanTable


@register("slos-serve")
class SLOsServeScheduler(Scheduler):
    Config = SLOsServeConfig

    def __init__(self, ctx, config=None) -> None:
        super().__init__(ctx, config)
        cfg = self.config
        # the planner sees the model scaled by what steps really took (planner/calibrate.py)
        self.calib = CalibratedModel.from_config(ctx.perf, cfg) if cfg.calibrate else None
        if self.calib is not None:
            self.ctx = replace(ctx, perf=self.calib)
        perf = self.ctx.perf
        self.table = PlanTable()
        self.dl = Deadlines(cfg.planning_tolerance, self.table)
        self.lengths = LengthPlanner(cfg, self.table, self.kv)
        self.tiers = TierState(
            self.kv, cfg.best_effort_yield_kv, self.lengths.planned_output, self.lengths.mem_blocks, self.dl
        )
        self.kvp = KVProfile.from_config(cfg, self.ctx, self.tiers, self.lengths, self.dl)
        self.tiers.on_extended = self.kvp.on_admitted
        self.planner = AdmissionPlanner(cfg, perf, self.tiers, self.lengths, self.dl, self.kvp)
        feasible = self.plan_feasible
        self.repacer = (
            Repacer(cfg, self.tiers, self.table, self.kvp, self.lengths, feasible, self.reasons) if cfg.repace else None
        )
        self.overruns = OverrunTracker(cfg, self.tiers, self.lengths, self.kvp, feasible, self.reasons)
        self.executor = StepExecutor(
            cfg, perf, self.tiers, self.dl, self.calib, self.reasons, self.plan, self.preempt, self.may_stretch
        )
        self.publisher = SummaryPublisher(cfg, perf, self.tiers, self.planner)
        self.next_replan_s = 0.0

    # ---- planning (``plan`` and ``_commit`` are what slos-serve+spec extends) -----------------
    def plan(self, cands: list[Request], now_s: float, stretch_only: bool = False) -> PlanChoice:
        """Pure: the best admission over step lengths and first-step shapes (no state changes)."""
        return self.planner.plan(cands, now_s, stretch_only)

    def plan_feasible(self, now_s: float) -> bool:
        """The admitted plan alone is feasible (re-pacing and length extensions keep only then)."""
        return self.plan([], now_s).admission.feasible

    def may_stretch(self) -> bool:
        """Whether the executor may stretch a step (slos-serve+spec: not under a speculative plan)."""
        return True

    def _commit(
        self, res: Admission, step: float | None, grid: StepGrid | None, cands: list[Request], now_s: float
    ) -> set[str]:
        """Apply a plan: admit the selected, adopt its step length. Returns the admitted ids."""
        if not res.feasible:
            self.reasons["plan_infeasible"] += 1
            if self.repacer is not None:
                self.repacer.release()
            return set()
        by_id = {r.request_id: r for r in cands}
        self.tiers.commit(res, step, grid, by_id, self.lengths.fix_at_admission, self.reasons, now_s)
        return set(res.selected)

    def _replan(self, now_s: float, new: list[Request], promote: bool = True) -> set[str]:
        limit = self.config.max_candidates - len(new)
        cands = new + (self.planner.promotable(now_s, limit) if promote else [])
        res, step, grid = self.plan(cands, now_s)
        return self._commit(res, step, grid, cands, now_s)

    # ---- the interface --------------------------------------------------------------------
    def enqueue(self, request: Request, now_s: float) -> AdmitDecision:
        if self.config.admit_all:
            self.tiers.admit(request, self.lengths.fix_at_admission)
            self.tiers.step_len_s = min(self.tiers.step_len_s or math.inf, self.dl.min_tpot_s(request))
            return AdmitDecision(AdmitReason.ADMITTED)
        if request.route_best_effort:
            return self._not_admitted(request, AdmitReason.REJECTED, "routed to best effort", "routed")
        if self.planner.infeasible_alone(request):
            return self._not_admitted(request, AdmitReason.INFEASIBLE_SLO, "cannot meet its SLO even alone")
        if self.config.replan_interval_s > 0:
            request.tier = Tier.PENDING
            self.tiers.undecided[request.request_id] = request
            return AdmitDecision(AdmitReason.QUEUED, detail="waiting for the re-plan timer")
        # an arrival frees nothing, so best-effort requests are re-offered on completions only
        if request.request_id in self._replan(now_s, [request], promote=False):
            return AdmitDecision(AdmitReason.ADMITTED, slack_s=self.tiers.slack_s)
        return self._not_admitted(request, self.planner.why_not(request), "plan cannot fit it")

    def _not_admitted(self, r: Request, why: AdmitReason, detail: str, tag: str = "") -> AdmitDecision:
        if self.config.unadmitted == "reject":
            return AdmitDecision(why, detail=detail)
        self.reasons[f"best_effort_{tag or why.value}"] += 1
        self.tiers.to_best_effort(r)
        return AdmitDecision(AdmitReason.BEST_EFFORT, detail=f"{why.value}: {detail}")

    def can_admit(self, request: Request, now_s: float) -> AdmitDecision:
        too_long = self.check_length(request)
        if too_long is not None:
            return too_long
        if self.config.admit_all:
            return AdmitDecision(AdmitReason.ADMITTED)
        if self.planner.infeasible_alone(request):
            return AdmitDecision(AdmitReason.INFEASIBLE_SLO)
        res, _, grid = self.plan([request], now_s)
        if request.request_id in res.selected:
            return AdmitDecision(AdmitReason.ADMITTED, slack_s=leftover_to_s(res.min_leftover_tokens, grid))
        return AdmitDecision(self.planner.why_not(request))

    def on_removed(self, request: Request) -> None:
        self.tiers.remove(request.request_id)
        self.lengths.observe(request)
        self.table.drop(request.request_id)

    def schedule(self, now_s: float) -> StepPlan:
        if self.config.replan_interval_s > 0 and now_s + EPS_S >= self.next_replan_s:
            self._timer_replan(now_s)
        plan = self.executor.step(now_s)
        if plan.is_empty and self.tiers.undecided:
            return StepPlan((), plan.events, wakeup_s=self.next_replan_s)
        return plan

    def on_step_done(self, plan: StepPlan, result, now_s: float) -> list[RequestEvent]:
        self.kvp.observe(plan, result.produced_tokens, now_s)
        self.tiers.clear_inflight()
        self.tiers.invalidate()
        if self.calib is not None and self.calib.observe(self.calib.base.plan_time_s(plan), result.step_s):
            self.planner.clear_grids()  # grids were sized with the old scale
            self.reasons["calibrated"] += 1
        events = super().on_step_done(plan, result, now_s)
        finished = any(ev.kind is EventKind.FINISHED for ev in events)
        if self.config.output_length != "reserve":
            self.overruns.after_step(now_s)
        if finished and self.config.replan_interval_s <= 0 and not self.config.admit_all:
            if self.repacer is not None:
                self.repacer.on_replan_point(now_s)
            self._replan(now_s, [])
        return events

    def _timer_replan(self, now_s: float) -> None:
        interval = self.config.replan_interval_s
        self.next_replan_s = (math.floor(now_s / interval + EPS_S) + 1) * interval
        new = list(self.tiers.undecided.values())[: self.config.max_candidates]
        chosen = self._replan(now_s, new)
        for r in new:
            if r.request_id in chosen:
                continue
            self.tiers.undecided.pop(r.request_id, None)
            dec = self._not_admitted(r, self.planner.why_not(r), "plan cannot fit it")
            self.reasons[dec.reason.value] += 1
            if not dec.accepted:
                r.tier = Tier.REJECTED
                self.requests.pop(r.request_id, None)
                ev = RequestEvent(EventKind.REJECTED, r.request_id, now_s, reason=dec.reason.value)
            else:
                ev = RequestEvent(EventKind.TIER, r.request_id, now_s, tier=r.tier.value)
            self.tiers.pending_events.append(ev)

    def summary(self, now_s: float, publish_spare: bool = True) -> ReplicaSummary:
        return self.publisher.summary(super().summary(now_s), self.requests, now_s, publish_spare)

    def stats(self) -> dict:
        out = super().stats()
        tiers = self.tiers
        out.update({"num_slo": len(tiers.slo), "num_best_effort": len(tiers.be), "step_len_s": tiers.step_len_s})
        if self.calib is not None:  # the batch-time correction drivers report (observed / modelled)
            out.update(self.calib.stats())
        return out
