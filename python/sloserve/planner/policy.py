"""The ``slos-serve`` policy: DP admission into an SLO tier, TPOT-sized steps, best-effort tier.

Event-driven: every arrival runs the DP (the new request plus best-effort requests that could
still be promoted); every completion re-plans (promotions, a longer step once the tightest TPOT
has left). Between events ``schedule`` only fills steps (planner/execute.py). With
``replan_interval_s`` > 0 decisions wait for a timer instead (the authors' behaviour, ablation).
"""

from __future__ import annotations

import math
from dataclasses import replace

from sloserve.core.plan import AdmitDecision, AdmitReason, EventKind, ReplicaSummary, RequestEvent, StepPlan
from sloserve.core.request import Request, Tier
from sloserve.core.scheduler import Scheduler, register
from sloserve.planner.admission import Admission, Item, admit_arrays, admit_cached, leftover_to_s
from sloserve.planner.batch import EPS_S, StepGrid, make_grid
from sloserve.planner.calibrate import CalibratedModel
from sloserve.planner.config import SLOsServeConfig
from sloserve.planner.deadlines import Deadlines
from sloserve.planner.execute import StepBuilder, fill_step, is_decoding, step_window
from sloserve.planner.kvprofile import KVProfile
from sloserve.planner.lengths import LengthPredictor
from sloserve.planner.repace import Repacer
from sloserve.planner.spare import spare_curve, spare_step_s, stretch_limit_s
from sloserve.planner.view import TierView, build_view, extend_view

STRETCH_MIN = 1.25  # stretch a step only when it can be this many times L (else not worth it)


# Step length assumed for the published prefill rate when no SLO-tier decode sets one.
SUMMARY_IDLE_STEP_S = 0.1


