"""The step executor: fills one step from the tiers (planner/execute.py's order) and sizes it.

Between re-plans ``step`` only fills steps, ``O(residents)``: forced SLO decodes, admitted
prefills by TTFT deadline, decodes not yet due, best effort FIFO (none while the SLO tier's
reserved KV binds, docs/planner.md §4). The step ends by the earliest decode deadline, or by the
first step the last plan was checked with, or later when a stretched step is kept feasible.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Callable

from sloserve.core.plan import RequestEvent, StepPlan
from sloserve.core.request import Request
from sloserve.planner.batch import EPS_S, first_step_at_scale, reads_kv, reads_requests
from sloserve.planner.execute import StepBuilder, fill_step, is_decoding, step_window
from sloserve.planner.state import TierState

RECENT_TTFT_REQUESTS = 256  # the window the tightest TTFT SLO is taken over (a workload's mix changes)


class StepExecutor:
    def __init__(
        self,
        config,
        perf,
        tiers: TierState,
        dl,
        calib,
        reasons: Counter,
        plan: Callable,
        preempt: Callable[[Request, float], RequestEvent],
        may_stretch: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config, self.perf, self.tiers, self.dl, self.calib = config, perf, tiers, dl, calib
        self.reasons, self.plan, self.preempt, self.may_stretch = reasons, plan, preempt, may_stretch
        # a step reads the KV of every request in it: the cap follows the items' contexts (issue 16)
        self.count_kv = config.count_kv_read and reads_kv(perf)
        # and pays for each request in it (a fitted per-request term): the cap follows their count
        self.count_requests = config.count_kv_read and reads_requests(perf)
        self.recent_ttft_s: OrderedDict[str, float] = OrderedDict()  # TTFT SLOs of recent requests
        self.end_s = float("inf")  # the latest end of the step ``step`` filled last

    def step(self, now_s: float) -> StepPlan:
        tiers, dl = self.tiers, self.dl
        events: list[RequestEvent] = []
        step = tiers.step_len_s if tiers.step_len_s is not None else self.idle_step_s()
        decoders = [(dl.next_token_s(r), r) for r in tiers.slo.values() if is_decoding(r)]
        prefills = sorted((r for r in tiers.slo.values() if not is_decoding(r)), key=dl.ttft_s)
        tail = self.calib.tail_factor if self.calib is not None else 1.0
        if tail < 1.0:  # a step bound by a decode deadline must end by it even when it runs slow
            decoders = [(now_s + (due - now_s) * tail, r) for due, r in decoders]
        end_s, forced, optional = step_window(now_s, step, decoders)
        decode_end_s = end_s
        first = tiers.first_step
        if first is not None and not first.carries_all and first.end_s > now_s + EPS_S:
            # the first step the plan was checked with (its end may be earlier: a tight TTFT
            # admitted while the step in flight ran). Kept when that step ended off its planned
            # time too, as an engine that is not the model makes every step do: ignored, the
            # step ran to its full length past the first token the plan had promised (issue 15).
            # Sized for the tail unless no prompt is due right after it (first_step_at_scale)
            soonest = self.dl.ttft_s(prefills[0]) if prefills else float("inf")
            within = self.config.calibrate_first_tail_steps
            at_scale = first_step_at_scale(first.end_s - first.start_s, step, first.end_s, soonest, within)
            end_s = min(end_s, now_s + (first.end_s - now_s) * (1.0 if at_scale else tail))
        # an engine that decodes every running request each step (SGLang) runs the best-effort
        # decodes whatever the plan says: plan them as forced, or the step's cost is understated
        be_running = [r for r in tiers.be.values() if is_decoding(r)] if self.config.best_effort_decodes_forced else []
        end_s = self._ttft_end_s(now_s, end_s, tail, prefills, len(forced) + len(be_running), forced, decode_end_s)
        best_effort = [] if tiers.reserved_kv_binds() else list(tiers.be.values())
        stretch_end = self._stretch_end(now_s, end_s, prefills, best_effort)
        if stretch_end is not None:
            stretch_end = now_s + (stretch_end - now_s) * tail
            end_s, forced, optional = stretch_end, sorted(decoders, key=lambda x: x[0]), []
        tiers.first_step = None
        self.end_s = end_s  # the step's latest end: what a decorator adding drafts must keep to
        cap_at = self._cap_at(end_s - now_s)
        floor = max(len(forced) + len(be_running), 1)
        if cap_at(sum(r.num_computed_tokens for _, r in forced), floor) < floor:
            self.reasons["step_overdue"] += 1
        builder = StepBuilder(floor, lambda r, n, slo: self._reserve(r, n, slo, builder, events, now_s))
        if self.count_kv or self.count_requests:
            builder.cap_at = cap_at
        else:
            builder.cap_tokens = max(cap_at(0, 0), floor)
        be_cap = self._best_effort_cap(now_s, end_s, cap_at) if best_effort else None
        dropped = fill_step(builder, forced, prefills, best_effort, optional, be_cap, be_running)
        if dropped:
            self.reasons["decode_overload"] += dropped
        events = tiers.take_events() + events
        num_forced = len(forced) + len(be_running)
        plan = StepPlan(tuple(self._fit(builder.items, num_forced, end_s - now_s)), tuple(events))
        if plan.is_empty:
            tiers.clear_inflight()
        else:
            tiers.set_inflight(plan, now_s + self.perf.plan_time_s(plan))
        return plan

    def _ttft_end_s(
        self,
        now_s: float,
        end_s: float,
        tail: float,
        prefills: list,
        num_forced: int,
        forced: list,
        decode_end_s: float = float("inf"),
    ) -> float:
        """A step that can finish an admitted prompt before its TTFT deadline ends by that
        deadline even at the tail ratio (at the calibrated scale when the tail-sized step cannot
        hold it, with the ``num_forced`` decodes and the prompts due before it). Padded with later
        work to the full step length, the step that carried a prompt's last chunk ran past its
        deadline under noise (issue 15). So does a step whose end leaves no time for another
        step before a prompt's deadline (less than one one-token step at the tail; only on an
        engine that is not the model, so paper mode plans as before): it is the
        prompt's last chance, and may run past ``end_s`` to it, but never past ``decode_end_s``
        (the decodes' deadlines). Cut at ``end_s`` instead (a first step the plan committed to,
        sized at the tail), it left a few of the prompt's tokens to a step that could only end
        after the deadline: a certain miss."""
        need = num_forced
        kv = sum(r.num_computed_tokens for _, r in forced)
        # an exact engine (tail 1) keeps the plan's steps as they were checked
        last_gap_s = self.perf.one_token_step_s() / tail if tail < 1.0 else 0.0
        for i, r in enumerate(prefills):
            need += r.remaining_compute_tokens
            kv += r.num_computed_tokens
            due_s = self.dl.ttft_s(r)
            if due_s >= end_s + last_gap_s or due_s > decode_end_s:
                return end_s
            reqs = num_forced + i + 1
            for limit_s in (now_s + (due_s - now_s) * tail, due_s):  # tail_factor <= 1
                if limit_s > now_s and self._cap_at(limit_s - now_s)(kv, reqs) >= need:
                    return limit_s
        return end_s

    def _best_effort_cap(
        self, now_s: float, end_s: float, cap_at: Callable[[int, int], int]
    ) -> Callable[[int, int], int]:
        """Best effort fills a step only up to ``best_effort_step_frac`` of the tightest TTFT SLO
        among the last ``RECENT_TTFT_REQUESTS`` requests seen resident while best effort waits:
        an SLO request that arrives while the step runs waits for its end, and a step padded with
        best-effort work to the full step length left a tight TTFT no time to be admitted
        (measured: half the arrivals of an overload turned away, issue 16)."""
        frac = self.config.best_effort_step_frac
        recent = self.recent_ttft_s
        for r in (*self.tiers.slo.values(), *self.tiers.be.values()):
            if r.request_id not in recent:
                recent[r.request_id] = r.ttft_slo_s
                if len(recent) > RECENT_TTFT_REQUESTS:
                    recent.popitem(last=False)
        # never below two one-token steps: best effort alone must still get a step (cf. idle_step_s)
        pad_s = max(frac * min(recent.values(), default=float("inf")), 2.0 * self.perf.one_token_step_s())
        limit = now_s + pad_s
        if frac <= 0 or limit >= end_s:
            return cap_at
        return self._cap_at(limit - now_s)

    def _cap_at(self, length_s: float) -> Callable[[int, int], int]:
        """The step's token cap as a function of its KV read and its request count (each ignored
        unless the model charges it and ``count_kv_read`` is on)."""
        if length_s <= EPS_S:
            return lambda kv, reqs: 0
        fixed, perf, limit = self.config.fixed_batch_tokens, self.perf, length_s - EPS_S
        count_kv, count_reqs = self.count_kv, self.count_requests

        def cap(kv: int, reqs: int) -> int:
            n = perf.max_tokens_within_s(limit, 0, kv if count_kv else 0, num_requests=reqs if count_reqs else 0)
            return min(n, fixed) if fixed else n

        return cap

    def idle_step_s(self) -> float:
        """Step length while no SLO-tier request is resident (best effort only): ``idle_step_s``
        when such a step holds a token, else twice the one-token batch time. (With a model whose
        base step exceeded ``idle_step_s`` the idle step held no token, every plan was empty and
        best-effort work starved forever.)"""
        idle, perf = self.config.idle_step_s, self.perf
        one = perf.max_tokens_within_s(idle - EPS_S, num_requests=1) >= 1
        return idle if one else 2.0 * perf.one_token_step_s()

    def _fit(self, items: list, num_forced: int, limit_s: float) -> list:
        """Trim trailing non-forced items until the exact batch time fits (models whose time
        depends on attention terms that the token cap ignores); a no-op for the paper form.

        The last item keeps the most tokens that fit (a search on the exact time): halving it,
        as before, threw away up to half a step that the admission grid had counted on, and
        admitted TTFTs were missed on the roofline presets (docs/planner.md §2, prefill attention)."""
        perf = self.perf
        keep = num_forced if num_forced or self.tiers.slo else 1  # nothing else runs: best effort keeps a token

        def with_last(n: int) -> list:
            last = items[-1]
            return items[:-1] + [type(last)(last.request_id, n, last.spec_draft_tokens, last.context_tokens)]

        def fits(trial: list) -> bool:
            return perf.plan_time_s(StepPlan(tuple(trial))) <= limit_s + 1e-12

        while len(items) > num_forced and not fits(items):
            lo, hi = 0, items[-1].num_tokens  # hi does not fit; find the largest n < hi that does
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if fits(with_last(mid)):
                    lo = mid
                else:
                    hi = mid
            if lo >= 1:
                items = with_last(lo)
            elif len(items) > keep:
                items.pop()
            else:
                items = with_last(1) if items[-1].num_tokens > 1 else items
                break
        return items

    def _stretch_end(
        self, now_s: float, std_end_s: float, prefills: list[Request], best_effort: list[Request]
    ) -> float | None:
        """End of a stretched step when the last plan chose one for now (or for a start the step
        in flight missed), or when a check shows that one is worth it and keeps every admitted
        deadline; None for a standard step."""
        if not self.may_stretch():
            return None
        first = self.tiers.first_step
        if first is not None and first.carries_all and first.end_s > now_s + EPS_S:
            # the stretched first step the last plan committed to, kept to its end when the step
            # in flight ended off its planned time (an engine that is not the model makes every
            # step do). Re-checked from the late start, it was found infeasible by those few ms,
            # and the standard steps run instead hold far fewer tokens per second: the prompts it
            # was committed for missed their TTFT by hundreds of ms (issue 15)
            return first.end_s
        if first is not None and abs(first.start_s - now_s) <= EPS_S:
            return None
        if not self.config.stretch_steps or self.config.fixed_batch_tokens or self.tiers.step_len_s is None:
            return None
        demand = sum(r.remaining_compute_tokens for r in prefills)
        demand += sum(r.remaining_compute_tokens for r in best_effort)
        kv = sum(r.num_computed_tokens for r in (*self.tiers.slo.values(), *best_effort)) if self.count_kv else 0
        reqs = len(self.tiers.slo) + len(best_effort) if self.count_requests else 0
        if demand <= self.perf.max_tokens_within_s(std_end_s - now_s - EPS_S, 0, kv, num_requests=reqs):
            return None  # a standard step already holds all the work
        res, _, grid = self.plan([], now_s, stretch_only=True)
        if grid is None or not grid.first_all or not res.feasible:
            return None
        self.reasons["stretched_steps"] += 1
        return grid.first_end_s

    def _reserve(self, r: Request, n: int, slo: bool, builder: StepBuilder, events: list, now_s: float) -> bool:
        """KV for n more tokens; admitted requests preempt best effort (LIFO), best effort
        preempts only younger best effort."""
        kv = self.tiers.kv
        total = r.num_computed_tokens + n
        if kv.grow(r.request_id, total):
            return True
        be = self.tiers.be
        order = list(be)
        younger = order if slo else order[order.index(r.request_id) + 1 :]
        for rid in reversed(younger):
            if rid in builder.ids or not kv.held_blocks(rid):
                continue
            events.append(self.preempt(be[rid], now_s))
            if kv.grow(r.request_id, total):
                return True
        return False
