"""The admission planner: the best DP admission over step lengths and first-step shapes.

Pure with respect to the tiers: ``plan`` reads the tier view and changes nothing (the policy
commits a plan). It offers the DP (planner/admission.py) every step length the tier allows and,
per length, the standard grid, a step 0 cut to end at a tight TTFT, the first step the last plan
committed to, and a stretched step 0 (docs/planner.md §2 and §4).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from sloserve.core.plan import AdmitReason
from sloserve.core.request import Request
from sloserve.planner.admission import Admission, Item, admit_arrays, admit_cached
from sloserve.planner.batch import (
    EPS_S,
    StepGrid,
    first_step_at_scale,
    kv_bucket,
    make_grid,
    reads_attn,
    reads_kv,
    reads_requests,
)
from sloserve.planner.execute import is_decoding
from sloserve.planner.spare import stretch_limit_s
from sloserve.planner.view import TierView

STRETCH_MIN = 1.25  # stretch a step only when it can be this many times L (else not worth it)


class PlanChoice(NamedTuple):
    """A plan: the DP's admission, the step length it adopts and the grid it was checked on
    (both None when the tier offers no step length)."""

    admission: Admission
    step_len_s: float | None
    grid: StepGrid | None


class AdmissionPlanner:
    def __init__(self, config, perf, tiers, lengths, dl, kvp) -> None:
        self.config, self.perf, self.tiers, self.lengths, self.dl, self.kvp = config, perf, tiers, lengths, dl, kvp
        fixed = config.fixed_batch_tokens
        self.fixed_tokens = fixed or None
        self.fixed_step_s = perf.batch_time_s(fixed) if fixed else None
        self._grid_cache: dict[tuple, StepGrid] = {}
        # steps read the KV of the requests in them: grids hold fewer tokens as contexts grow
        self.count_kv = config.count_kv_read and reads_kv(perf)
        # prefill attention grows with the context: grids bound it by the longest prefill (docs/planner.md §2)
        self.count_attn = config.count_kv_read and reads_attn(perf)
        # each request in a step costs its share too (a fitted per-request term): grids are sized
        # with every request that may run in their steps
        self.count_requests = config.count_kv_read and reads_requests(perf)

    def item(self, r: Request) -> Item:
        left = r.num_tokens - r.num_computed_tokens - self.tiers.inflight.get(r.request_id, 0)
        planned = self.lengths.planned_output(r)
        return Item(
            r.request_id,
            self.dl.ttft_s(r),
            max(left, 1),
            self.lengths.mem_blocks(r),
            self.dl.min_tpot_s(r),
            r.weight,
            False,
            max(planned - 1, 0),
            self.dl.decode_origin_s(r),
        )

    def _step_options(self, view: TierView, cands: list[Item]) -> list[float]:
        if self.fixed_step_s is not None:
            return [self.fixed_step_s]
        opts = {view.min_tpot_s} if math.isfinite(view.min_tpot_s) else set()
        opts |= {c.tpot_s for c in cands if c.tpot_s < view.min_tpot_s}
        step_len = self.tiers.step_len_s
        if step_len is not None and step_len < view.min_tpot_s:
            opts.add(step_len)  # the current step length stays valid while tighter
        return sorted(opts)

    def plan(self, cands: list[Request], now_s: float, stretch_only: bool = False) -> PlanChoice:
        """The best admission (no state changes). ``stretch_only`` (the executor's per-step
        check) tries only a stretched first step at the current step length."""
        tiers = self.tiers
        start = tiers.plan_start_s(now_s)
        view = tiers.view()
        items = [self.item(c) for c in cands]
        steps = [tiers.step_len_s] if stretch_only else self._step_options(view, items)
        best_key: tuple | None = None
        best: PlanChoice | None = None
        free = self.kvp.free_blocks(start, cands) if items else tiers.kv.capacity_blocks - tiers.reserved_total
        for step in steps:
            if step is None:
                continue
            elig = [c for c in items if c.tpot_s >= step - EPS_S]
            elig_reqs = [c for c, it in zip(cands, items) if it.tpot_s >= step - EPS_S]
            kv = self.kv_read(view, elig_reqs)
            attn = self.attn_context(elig_reqs)
            reqs = self.requests_bound(view, elig_reqs)
            for grid in self._grids(view, elig, start, step, stretch_only, kv, attn, reqs):
                cap = min(grid.first_tokens, grid.step_tokens) - len(view.load)
                if len(elig) <= 1:  # every arrival, can_admit, and re-plans with nothing to promote
                    res = admit_cached(view.mandatory_rows(grid), elig, free, cap)
                else:
                    cfg = self.config
                    res = admit_arrays(
                        view.pending_deadline_s,
                        view.pending_prefill,
                        elig,
                        grid,
                        view.load,
                        free,
                        cap,
                        cfg.max_front,
                        cfg.max_states,
                        view.table(grid),
                    )
                key = (res.feasible, res.value, res.min_leftover_tokens, grid.first_all, step)
                if best_key is None or key > best_key:
                    best_key, best = key, PlanChoice(res, step, grid)
        if best is None:
            return PlanChoice(Admission((), 0.0, True, math.inf), None, None)
        if items and self.count_attn and not best.admission.feasible:
            # a candidate's longer prompt raised the grids' attention bound (``attn_context``) so
            # that the admitted prefills no longer fit them: the candidates are refused, the
            # admitted plan itself is fine (plan_infeasible stays a model/engine disagreement)
            alone = self.plan([], now_s, stretch_only)
            if alone.admission.feasible:
                return alone
        return best

    def kv_read(self, view: TierView, cands: list[Request]) -> int:
        """The KV read a grid's steps are sized with: a bound over the plan's horizon on the
        contexts of the admitted requests and of the candidates (as if all were admitted), so
        that steps hold what the grid promised while contexts grow (issue 16). 0 when the model
        has no KV term."""
        if not self.count_kv:
            return 0
        planned = self.lengths.planned_output
        return kv_bucket(view.kv_read_bound + sum(c.prompt_tokens + planned(c) for c in cands))

    def requests_bound(self, view: TierView, cands: list[Request]) -> int:
        """The requests a grid's steps are sized with: the admitted ones, the candidates (as if
        all were admitted) and the best-effort decodes an engine runs whatever the plan says
        (``best_effort_decodes_forced``), rounded up like the KV read. 0 when the model charges
        nothing per request."""
        if not self.count_requests:
            return 0
        n = view.num_requests + len(cands)
        if self.config.best_effort_decodes_forced:
            n += sum(1 for r in self.tiers.be.values() if is_decoding(r))
        return kv_bucket(max(n, 1))

    def attn_context(self, cands: list[Request]) -> int:
        """The attention context a grid's tokens are charged (``batch.tokens_within``): the
        longest context a prefill token of an admitted request or a candidate reaches (its
        ``num_tokens``), at least 1 (a decode's own pair), rounded up like the KV read. A chunk
        of ``n`` tokens at context ``c`` attends ``n (c + (n + 1)/2)`` pairs, quadratic in its
        context: sized without it, steps carrying long prompts overran their time, the executor
        cut their chunks and admitted TTFTs were missed (docs/planner.md §2). 0 when the model charges no
        prefill attention (the paper form): grids are then unchanged."""
        if not self.count_attn:
            return 0
        longest = max((r.num_tokens for r in self.tiers.slo.values() if r.is_prefilling), default=1)
        longest = max([longest] + [c.num_tokens for c in cands])
        return kv_bucket(max(longest, 1))

    def _grids(
        self,
        view: TierView,
        items: list[Item],
        start: float,
        step: float,
        stretch_only: bool,
        kv: int = 0,
        attn: int = 0,
        reqs: int = 0,
    ) -> list[StepGrid]:
        fixed = self.fixed_tokens
        soonest = min((it.deadline_s for it in items), default=math.inf)
        pending = view.pending_deadline_s
        near = min(soonest, float(pending[0])) if pending.size else soonest  # the soonest prompt due
        grids = (
            []
            if stretch_only
            else [self.grid(start, step, view.earliest_due_s, fixed, kv=kv, attn=attn, reqs=reqs, near_due_s=near)]
        )
        if grids and start < soonest < grids[0].first_end_s - EPS_S:
            # a tight TTFT inside step 0: a shorter step 0 that ends by it can still serve it
            grids.append(self.grid(start, step, min(view.earliest_due_s, soonest), fixed, kv=kv, attn=attn, reqs=reqs))
        first = self.tiers.first_step
        if (
            first is not None
            and abs(first.start_s - start) <= EPS_S
            and step == self.tiers.step_len_s
            and not stretch_only
        ):
            # the first step the last plan committed to is known feasible: keep it an option
            # (grid options are not monotone in the state: a different stretch can lose a step)
            due = first.end_s if not first.carries_all else view.earliest_due_s
            end = first.end_s if first.carries_all else None
            kept = self.grid(start, step, due, fixed, end, kv, attn, reqs, near_due_s=near)
            if kept not in grids:
                grids.append(kept)
        if self.config.stretch_steps and fixed is None:
            end = min([stretch_limit_s(start, view, self.config.max_step_s)] + [it.deadline_s for it in items])
            stretched = self.grid(start, step, view.earliest_due_s, None, end, kv, attn, reqs)
            if end - start > step * STRETCH_MIN and stretched not in grids:
                grids.append(stretched)
        return grids

    def grid(
        self,
        start: float,
        step: float,
        earliest_due_s: float,
        fixed: int | None,
        stretch_end_s: float | None = None,
        kv: int = 0,
        attn: int = 0,
        reqs: int = 0,
        near_due_s: float = -math.inf,
    ) -> StepGrid:
        """``make_grid``, memoized: the arrivals of one step ask for the same few grids.
        ``near_due_s``: the soonest TTFT deadline of an admitted prompt or a candidate (unknown:
        step 0 is sized for the tail)."""
        # the executor ends the first step of a committed plan by its end at the calibration's
        # tail, unless it is a full-length one no prompt is due right after (first_step_at_scale)
        tail = getattr(self.perf, "tail_factor", 1.0)
        if tail < 1.0 and stretch_end_s is None:
            first = min(step, earliest_due_s - start)
            within = self.config.calibrate_first_tail_steps
            if first_step_at_scale(first, step, start + first, near_due_s, within):
                tail = 1.0
        key = (start, step, earliest_due_s, fixed, stretch_end_s, kv, attn, reqs, tail)
        got = self._grid_cache.get(key)
        if got is None:
            if len(self._grid_cache) >= 256:
                self._grid_cache.clear()
            got = self._grid_cache[key] = make_grid(
                self.perf, start, step, earliest_due_s, kv, fixed, stretch_end_s, attn, reqs, tail
            )
        return got

    def clear_grids(self) -> None:
        """The batch-time model's scale changed: grids were sized with the old one."""
        self._grid_cache.clear()

    def promotable(self, now_s: float, limit: int) -> list[Request]:
        """Best-effort requests that have not started and can still make their TTFT."""
        if not self.config.promote_best_effort or limit <= 0:
            return []
        out = []
        for r in self.tiers.be.values():
            if r.num_output_tokens == 0 and self.dl.ttft_s(r) > now_s and not r.route_best_effort:
                out.append(r)
                if len(out) >= limit:
                    break
        return out

    def why_not(self, r: Request) -> AdmitReason:
        start = self.tiers.inflight_end_s if self.tiers.inflight_end_s is not None else r.arrival_s
        return (
            AdmitReason.NO_KV if self.lengths.mem_blocks(r) > self.kvp.free_blocks(start, [r]) else AdmitReason.NO_TIME
        )

    def infeasible_alone(self, r: Request) -> bool:
        perf = self.perf
        too_slow = perf.zero_load_prefill_s(r.prompt_tokens) > self.dl.ttft_s(r) - r.arrival_s
        return too_slow or perf.one_token_step_s() > self.dl.min_tpot_s(r)