@register("slos-serve")
class SLOsServeScheduler(Scheduler):
    Config = SLOsServeConfig

    def __init__(self, ctx, config=None) -> None:
        super().__init__(ctx, config)
        self.calib = None
        if self.config.calibrate:  # the planner sees the model scaled by what steps really took
            cfg = self.config
            self.calib = CalibratedModel(
                ctx.perf,
                cfg.calibrate_quantile,
                cfg.calibrate_window,
                prior_scale=cfg.calibrate_prior,
                tail_quantile=cfg.calibrate_tail_quantile,
            )
            self.ctx = replace(ctx, perf=self.calib)
        self.slo: dict[str, Request] = {}  # admitted: deadlines guaranteed by the plan
        self.be: dict[str, Request] = {}  # best effort, FIFO by insertion
        self.undecided: dict[str, Request] = {}  # timer mode: waiting for the next re-plan
        self.reserved: dict[str, int] = {}  # KV blocks promised to admitted requests
        self.reserved_total = 0
        self.step_len_s: float | None = None  # L: at most the tightest TPOT in the SLO tier
        self.inflight: dict[str, int] = {}
        self.inflight_end_s: float | None = None
        self.pending_events: list[RequestEvent] = []
        self.next_replan_s = 0.0
        self.slack_s = math.inf
        self.kvp = KVProfile(self)  # KV-over-time admission check and paced arrivals
        self.repacer = Repacer(self) if self.config.repace else None  # re-paced residents (experiment)
        self.first_step: tuple[float, float, bool] | None = None  # (start, end, carries all decodes)
        self._view: TierView | None = None
        self._grid_cache: dict[tuple, StepGrid] = {}
        self.out_stats: dict[str, tuple[int, int]] = {}  # class -> (finished, output tokens)
        cfg = self.config
        self.lengths = LengthPredictor(cfg.length_quantile, cfg.length_min_samples, cfg.length_window)
        self.dl = Deadlines(self.config.planning_tolerance)
        fixed = self.config.fixed_batch_tokens
        self.fixed_step_s = self.ctx.perf.batch_time_s(fixed) if fixed else None

    # ---- lengths and memory ---------------------------------------------------------------
    def planned_output(self, r: Request) -> int:
        """Output length the plan assumes (true, max_new_tokens, or a prediction)."""
        if r.output_tokens_known or self.config.output_length == "reserve":
            return r.planning_output_tokens
        pred = r.extra.get("sloserve_pred")
        if pred is None and self.config.output_length == "learn":
            pred = self.lengths.predict(r, self.config.length_prior_tokens or r.planning_output_tokens)
        elif pred is None:
            n, total = self.out_stats.get(r.slo_class, (0, 0))
            pred = total / n * self.config.predict_margin if n else self.config.predict_prior_tokens
            if r.max_new_tokens is not None:
                pred = min(pred, r.max_new_tokens)
        return max(int(math.ceil(pred)), r.num_output_tokens + 1)

    def mem_blocks(self, r: Request) -> int:
        return self.kv.blocks_for(r.prompt_tokens + self.planned_output(r))

    # ---- planning -------------------------------------------------------------------------
    def _item(self, r: Request) -> Item:
        left = r.num_tokens - r.num_computed_tokens - self.inflight.get(r.request_id, 0)
        return Item(
            r.request_id,
            self.dl.ttft_s(r),
            max(left, 1),
            self.mem_blocks(r),
            self.dl.min_tpot_s(r),
            r.weight,
            False,
            max(self.planned_output(r) - 1, 0),
            self.dl.decode_origin_s(r),
        )

    def _step_options(self, view: TierView, cands: list[Item]) -> list[float]:
        if self.fixed_step_s is not None:
            return [self.fixed_step_s]
        opts = {view.min_tpot_s} if math.isfinite(view.min_tpot_s) else set()
        opts |= {c.tpot_s for c in cands if c.tpot_s < view.min_tpot_s}
        if self.step_len_s is not None and self.step_len_s < view.min_tpot_s:
            opts.add(self.step_len_s)  # the current step length stays valid while tighter
        return sorted(opts)

    def plan(
        self, cands: list[Request], now_s: float, stretch_only: bool = False
    ) -> tuple[Admission, float | None, StepGrid | None]:
        """Pure: the best admission over step lengths and first-step shapes (no state changes).

        ``stretch_only`` (the executor's per-step check) tries only a stretched first step at
        the current step length; the caller uses it when the admitted plan stays feasible.
        """
        start = self.inflight_end_s if self.inflight_end_s is not None else now_s
        view = self.view()
        items = [self._item(c) for c in cands]
        steps = [self.step_len_s] if stretch_only else self._step_options(view, items)
        best: tuple | None = None
        free = self.kvp.free_blocks(start, cands) if items else self.kv.capacity_blocks - self.reserved_total
        for step in steps:
            if step is None:
                continue
            elig = [c for c in items if c.tpot_s >= step - EPS_S]
            for grid in self._grids(view, elig, start, step, stretch_only):
                cap = min(grid.first_tokens, grid.step_tokens) - len(view.load)
                if len(elig) <= 1:  # every arrival, can_admit, and re-plans with nothing to promote
                    res = admit_cached(view.mandatory_rows(grid), elig, free, cap)
                else:
                    res = admit_arrays(
                        view.pending_deadline_s,
                        view.pending_prefill,
                        elig,
                        grid,
                        view.load,
                        free,
                        cap,
                        self.config.max_front,
                        self.config.max_states,
                        view.table(grid),
                    )
                key = (res.feasible, res.value, res.min_leftover_tokens, grid.first_all, step)
                if best is None or key > best[0]:
                    best = (key, res, step, grid)
        if best is None:
            return Admission((), 0.0, True, math.inf), None, None
        return best[1], best[2], best[3]

    def _grids(
        self, view: TierView, items: list[Item], start: float, step: float, stretch_only: bool
    ) -> list[StepGrid]:
        fixed = self.config.fixed_batch_tokens or None
        grids = [] if stretch_only else [self._grid(start, step, view.earliest_due_s, fixed)]
        soonest = min((it.deadline_s for it in items), default=math.inf)
        if grids and start < soonest < grids[0].first_end_s - EPS_S:
            # a tight TTFT inside step 0: a shorter step 0 that ends by it can still serve it
            grids.append(self._grid(start, step, min(view.earliest_due_s, soonest), fixed))
        first = self.first_step
        if first is not None and abs(first[0] - start) <= EPS_S and step == self.step_len_s and not stretch_only:
            # the first step the last plan committed to is known feasible: keep it an option
            # (grid options are not monotone in the state: a different stretch can lose a step)
            kept = self._grid(
                start, step, first[1] if not first[2] else view.earliest_due_s, fixed, first[1] if first[2] else None
            )
            if kept not in grids:
                grids.append(kept)
        if self.config.stretch_steps and fixed is None:
            end = min([stretch_limit_s(start, view, self.config.max_step_s)] + [it.deadline_s for it in items])
            stretched = self._grid(start, step, view.earliest_due_s, None, end)
            if end - start > step * STRETCH_MIN and stretched not in grids:
                grids.append(stretched)
        return grids

    def _grid(
        self, start: float, step: float, earliest_due_s: float, fixed: int | None, stretch_end_s: float | None = None
    ) -> StepGrid:
        """``make_grid``, memoized: the arrivals of one step ask for the same few grids."""
        key = (start, step, earliest_due_s, fixed, stretch_end_s)
        got = self._grid_cache.get(key)
        if got is None:
            if len(self._grid_cache) >= 256:
                self._grid_cache.clear()
            got = self._grid_cache[key] = make_grid(
                self.ctx.perf, start, step, earliest_due_s, fixed_tokens=fixed, stretch_end_s=stretch_end_s
            )
        return got

    def _promotable(self, now_s: float, limit: int) -> list[Request]:
        if not self.config.promote_best_effort or limit <= 0:
            return []
        out = []
        for r in self.be.values():
            if r.num_output_tokens == 0 and self.dl.ttft_s(r) > now_s and not r.route_best_effort:
                out.append(r)
                if len(out) >= limit:
                    break
        return out

    def _commit(
        self, res: Admission, step: float | None, grid: StepGrid | None, cands: list[Request], now_s: float
    ) -> set[str]:
        """Apply a plan: admit the selected, adopt its step length. Returns the admitted ids."""
        if not res.feasible:
            self.reasons["plan_infeasible"] += 1
            return set()
        by_id = {r.request_id: r for r in cands}
        for rid in res.selected:
            r = by_id[rid]
            promoted, waited = r.tier is Tier.BEST_EFFORT, rid in self.undecided
            self.be.pop(rid, None)
            self.undecided.pop(rid, None)
            self._to_slo(r)
            if promoted:
                self.reasons["promoted"] += 1
            if promoted or waited:  # a request added just now reports its tier in its decision
                self.pending_events.append(
                    RequestEvent(
                        EventKind.TIER, rid, now_s, tier=Tier.SLO.value, reason="promoted" if promoted else "timer"
                    )
                )
        if step is not None:
            self.step_len_s = step
        if grid is not None:
            self.slack_s = leftover_to_s(res.min_leftover_tokens, grid)
            # the next step must follow the grid this plan was checked on
            self.first_step = (grid.start_s, grid.first_end_s, grid.first_all)
        return set(res.selected)

    def view(self) -> TierView:
        """The SLO tier after the step in flight, cached until the state changes."""
        if self._view is None:
            self._view = build_view(self.slo.values(), self.inflight, self.planned_output, self.dl)
        return self._view

    def _to_slo(self, r: Request) -> None:
        if self._view is not None and r.num_output_tokens == 0 and r.request_id not in self.inflight:
            old = self._view
            self._view = extend_view(old, r, self.planned_output(r), self.dl)
            self.kvp.on_admitted(r, old, self._view)
        else:
            self._view = None
        r.tier = Tier.SLO
        self.slo[r.request_id] = r
        if self.config.output_length == "learn" and not r.output_tokens_known:
            r.extra.setdefault("sloserve_pred", self.planned_output(r))  # fixed while it holds
        blocks = self.mem_blocks(r)
        self.reserved[r.request_id] = blocks
        self.reserved_total += blocks

    def _replan(self, now_s: float, new: list[Request], promote: bool = True) -> set[str]:
        cands = new + (self._promotable(now_s, self.config.max_candidates - len(new)) if promote else [])
        res, step, grid = self.plan(cands, now_s)
        return self._commit(res, step, grid, cands, now_s)

    def _infeasible_alone(self, r: Request) -> bool:
        perf = self.ctx.perf
        return perf.zero_load_prefill_s(r.prompt_tokens) > self.dl.ttft_s(r) - r.arrival_s or perf.batch_time_s(
            1
        ) > self.dl.min_tpot_s(r)

    # ---- the interface --------------------------------------------------------------------
    def enqueue(self, request: Request, now_s: float) -> AdmitDecision:
        if self.config.admit_all:
            self._to_slo(request)
            self.step_len_s = min(self.step_len_s or math.inf, self.dl.min_tpot_s(request))
            return AdmitDecision(AdmitReason.ADMITTED)
        if request.route_best_effort:
            return self._not_admitted(request, AdmitReason.REJECTED, "routed to best effort", "routed")
        if self._infeasible_alone(request):
            return self._not_admitted(request, AdmitReason.INFEASIBLE_SLO, "cannot meet its SLO even alone")
        if self.config.replan_interval_s > 0:
            request.tier = Tier.PENDING
            self.undecided[request.request_id] = request
            return AdmitDecision(AdmitReason.QUEUED, detail="waiting for the re-plan timer")
        # an arrival frees nothing, so best-effort requests are re-offered on completions only
        if self.kvp.admit_arrival(request, now_s):
            return AdmitDecision(AdmitReason.ADMITTED, slack_s=self.slack_s)
        return self._not_admitted(request, self._why_not(request), "plan cannot fit it")

    def _why_not(self, r: Request) -> AdmitReason:
        start = self.inflight_end_s if self.inflight_end_s is not None else r.arrival_s
        return AdmitReason.NO_KV if self.mem_blocks(r) > self.kvp.free_blocks(start, [r]) else AdmitReason.NO_TIME

    def _not_admitted(self, r: Request, why: AdmitReason, detail: str, tag: str = "") -> AdmitDecision:
        if self.config.reject_unadmitted or not self.config.best_effort:
            return AdmitDecision(why, detail=detail)
        self.reasons[f"best_effort_{tag or why.value}"] += 1
        r.tier = Tier.BEST_EFFORT
        self.be[r.request_id] = r
        return AdmitDecision(AdmitReason.BEST_EFFORT, detail=f"{why.value}: {detail}")

    def can_admit(self, request: Request, now_s: float) -> AdmitDecision:
        too_long = self.check_length(request)
        if too_long is not None:
            return too_long
        if self.config.admit_all:
            return AdmitDecision(AdmitReason.ADMITTED)
        if self._infeasible_alone(request):
            return AdmitDecision(AdmitReason.INFEASIBLE_SLO)
        res, _, grid = self.plan([request], now_s)
        if request.request_id in res.selected:
            return AdmitDecision(AdmitReason.ADMITTED, slack_s=leftover_to_s(res.min_leftover_tokens, grid))
        return AdmitDecision(self._why_not(request))

    def on_removed(self, request: Request) -> None:
        rid = request.request_id
        self._view = None
        self.slo.pop(rid, None)
        self.be.pop(rid, None)
        self.undecided.pop(rid, None)
        self.reserved_total -= self.reserved.pop(rid, 0)
        if request.finish_s is not None and not request.output_tokens_known:
            n, total = self.out_stats.get(request.slo_class, (0, 0))
            self.out_stats[request.slo_class] = (n + 1, total + request.num_output_tokens)
            self.lengths.observe(request.slo_class, request.prompt_tokens, request.num_output_tokens)
        if not self.slo:
            self.step_len_s = None

    def schedule(self, now_s: float) -> StepPlan:
        if self.config.replan_interval_s > 0 and now_s + EPS_S >= self.next_replan_s:
            self._timer_replan(now_s)
        events: list[RequestEvent] = []
        step = self.step_len_s if self.step_len_s is not None else self.idle_step_s()
        decoders = [(self.dl.next_token_s(r), r) for r in self.slo.values() if is_decoding(r)]
        prefills = sorted((r for r in self.slo.values() if not is_decoding(r)), key=self.dl.ttft_s)
        tail = self.calib.tail_factor if self.calib is not None else 1.0
        if tail < 1.0:  # a step bound by a decode deadline must end by it even when it runs slow
            decoders = [(now_s + (due - now_s) * tail, r) for due, r in decoders]
        end_s, forced, optional = step_window(now_s, step, decoders)
        first = self.first_step
        if first is not None and abs(first[0] - now_s) <= EPS_S and not first[2]:
            end_s = min(end_s, first[1])  # the first step the plan was checked with (its end may be earlier)
        best_effort = self._best_effort_work()
        stretch_end = self._stretch_end(now_s, end_s, prefills, best_effort)
        if stretch_end is not None:
            stretch_end = now_s + (stretch_end - now_s) * tail
            end_s, forced, optional = stretch_end, sorted(decoders, key=lambda x: x[0]), []
        self.first_step = None
        cap = self.ctx.perf.max_tokens_within_s(end_s - now_s - EPS_S) if end_s > now_s + EPS_S else 0
        if self.config.fixed_batch_tokens:
            cap = min(cap, self.config.fixed_batch_tokens)
        if cap < max(len(forced), 1):
            self.reasons["step_overdue"] += 1
            cap = max(len(forced), 1)
        builder = StepBuilder(cap, lambda r, n, slo: self._reserve(r, n, slo, builder, events, now_s))
        dropped = fill_step(builder, forced, prefills, best_effort, optional)
        if dropped:
            self.reasons["decode_overload"] += dropped
        events = self.pending_events + events
        self.pending_events = []
        plan = StepPlan(tuple(self._fit(builder.items, len(forced), end_s - now_s)), tuple(events))
        if plan.is_empty:
            self.inflight, self.inflight_end_s = {}, None
            if self.undecided:
                return StepPlan((), plan.events, wakeup_s=self.next_replan_s)
            return plan
        self.inflight = {i.request_id: i.num_tokens for i in plan.items}
        self.inflight_end_s = now_s + self.ctx.perf.plan_time_s(plan)
        self._view = None
        return plan

    def idle_step_s(self) -> float:
        """Step length while no SLO-tier request is resident (best effort only): ``idle_step_s``
        when such a step holds a token, else twice the one-token batch time. (With a model whose
        base step exceeded ``idle_step_s`` the idle step held no token, every plan was empty and
        best-effort work starved forever.)"""
        idle, perf = self.config.idle_step_s, self.ctx.perf
        return idle if perf.max_tokens_within_s(idle - EPS_S) >= 1 else 2.0 * perf.batch_time_s(1)

    def _best_effort_work(self) -> list[Request]:
        """The best-effort requests a step may serve: none while the SLO tier's reserved KV is
        above ``best_effort_yield_kv`` of the pool. There KV binds admissions, and best-effort
        prefills would fill every step up to the step length, so each admitted request would
        decode at its TPOT pace instead of in short decode-only steps, hold its KV longer and
        cost later admissions (docs/planner.md §5)."""
        return [] if self.reserved_kv_binds() else list(self.be.values())

    def reserved_kv_binds(self) -> bool:
        """The SLO tier's reserved KV is above ``best_effort_yield_kv`` of the pool."""
        return self.reserved_total > self.config.best_effort_yield_kv * self.kv.capacity_blocks

    def _fit(self, items: list, num_forced: int, limit_s: float) -> list:
        """Trim trailing non-forced items until the exact batch time fits (models whose time
        depends on attention terms that the token cap ignores); a no-op for the paper form."""
        perf = self.ctx.perf
        keep = num_forced if num_forced or self.slo else 1  # nothing else runs: best effort keeps a token
        while len(items) > num_forced and perf.plan_time_s(StepPlan(tuple(items))) > limit_s + 1e-12:
            last = items[-1]
            if last.num_tokens > 1:
                items[-1] = type(last)(
                    last.request_id, last.num_tokens // 2, last.spec_draft_tokens, last.context_tokens
                )
            elif len(items) > keep:
                items.pop()
            else:
                break
        return items

    def _stretch_end(
        self, now_s: float, std_end_s: float, prefills: list[Request], best_effort: list[Request]
    ) -> float | None:
        """End of a stretched step when the last plan chose one for now, or when a check shows
        that one is worth it and keeps every admitted deadline; None for a standard step."""
        first = self.first_step
        if first is not None and abs(first[0] - now_s) <= EPS_S:
            return first[1] if first[2] else None
        if not self.config.stretch_steps or self.config.fixed_batch_tokens or self.step_len_s is None:
            return None
        demand = sum(r.remaining_compute_tokens for r in prefills)
        demand += sum(r.remaining_compute_tokens for r in best_effort)
        if demand <= self.ctx.perf.max_tokens_within_s(std_end_s - now_s - EPS_S):
            return None  # a standard step already holds all the work
        res, _, grid = self.plan([], now_s, stretch_only=True)
        if grid is None or not grid.first_all or not res.feasible:
            return None
        self.reasons["stretched_steps"] += 1
        return grid.first_end_s

    def _reserve(self, r: Request, n: int, slo: bool, builder: StepBuilder, events: list, now_s: float) -> bool:
        """KV for n more tokens; admitted requests preempt best effort (LIFO), best effort
        preempts only younger best effort."""
        total = r.num_computed_tokens + n
        if self.kv.grow(r.request_id, total):
            return True
        order = list(self.be)
        younger = order if slo else order[order.index(r.request_id) + 1 :]
        for rid in reversed(younger):
            if rid in builder.ids or not self.kv.held_blocks(rid):
                continue
            events.append(self.preempt(self.be[rid], now_s))
            if self.kv.grow(r.request_id, total):
                return True
        return False

    def on_step_done(self, plan: StepPlan, result, now_s: float) -> list[RequestEvent]:
        self.inflight, self.inflight_end_s = {}, None
        self._view = None
        if self.calib is not None and self.calib.observe(self.calib.base.plan_time_s(plan), result.step_s):
            self._grid_cache.clear()  # grids were sized with the old scale
            self.reasons["calibrated"] += 1
        events = super().on_step_done(plan, result, now_s)
        finished = False
        for ev in events:
            if ev.kind is EventKind.FINISHED:
                finished = True
        if self.config.output_length != "reserve":
            self._track_lengths(now_s)
        if finished and self.config.replan_interval_s <= 0 and not self.config.admit_all:
            if self.repacer is not None:
                self.repacer.on_replan_point(now_s)
            self._replan(now_s, [])
        return events

    def _track_lengths(self, now_s: float) -> None:
        """Predict and learn modes: a request about to outrun its planned length gets a longer
        plan (predict: double; learn: the conditional quantile, planner/lengths.py) if the KV
        fits and (learn) the admitted plan stays feasible with it; otherwise it is demoted to
        best effort, so the admitted rest keep their guarantee."""
        learn = self.config.output_length == "learn"
        profile = learn and self.config.kv_profile  # KV checked on the time profile, not the sum
        for r in list(self.slo.values()):
            planned = self.planned_output(r)
            if r.output_tokens_known or r.num_output_tokens < planned - 1:
                continue
            cap = r.max_new_tokens if r.max_new_tokens is not None else r.output_tokens
            if learn and planned >= cap:
                continue  # planned up to its limit: it cannot outrun it
            new = self.lengths.extend(r) if learn else min(2 * planned, cap)
            old_blocks = self.reserved[r.request_id]
            extra = self.kv.blocks_for(r.prompt_tokens + new) - old_blocks
            self.reasons["length_overrun"] += 1
            if profile or self.reserved_total + extra <= self.kv.capacity_blocks:
                old = r.extra.get("sloserve_pred")
                self._set_planned(r, new, old_blocks + extra)
                if profile and self.kvp.free_blocks(now_s) < 0:
                    self._set_planned(r, old, old_blocks)  # its later finish would overfill the KV pool
                elif not learn or self.plan([], now_s)[0].feasible:
                    continue
                else:
                    self._set_planned(r, old, old_blocks)  # the longer plan would break an admitted deadline
                    if not self.plan([], now_s)[0].feasible:  # ... unless the plan was infeasible anyway
                        self._set_planned(r, new, old_blocks + extra)
                        continue
            self.reasons["overrun_demoted"] += 1
            self.reserved_total -= self.reserved.pop(r.request_id)
            del self.slo[r.request_id]
            self._view = None
            r.tier = Tier.BEST_EFFORT
            self.be[r.request_id] = r
            self.pending_events.append(
                RequestEvent(EventKind.TIER, r.request_id, now_s, tier=r.tier.value, reason="overrun")
            )
        if not self.slo:
            self.step_len_s = None

    def _set_planned(self, r: Request, pred: int | None, blocks: int) -> None:
        r.extra["sloserve_pred"] = pred
        self.reserved_total += blocks - self.reserved[r.request_id]
        self.reserved[r.request_id] = blocks
        self._view = None
        self.kvp.invalidate([r.request_id])  # its size and finish bound moved

    def _timer_replan(self, now_s: float) -> None:
        interval = self.config.replan_interval_s
        self.next_replan_s = (math.floor(now_s / interval + EPS_S) + 1) * interval
        new = list(self.undecided.values())[: self.config.max_candidates]
        chosen = self._replan(now_s, new)
        for r in new:
            if r.request_id in chosen:
                continue
            self.undecided.pop(r.request_id, None)
            dec = self._not_admitted(r, self._why_not(r), "plan cannot fit it")
            self.reasons[dec.reason.value] += 1
            if not dec.accepted:
                r.tier = Tier.REJECTED
                self.requests.pop(r.request_id, None)
                self.pending_events.append(
                    RequestEvent(EventKind.REJECTED, r.request_id, now_s, reason=dec.reason.value)
                )
            else:
                self.pending_events.append(RequestEvent(EventKind.TIER, r.request_id, now_s, tier=r.tier.value))

    def summary(self, now_s: float, publish_spare: bool = True) -> ReplicaSummary:
        base = super().summary(now_s)
        by_tier: dict[str, int] = {}
        for r in self.slo.values():
            by_tier[r.slo_class] = by_tier.get(r.slo_class, 0) + 1
        slack = self.slack_s if self.slo else math.inf
        backlog = sum(r.remaining_compute_tokens for r in self.requests.values() if r.num_output_tokens == 0)
        return ReplicaSummary(
            base.replica_id,
            now_s,
            base.num_requests,
            base.num_waiting,
            base.outstanding_tokens,
            base.free_kv_tokens,
            base.kv_capacity_tokens,
            by_tier,
            slack,
            True,
            prefill_backlog_tokens=backlog,
            prefill_tokens_per_s=self.prefill_rate_tps(),
            spare_prefill_tokens=self.spare_prefill(now_s) if publish_spare else (),
        )

    def spare_prefill(self, now_s: float) -> tuple[tuple[float, int], ...]:
        """Spare prefill tokens by horizon after ``now_s`` on the grids an arrival is planned on
        (planner/spare.py; idle: steps of ``SUMMARY_IDLE_STEP_S`` at the full batch rate)."""
        if self.config.admit_all:
            return ()  # no admission control: nothing to promise
        view = self.view()
        step = spare_step_s(self.step_len_s, view.min_tpot_s, self.fixed_step_s, SUMMARY_IDLE_STEP_S)
        start = self.inflight_end_s if self.inflight_end_s is not None else now_s
        fixed = self.config.fixed_batch_tokens or None
        stretch = (self.config.max_step_s, STRETCH_MIN) if self.config.stretch_steps and fixed is None else None
        return spare_curve(
            view,
            now_s,
            stretch=stretch,
            grid_for=lambda due, end: self._grid(start, step, due, fixed if end is None else None, end),
        )

    def prefill_rate_tps(self) -> float:
        """Prefill tokens per second left beside the admitted decodes, at the current step length
        (what a router without ``can_admit`` uses to judge whether a prompt meets its TTFT)."""
        step_s = self.step_len_s or SUMMARY_IDLE_STEP_S
        decoding = [r for r in self.slo.values() if r.num_output_tokens > 0]
        kv_read = sum(r.num_tokens for r in decoding)
        room = self.ctx.perf.max_tokens_within_s(step_s, 0, kv_read) - len(decoding)
        return max(room, 0) / step_s

    def stats(self) -> dict:
        out = super().stats()
        out.update({"num_slo": len(self.slo), "num_best_effort": len(self.be), "step_len_s": self.step_len_s})
        return out
