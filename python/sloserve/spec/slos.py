"""SLO-adaptive speculation inside the ``slos-serve`` planner (registered as ``slos-serve+spec``).

A subclass of the planner's policy that changes three things when ``ctx.spec`` asks for
``adaptive`` or ``fixed`` speculation (other modes fall back to the decorator of spec/decorate):

1. ``plan``: besides the planner's own (non-speculative) plans it tries the speculative one:
   per-tier lengths from ``plan_tiers`` over the SLO tier plus the candidates, a step grid of
   ``tau`` seconds at the chosen draft-step count, the resident decodes counted by
   ``expand_load`` and each candidate's fluid decode rate by its effective TPOT. The DP is the
   planner's own ``admit``. The better plan (feasible, admitted value, leftover) wins.
2. ``schedule``: the planner fills the step as usual (forced decodes, prefills, best effort,
   optional decodes, ending by the earliest next-token deadline); then the SLO decodes get
   their tier's drafts and the lowest-priority tokens are trimmed until the step's predicted
   time, drafts included, is back within that end. Decode deadlines therefore hold whatever
   the acceptance draws (every verify yields at least one token).
3. ``on_step_done``: verify outcomes feed the online alpha estimator.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from sloserve.core.plan import ScheduledItem, StepPlan
from sloserve.core.scheduler import register
from sloserve.planner.admission import Admission, admit_arrays
from sloserve.planner.batch import EPS_S, StepGrid
from sloserve.planner.execute import is_decoding
from sloserve.planner.planning import PlanChoice
from sloserve.planner.policy import SLOsServeScheduler
from sloserve.spec.config import SpecMode, spec_enabled
from sloserve.spec.decorate import SpecDecorator, draft_room
from sloserve.spec.lengths import TierLoad, constrained_lengths
from sloserve.spec.planner import NO_SPEC, TierSpecPlan, expand_load, make_spec_grid, plan_tiers

PLANNED_MODES = (SpecMode.ADAPTIVE.value, SpecMode.FIXED.value)


class SpecChoice(NamedTuple):
    """A speculative plan: the planner's ``PlanChoice`` fields plus the per-tier lengths."""

    admission: Admission
    step_len_s: float
    grid: StepGrid
    tiers: TierSpecPlan

    def plan(self) -> PlanChoice:
        return PlanChoice(self.admission, self.step_len_s, self.grid)


