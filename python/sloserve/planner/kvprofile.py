"""KV admission on the time profile: the peak KV the admitted requests can hold from now on.

Reserving ``prompt + output`` for an admitted request's whole life over-counts: it holds that
much only at its end, and the plan guarantees its end (its last token's deadline). Two bounds
that hold whatever the executor does make this safe:

* growth: a request gains at most ``tokens_per_step`` tokens per step, and no step is shorter
  than ``min_step_s`` (the batch time of one token), so at time ``t`` it holds at most
  ``min(full, held + tokens_per_step * (ceil((t - start) / min_step_s) + 1))`` tokens (with
  speculation, a rate: ``KVProfile.growth``). With a run bound ``(c, run_step_s)`` the steps
  counted are also at most ``ceil((t - start) / run_step_s) + c + 1`` (``KVProfile.run_bound``:
  no K consecutive steps ran faster than ``run_step_s`` each on average, planner/calibrate.py,
  and ``c`` covers the fewer than K steps outside whole runs);
* completion: an admitted request finishes by its last token's deadline ``F`` (the plan's
  guarantee), after which it holds nothing.

The sum of these bounds is non-decreasing between completions, so its maximum over ``t >= start``
is reached just before some ``F`` (counting every request with ``F_r >= F``). A candidate fits if
its full reservation fits under ``capacity - peak``: then at every future time the admitted
requests' KV is within the pool, so none of them is ever preempted (docs/planner.md, section 3).
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import numpy as np

from sloserve.core.request import Request
from sloserve.planner.deadlines import Deadlines
from sloserve.planner.growth import GrowthCalibration
from sloserve.planner.lengths import LengthPlanner
from sloserve.planner.state import TierState

TABLE_CELLS = 16_384  # up to (times x requests) this many, PeakProfile.of sums the plain table


def peak_blocks(
    held_tokens: np.ndarray,
    full_tokens: np.ndarray,
    finish_s: np.ndarray,
    start_s: float,
    min_step_s: float,
    tokens_per_step: int,
    block_tokens: int,
    run: tuple[int, float] | None = None,
) -> int:
    """Largest total of per-request KV blocks the bounds above allow at any time >= start_s."""
    return PeakProfile.of(
        held_tokens, full_tokens, finish_s, start_s, min_step_s, tokens_per_step, block_tokens, run
    ).peak()


def run_extra_steps(k_steps: int, tokens_per_step: int, min_s: float, run_s: float) -> int:
    """``c`` of the growth bound's run form: steps (or tokens) beyond ``h / run_s`` that can fit in
    a horizon ``h`` when every ``k_steps`` consecutive steps take at least ``k_steps x run_s`` (in
    units, ``tokens_per_step`` a step) and no unit is faster than ``min_s``. Split the steps into
    whole runs and fewer than ``k_steps`` left over: the runs gain at most their time over
    ``run_s``, the rest at most ``(k_steps - 1) x tokens_per_step`` units, of which their own time
    (at least ``min_s`` a unit) already counts the share ``min_s / run_s``."""
    if run_s <= min_s:
        return 0
    return math.ceil((k_steps - 1) * tokens_per_step * (1.0 - min_s / run_s))


class PeakProfile:
    """The bounds' total per finish time (the only times a maximum can occur), kept so that one
    more request is added in O(residents + times) instead of recomputing the (times x residents)
    table: admitting a request, or asking whether a candidate fits, touches one column and at
    most one new row. Integer sums, so an extended profile equals a rebuilt one exactly."""

    def __init__(
        self,
        start_s: float,
        min_step_s: float,
        tokens_per_step: int,
        block_tokens: int,
        run: tuple[int, float] | None = None,
    ) -> None:
        if not (min_step_s > 0 and tokens_per_step >= 1 and block_tokens >= 1):
            raise ValueError("min_step_s, tokens_per_step and block_tokens must be positive")
        if run is not None and not (run[0] >= 0 and run[1] > 0):
            raise ValueError("a run bound needs c >= 0 extra steps and a positive step time")
        self.start_s, self.min_step_s, self.tps, self.block = start_s, min_step_s, tokens_per_step, block_tokens
        self.run = run
        self.held = self.full = np.zeros(0, dtype=np.int64)
        self.fin = self.times = np.zeros(0)
        self.sums = np.zeros(0, dtype=np.int64)  # blocks held just before each of ``times``
        self.forever = 0  # blocks of requests with no finish time ahead (late: full for good)
        self.full_blocks_total = 0
        self._peak: int | None = None
        self._step_counts: np.ndarray | None = None  # _time_steps()

    @staticmethod
    def of(
        held_tokens,
        full_tokens,
        finish_s,
        start_s: float,
        min_step_s: float,
        tokens_per_step: int,
        block_tokens: int,
        run: tuple[int, float] | None = None,
    ) -> "PeakProfile":
        p = PeakProfile(start_s, min_step_s, tokens_per_step, block_tokens, run)
        full = np.asarray(full_tokens, dtype=np.int64)
        held = np.minimum(np.asarray(held_tokens, dtype=np.int64), full)
        fin = p._normalize(np.asarray(finish_s, dtype=np.float64))
        finite = np.isfinite(fin)
        full_blocks = -(-full // block_tokens)
        p.held, p.full, p.fin = held, full, fin
        p.forever = int(full_blocks[~finite].sum())
        p.full_blocks_total = int(full_blocks.sum())
        p.times = np.unique(fin[finite])
        if p.times.size:
            p.sums = p._sums(held[finite], full[finite], fin[finite])
        return p

    def _sums(self, held: np.ndarray, full: np.ndarray, fin: np.ndarray) -> np.ndarray:
        """Per time, the sum of ``_blocks`` over requests with finite finish times, exactly, in
        O((requests + times) x block) instead of the (times x requests) table, which grows with
        the square of the admitted set and is rebuilt every step. Request r counts at times j <= J_r (its finish); from
        j = S_r on its bound is its full size, before it ``ceil((h + k s_j) / B)``, and with
        ``h + B - 1 = B q + m`` that is ``q + (m + x) // B`` for ``x = k s_j``, which is
        ``q + x // B`` plus 1 when ``m >= B - x % B``: so the unsaturated requests at j are
        summed from their count, their q's and how many have each m. Both ways give the same
        integers (tested)."""
        T, B, k = self.times.size, self.block, self.tps
        if T * held.size <= TABLE_CELLS:  # a small table is cheaper than the dozen steps below
            return self._blocks(held[None, :], full[None, :], fin[None, :], self.times[:, None]).sum(axis=1)
        steps = self._time_steps()
        last = np.searchsorted(self.times, fin)  # J_r: fin is one of the times
        need = -(-(full - held) // k)  # steps until the request's bound is its full size
        sat = np.searchsorted(steps, need)  # S_r: first time with steps >= need
        end = np.minimum(sat, last + 1)  # unsaturated at j < end
        full_blocks = -(-full // B)
        # saturated at S_r <= j <= J_r: a difference array
        on = sat <= last
        diff = np.bincount(sat[on], full_blocks[on], minlength=T + 1)
        diff -= np.bincount(last[on] + 1, full_blocks[on], minlength=T + 2)[: T + 1]
        total = np.cumsum(diff[:T])
        # unsaturated at j < end: per j, how many in each residue m (rows: counts ending at e)
        q, m = np.divmod(held + B - 1, B)
        ending = np.bincount(end * B + m, minlength=(T + 1) * B).reshape(T + 1, B)
        by_m = np.cumsum(ending[::-1], axis=0)[::-1][1:]  # [j, m]: requests with end > j
        count = by_m.sum(axis=1)
        q_sum = np.cumsum(np.bincount(end, q, minlength=T + 1)[::-1])[::-1][1:]
        x = k * steps
        at_least = np.cumsum(by_m[:, ::-1], axis=1)[:, ::-1]  # [j, t]: those with m >= t
        thr = B - x % B  # 1..B; m >= B never
        extra = np.where(thr < B, at_least[np.arange(T), np.minimum(thr, B - 1)], 0)
        return (total + q_sum + count * (x // B) + extra).astype(np.int64)

    def _normalize(self, fin: np.ndarray) -> np.ndarray:
        # a finish time that is not finite or already past (a late request, only possible when the
        # model and the engine disagree) keeps the request at its full size for good
        return np.where(np.isfinite(fin) & (fin >= self.start_s), fin, math.inf)

    def _steps(self, times) -> np.ndarray:
        """Steps the growth bound counts by each time (steps ending by then, and the one in flight)."""
        h = np.asarray(times, dtype=np.float64) - self.start_s
        n = np.ceil(h / self.min_step_s)
        if self.run is not None:
            c, run_s = self.run
            n = np.minimum(n, np.ceil(h / run_s) + c)
        return (n + 1).astype(np.int64)

    def _steps_one(self, t: float) -> int:
        """``_steps`` at one time, in plain floats (the same arithmetic)."""
        h = t - self.start_s
        n = math.ceil(h / self.min_step_s)
        if self.run is not None:
            c, run_s = self.run
            n = min(n, math.ceil(h / run_s) + c)
        return n + 1

    def _blocks(self, held, full, fin, times) -> np.ndarray:
        """Blocks each request may hold just before each time (0 once finished or never-finishing)."""
        steps = self._steps(times)
        size = np.minimum(held + self.tps * steps, full)
        return np.where((fin >= times) & np.isfinite(fin), -(-size // self.block), 0)

    def _time_steps(self) -> np.ndarray:
        """``_blocks``'s step counts at ``times``, kept with them (they change only by insertion)."""
        if self._step_counts is None or self._step_counts.size != self.times.size:
            self._step_counts = self._steps(self.times)
        return self._step_counts

    def _request_blocks(self, held: int, full: int, fin: float) -> np.ndarray:
        """``_blocks(held, full, fin, self.times)`` for one request with a finite finish time."""
        size = np.minimum(held + self.tps * self._time_steps(), full)
        return np.where(self.times <= fin, -(-size // self.block), 0)

    def _row(self, t: float) -> int:
        """``_blocks(self.held, self.full, self.fin, t).sum()``: every request's blocks at one time."""
        steps = self._steps_one(t)
        live = (self.fin >= t) & (self.fin != math.inf)
        return int((-(-np.minimum(self.held[live] + self.tps * steps, self.full[live]) // self.block)).sum())

    def add(self, held: int, full: int, finish_s: float) -> None:
        """One more request, in place (the planner's kept profile, extended on every admission).
        Arrays are replaced, never written into, so a copy made before stays as it was."""
        held = min(held, full)
        fin = finish_s if math.isfinite(finish_s) and finish_s >= self.start_s else math.inf  # as _normalize
        full_blocks = -(-full // self.block)
        # np.concatenate: np.append and np.insert cost several times more on these short arrays
        self.held = np.concatenate((self.held, [held]))
        self.full = np.concatenate((self.full, [full]))
        self.fin = np.concatenate((self.fin, [fin]))
        self.full_blocks_total += full_blocks
        self._peak = None
        if not math.isfinite(fin):
            self.forever += full_blocks
            return
        sums = self.sums + self._request_blocks(held, full, fin) if self.sums.size else self.sums
        at = int(np.searchsorted(self.times, fin))
        if at == self.times.size or self.times[at] != fin:  # a new finish time: its row in full
            steps = self._time_steps()
            self.times = np.concatenate((self.times[:at], [fin], self.times[at:]))
            step = self._steps_one(fin)
            self._step_counts = np.concatenate((steps[:at], [step], steps[at:]))
            sums = np.concatenate((sums[:at], [self._row(fin)], sums[at:]))
        self.sums = sums

    def peak(self) -> int:
        if self._peak is None:  # cached until the next add()
            self._peak = self.forever + (int(self.sums.max()) if self.sums.size else 0)
        return self._peak

    def peak_with(self, held: int, full: int, finish_s: float) -> int:
        """``with_request(held, full, finish_s)``'s ``peak()``, capped like ``KVProfile._peak``
        at the total of full reservations, without building that profile: asking whether a
        candidate fits is the planner's most frequent KV question (every refused arrival)."""
        held = min(held, full)
        full_blocks = -(-full // self.block)
        total = self.full_blocks_total + full_blocks
        if not (math.isfinite(finish_s) and finish_s >= self.start_s):
            return min(self.peak() + full_blocks, total)  # held full for good: on top of the cached peak
        best = int((self.sums + self._request_blocks(held, full, finish_s)).max()) if self.sums.size else 0
        at = int(np.searchsorted(self.times, finish_s))
        if at == self.times.size or self.times[at] != finish_s:  # its own finish time is a new row
            own = min(held + self.tps * self._steps_one(finish_s), full)
            best = max(best, self._row(finish_s) + -(-own // self.block))
        return min(self.forever + best, total)

    def with_request(self, held: int, full: int, finish_s: float) -> "PeakProfile":
        """This profile plus one request, as a new profile (``add`` only ever replaces arrays, so
        the two share them safely)."""
        out = copy.copy(self)
        out.add(held, full, finish_s)
        return out


class CachedProfile(NamedTuple):
    view: object  # the TierView it was built for (compared by identity)
    start_s: float
    profile: PeakProfile


class StaticColumn(NamedTuple):
    """What an admitted request's column needs that is fixed once its first token is out."""

    first_token_s: float | None
    full_tokens: int
    finish_s: float


class KVProfile:
    """The policy's KV check: the sum of full reservations, or (``kv_profile``) the profile above,
    over the admitted requests of ``tiers``, with its own caches."""

    def __init__(
        self,
        enabled: bool,
        ctx,
        tiers: TierState,
        lengths: LengthPlanner,
        dl: Deadlines,
        growth_relax: float = 1.0,
        growth_cal: GrowthCalibration | None = None,
    ) -> None:
        self.enabled = enabled and lengths.mode != "predict"  # predict mode keeps full reservations
        self.ctx, self.tiers, self.lengths, self.dl = ctx, tiers, lengths, dl
        # ablation (``kv_growth_relax``): > 1 divides the growth bound's rate, which is then no
        # longer a bound; it measures what the physical bound costs (docs/results.md §3b)
        self.growth_relax = growth_relax
        spec = getattr(ctx, "spec", None)
        # positions one step may verify per request (None: no speculation); fixed for the policy's life
        self.spec_k = (
            None
            if spec is None or getattr(spec, "mode", "off") == "off"
            else max(int(getattr(spec, "max_spec_len", 1)), int(getattr(spec, "fixed_len", 1)), 1)
        )
        # tokens the growth bound counts as held from the start (growth()): the steps in flight
        self.held_extra = 0 if self.spec_k is None else 2 * self.spec_k - 1
        # the residents' observed growth (planner/growth.py), under speculation only: there the
        # physical bound counts every draft accepted; one token per step is what a plain
        # request gains, and counting less than that admitted more early and fewer in all
        self.growth_cal = growth_cal if self.spec_k is not None else None
        self._profile: CachedProfile | None = None
        self._kvp_static: dict = {}

    @staticmethod
    def from_config(cfg, ctx, tiers: TierState, lengths: LengthPlanner, dl: Deadlines) -> "KVProfile":
        cal = GrowthCalibration(cfg.kv_growth_quantile, cfg.kv_growth_margin) if cfg.kv_growth_calibrate else None
        return KVProfile(cfg.kv_profile, ctx, tiers, lengths, dl, cfg.kv_growth_relax, cal)

    def observe(self, plan, produced: dict, now_s: float) -> None:
        """A step ending at ``now_s`` produced these tokens (the growth calibration's samples)."""
        if self.growth_cal is not None and self.enabled:
            self.growth_cal.observe(plan.items, produced, self.tiers.slo, now_s)

    def free_blocks(self, start_s: float, cands: list[Request] = ()) -> int:
        """KV blocks new admissions may take: capacity minus the sum of full reservations, or
        (``kv_profile``) minus the peak the admitted requests can hold from ``start_s`` on. With a
        single candidate the profile includes it (its own ramp and end): the answer is then its
        full size when that fits (else the profile's free blocks without it, less than its size)."""
        cap = self.tiers.kv.capacity_blocks
        reserved_free = cap - self.tiers.reserved_total
        if not self.enabled:
            return reserved_free
        if cands and sum(self.lengths.mem_blocks(c) for c in cands) <= reserved_free:
            # the full reservations hold every candidate already; the profile never counts more
            # than them, so it would admit the same: no need to build it (most arrivals while
            # KV does not bind)
            return reserved_free
        prof = self.profile(start_s)
        free = cap - self._peak(prof)
        if len(cands) == 1 and cands[0].request_id not in self.tiers.slo:
            c = cands[0]
            need = self.lengths.mem_blocks(c)
            if need > free and prof.peak_with(*self._column(c)) <= cap:
                return need
        return free

    def peak_above(self, blocks: float, start_s: float) -> bool:
        """Whether the KV the admitted requests may hold from ``start_s`` on exceeds ``blocks``
        (``capacity - free_blocks(start_s) > blocks``), building the profile only when their full
        reservations, which it never exceeds, do."""
        if self.tiers.reserved_total <= blocks:
            return False
        return self.tiers.kv.capacity_blocks - self.free_blocks(start_s) > blocks

    def profile(self, start_s: float) -> PeakProfile:
        """The admitted requests' profile from ``start_s``, cached with the tier view; a view
        extended by one admission extends the cached profile (``on_admitted``)."""
        view = self.tiers.view()
        got = self._profile
        if got is not None and got.view is view and got.start_s == start_s:
            return got.profile
        rs = list(self.tiers.slo.values())
        old = self._kvp_static
        self._kvp_static = {r.request_id: self._static(r, old.get(r.request_id)) for r in rs}  # members only
        static = list(self._kvp_static.values())
        min_step_s, tps = self.growth()
        min_step_s *= self.growth_relax
        rate_tps = self.growth_cal.rate_tps() if self.growth_cal is not None else None
        if rate_tps is not None:  # the residents' observed growth, when below the physical bound
            min_step_s = max(min_step_s, tps / rate_tps)
        prof = PeakProfile.of(
            np.array([self._held(r) for r in rs], dtype=np.int64),
            np.array([x.full_tokens for x in static], dtype=np.int64),
            np.array([x.finish_s for x in static], dtype=np.float64),
            start_s,
            min_step_s,
            tps,
            self.tiers.kv.block_size_tokens,
            self.run_bound(),
        )
        self._profile = CachedProfile(view, start_s, prof)
        return prof

    def _shortest_step_s(self) -> float:
        """No step is shorter (the growth bound): the one-token batch time, or with calibration
        the model's scaled by the fastest step observed relative to it (planner/calibrate.py)."""
        perf = self.ctx.perf
        shortest = getattr(perf, "shortest_step_s", None)
        return shortest() if shortest is not None else perf.one_token_step_s()

    def run_bound(self) -> tuple[int, float] | None:
        """The growth bound's run form ``(c, run_s)``: over a horizon ``h`` a request gains at most
        ``ceil(h / run_s) + c`` of the growth bound's units (tokens; with speculation tokens at the
        rate ``growth`` counts), from the calibration's run bound (planner/calibrate.py
        ``shortest_run_s``: K consecutive steps take at least ``low_run`` x their predicted time).

        Whole runs of K steps gain at most ``h / run_s`` units, ``run_s`` being ``growth``'s unit
        at the run's scale instead of the fastest single step's; the fewer than K steps left over
        gain at most ``(K - 1) x k`` tokens (``k``: tokens one step may verify), of which the time
        they took already pays all but the share ``1 - min_s / run_s``, hence
        ``c = ceil((K - 1) x k x (1 - min_s / run_s))``. None without a run bound. Under 10% step
        noise the fastest single step is about 0.74 of the model's and a run of 16 about 0.93:
        counted for every step to a finish hundreds of steps away, the single step held
        reasoning to 1.24 requests/s/GPU against 1.38 on an exact engine (docs/planner.md §3b)."""
        got = getattr(self.ctx.perf, "shortest_run_s", None)
        got = got() if got is not None else None
        if got is None:
            return None
        k_steps, run_one_s = got
        min_s, _ = self.growth()
        if self.spec_k is None:
            return run_extra_steps(k_steps, 1, min_s, run_one_s), run_one_s
        run_s = self._spec_token_s(run_one_s)
        return run_extra_steps(k_steps, self.spec_k, min_s, run_s), run_s

    def on_admitted(self, r: Request, old_view, new_view) -> None:
        """``r`` joined the tier (``new_view`` extends ``old_view``): extend a cached profile."""
        got = self._profile
        if got is not None and got.view is old_view and self.enabled:
            st = self._kvp_static[r.request_id] = self._static(r, None)
            got.profile.add(self._held(r), st.full_tokens, st.finish_s)
            self._profile = CachedProfile(new_view, got.start_s, got.profile)

    def _held(self, r: Request) -> int:
        """Tokens the growth bound starts ``r`` from: prompt, tokens out, the step in flight's one
        (KV is taken at a step's start), and ``held_extra`` under speculation."""
        return r.prompt_tokens + r.num_output_tokens + 1 + self.held_extra

    def _column(self, r: Request) -> tuple[int, int, float]:
        """(held, full, finish) of a request that has not started (a candidate or a new admission)."""
        return (self._held(r), r.prompt_tokens + self.lengths.planned_output(r), self._finish_s(r))

    def invalidate(self, rids=()) -> None:
        """Deadlines of these residents changed (re-pacing): drop their cached columns and the profile."""
        self._profile = None
        for rid in rids:
            self._kvp_static.pop(rid, None)

    def _static(self, r: Request, got: StaticColumn | None) -> StaticColumn:
        """(first-token time, full size, finish time) of an admitted request: fixed once its first
        token is out (reserve mode; the profile is off in predict mode), so cached per request."""
        if got is None or got.first_token_s != r.first_token_s:
            full = r.prompt_tokens + self.lengths.planned_output(r)
            got = StaticColumn(r.first_token_s, full, self._finish_s(r))
        return got

    def _peak(self, prof: PeakProfile) -> int:
        return min(prof.peak(), prof.full_blocks_total)

    def _finish_s(self, r: Request) -> float:
        """Deadline of the last planned token (the plan guarantees it; before the first token
        is out, t0 is at most the TTFT deadline)."""
        n = self.lengths.planned_output(r)
        if n <= 1:
            return self.dl.ttft_s(r)
        if r.first_token_s is not None:
            return self.dl.token_s(r, n)  # honours re-paced deadlines (planner/repace.py)
        return self.dl.ttft_s(r) + self.dl.cumulative_tpot_s(r, n)

    def growth(self) -> tuple[float, int]:
        """The growth bound as (shortest step, tokens per step), from ``held_extra`` tokens on.

        Without speculation: one token per step, no step shorter than ``_shortest_step_s``. With
        speculation a step verifying ``1 + d`` positions gains at most ``1 + d`` tokens but also
        runs ``d`` draft steps, so a request gains at most ``rate = max_d (1 + d) / s(d)`` tokens a
        second (``s(d)``: one request's step with ``d`` drafts, scaled like the shortest step), far
        below ``K`` tokens per one-token step (opt-13b-tp2-a100, K = 4: 95 against 126 tokens/s;
        the bound before counted K + 1, 157). It is counted as one token per ``1 / rate``, from
        ``held_extra = 2K - 1`` tokens more: the steps in flight at the start and at ``t`` each
        reserve up to ``K`` positions."""
        shortest_s = self._shortest_step_s()
        if self.spec_k is None:
            return shortest_s, 1
        return self._spec_token_s(shortest_s), 1

    def _spec_token_s(self, one_token_s: float) -> float:
        """Under speculation, seconds per token at the fastest rate ``max_d (1 + d) / s(d)`` with
        the model scaled so that its one-token step takes ``one_token_s``."""
        base = getattr(self.ctx.perf, "base", self.ctx.perf)
        scale = one_token_s / base.one_token_step_s()
        steps = range(self.spec_k)
        rate = max((1 + d) / (base.batch_time_s(1 + d, spec_steps=d, num_requests=1) * scale) for d in steps)
        return 1.0 / rate