@register("slos-serve+spec")
class SpecSLOsServeScheduler(SLOsServeScheduler):
    handles_spec = True

    def __init__(self, ctx, config=None) -> None:
        super().__init__(ctx, config)
        self.spec_decorator = SpecDecorator.from_ctx(ctx)
        self.spec_planned = spec_enabled(ctx.spec) and ctx.spec.mode in PLANNED_MODES
        self.spec_tiers: TierSpecPlan = NO_SPEC  # lengths of the committed plan
        self._last_spec: SpecChoice | None = None  # the latest speculative plan that won
        self.spec_trimmed_steps = 0

    def _alpha(self, r) -> float:
        return self.spec_decorator.alpha_of(r)

    # ---- planning -------------------------------------------------------------------------
    def plan(self, cands, now_s, stretch_only=False):
        best = super().plan(cands, now_s, stretch_only)
        if not self.spec_planned or stretch_only or self.config.fixed_batch_tokens:
            return best
        res = best.admission
        best_key = (res.feasible, res.value, res.min_leftover_tokens) if res.feasible else None
        won = None
        for spec in self._spec_plans(cands, now_s):
            res = spec.admission
            key = (res.feasible, res.value, res.min_leftover_tokens)
            if res.feasible and (best_key is None or key > best_key):
                best_key, won = key, spec
        self.reasons["spec_plan_won" if won is not None else "spec_plan_lost"] += 1
        if won is None:
            return best
        self._last_spec = won
        return won.plan()

    def _spec_plans(self, cands, now_s):
        """Speculative plans, one per cap on the length (2..K; the fixed length in mode fixed):
        the length that maximizes the prefill rate is not always the one that admits most
        (a longer step delays a prefill due early), so the DP decides among them."""
        start = self.tiers.plan_start_s(now_s)
        pairs = [(r.min_tpot_s, self._alpha(r)) for r in list(self.tiers.slo.values()) + list(cands)]
        view = self.tiers.view()
        spec = self.ctx.spec
        caps = [spec.fixed_len] if spec.mode == SpecMode.FIXED.value else range(2, spec.max_spec_len + 1)
        seen = set()
        for k in caps:
            tiers = plan_tiers(self.ctx.perf, replace(spec, max_spec_len=k), pairs)
            if tiers is NO_SPEC or tiers.choice in seen:
                continue
            seen.add(tiers.choice)
            grid = make_spec_grid(self.ctx.perf, start, tiers, view.earliest_due_s)
            load = expand_load(view.load, tiers, spec.lead_steps * tiers.step_len_s)
            extra = self._split_cost_tokens(tiers)
            items = [replace(self.planner.item(c), tpot_s=tiers.effective_tpot_s(c.min_tpot_s)) for c in cands]
            items = [replace(it, prefill_tokens=it.prefill_tokens + extra) for it in items]
            free = self.kv.capacity_blocks - self.tiers.reserved_total
            widest = max(tiers.positions_by_tpot.values())
            cap = (min(grid.first_tokens, grid.step_tokens) - len(load)) // widest
            res = admit_arrays(
                view.pending_deadline_s,
                view.pending_prefill + extra,
                items,
                grid,
                load,
                free,
                cap,
                self.config.max_front,
                self.config.max_states,
            )
            yield SpecChoice(res, tiers.step_len_s, grid, tiers)

    def _split_cost_tokens(self, tiers: TierSpecPlan) -> int:
        """Tokens one cut-short step costs. A prefill that completes starts a decode whose
        second token is due one TPOT later, which can end a step of tau > TPOT early; the
        split step pays the fixed and draft costs twice. Each prefill in the speculative plan is
        charged this much (the non-speculative grid, whose step is the tightest TPOT, has no
        such cut)."""
        perf, tau, steps = self.ctx.perf, tiers.step_len_s, tiers.spec_steps
        whole = perf.max_tokens_within_s(tau - EPS_S, steps)
        return max(int(whole - 2 * perf.max_tokens_within_s(tau / 2 - EPS_S, steps)), 0)

    def _commit(self, res, step, grid, cands, now_s):
        admitted = super()._commit(res, step, grid, cands, now_s)
        if res.feasible and grid is not None:
            last = self._last_spec
            self.spec_tiers = last.tiers if last is not None and grid is last.grid else NO_SPEC
        return admitted

    def may_stretch(self) -> bool:
        return self.spec_tiers is NO_SPEC  # a stretched step is checked on the non-speculative grid only

    def on_removed(self, request) -> None:
        super().on_removed(request)
        if not self.tiers.slo:
            self.spec_tiers = NO_SPEC

    # ---- executing ------------------------------------------------------------------------
    def schedule(self, now_s: float) -> StepPlan:
        plan = super().schedule(now_s)
        if not self.spec_planned:
            out = self.spec_decorator.decorate(self, plan, now_s)
        elif plan.is_empty:
            return plan
        elif self.spec_tiers is NO_SPEC:
            out = self._slack_drafts(plan, now_s)
        else:
            out = self._add_drafts(plan, now_s)
        if out is not plan:
            self.tiers.set_inflight(out, now_s + self.ctx.perf.plan_time_s(out))
        return out

    def _slack_drafts(self, plan: StepPlan, now_s: float) -> StepPlan:
        """Under a non-speculative plan: drafts only in the time the step leaves unused (it
        still ends when the planner's step would), so the plan's prefill budget is untouched
        and decodes that run ahead of their deadlines free their KV sooner."""
        dues = {r.request_id: r.next_token_deadline_s for r in self.tiers.slo.values() if is_decoding(r)}
        if not dues or self.tiers.step_len_s is None:
            return plan
        perf, spec = self.ctx.perf, self.ctx.spec
        # never past the end the executor chose (a short first step promised to a tight TTFT,
        # a deadline step sized for the calibration's tail): drafts there made it run long
        limit = min([now_s + self.tiers.step_len_s, self.executor.end_s] + list(dues.values())) - now_s
        dec = [i for i, it in enumerate(plan.items) if it.request_id in dues and it.num_tokens == 1]
        if not dec or perf.plan_time_s(plan) >= limit:
            return plan
        by_tpot: dict[float, list] = {}
        for i in dec:
            r = self.tiers.slo[plan.items[i].request_id]
            by_tpot.setdefault(r.min_tpot_s, []).append(r)
        keys = sorted(by_tpot)
        loads = [TierLoad(p, len(by_tpot[p]), min(self._alpha(r) for r in by_tpot[p])) for p in keys]
        k = spec.fixed_len if spec.mode == SpecMode.FIXED.value else spec.max_spec_len
        kv_read = sum(it.context_tokens for it in plan.items)
        chosen = dict(
            zip(
                keys,
                constrained_lengths(
                    perf, loads, plan.num_tokens - len(dec), k, spec.safety_margin, limit, kv_read, spec.uniform_len
                ),
            )
        )
        items = list(plan.items)
        for i in dec:
            r = self.tiers.slo[items[i].request_id]
            d = min(chosen[r.min_tpot_s] - 1, draft_room(r))
            while d > 0 and not self.reserve(r, 1 + d):
                d -= 1
            if d > 0:
                items[i] = replace(items[i], num_tokens=1 + d, spec_draft_tokens=d)
        steps = max(it.spec_draft_tokens for it in items)
        if steps == 0:
            return plan
        self.reasons["spec_slack_steps"] += 1
        return replace(plan, items=tuple(items), spec_steps=steps)

    def _add_drafts(self, plan: StepPlan, now_s: float) -> StepPlan:
        perf = self.ctx.perf
        tau = self.spec_tiers.step_len_s
        dues = {r.request_id: r.next_token_deadline_s for r in self.tiers.slo.values() if is_decoding(r)}
        end = min([now_s + tau, self.executor.end_s] + list(dues.values()))
        limit = max(perf.plan_time_s(plan), end - now_s)
        items = list(plan.items)
        horizon = now_s + (2 + self.ctx.spec.lead_steps) * tau + EPS_S
        planned = {it.request_id for it in items}
        for rid, due in sorted(dues.items(), key=lambda x: x[1]):
            if due <= horizon and rid not in planned and self.reserve(self.tiers.slo[rid], 1):
                items.append(ScheduledItem(rid, 1, context_tokens=self.tiers.slo[rid].num_computed_tokens))
        forced, optional = [], []
        for i, it in enumerate(items):
            r = self.tiers.slo.get(it.request_id)
            if r is None or it.num_tokens != 1 or it.request_id not in dues:
                continue
            d = min(self.spec_tiers.positions(r.min_tpot_s) - 1, draft_room(r))
            while d > 0 and not self.reserve(r, 1 + d):
                d -= 1
            if d > 0:
                items[i] = replace(it, num_tokens=1 + d, spec_draft_tokens=d)
            (forced if dues[it.request_id] <= horizon else optional).append(i)
        if not forced and not optional:
            return plan
        best_effort = [i for i, it in enumerate(items) if it.request_id in self.tiers.be]
        prefill = [i for i, it in enumerate(items) if it.request_id in self.tiers.slo and it.request_id not in dues]
        # cut order: best-effort tokens, drafts of decodes not yet due, admitted prefill tokens
        # latest deadline first (the plan counted the due decodes' drafts before any prefill),
        # and only then drafts of due decodes; a decode's own token is never cut
        order = best_effort[::-1] + optional[::-1] + prefill[::-1] + forced[::-1]
        items = self._trim(items, limit, order)
        if items is None:
            return plan
        steps = max((it.spec_draft_tokens for it in items), default=0)
        return replace(plan, items=tuple(it for it in items if it.num_tokens > 0), spec_steps=steps)

    def _trim(self, items: list[ScheduledItem], limit_s: float, order: list[int]) -> list[ScheduledItem] | None:
        """Cut tokens of the items in ``order`` (only the drafts of a verify item, only as many
        prefill tokens as needed) until the step's predicted time fits ``limit_s``; None when
        that is impossible."""
        perf = self.ctx.perf
        out = list(items)
        kv_read = sum(it.context_tokens for it in out)

        def excess() -> int:
            steps = max((it.spec_draft_tokens for it in out), default=0)
            return sum(it.num_tokens for it in out) - perf.max_tokens_within_s(limit_s - EPS_S, steps, kv_read)

        over = excess()
        if over <= 0:
            return out
        self.spec_trimmed_steps += 1
        for idx in order:
            it = out[idx]
            if it.spec_draft_tokens:
                out[idx] = replace(it, num_tokens=1, spec_draft_tokens=0)
            else:
                req = self.requests[it.request_id]
                if req.num_output_tokens and req.remaining_compute_tokens == 1:
                    continue  # a best-effort decode token
                out[idx] = replace(it, num_tokens=it.num_tokens - min(over, it.num_tokens))
            over = excess()
            if over <= 0:
                return out
        return None

    def on_step_done(self, plan, result, now_s):
        self.spec_decorator.observe(plan, result, self.requests)
        return super().on_step_done(plan, result, now_s)

    def stats(self) -> dict:
        out = super().stats()
        out["spec"] = dict(
            self.spec_decorator.stats(),
            trimmed_steps=self.spec_trimmed_steps,
            positions={str(k): v for k, v in sorted(self.spec_tiers.positions_by_tpot.items())},
        )
        return out
