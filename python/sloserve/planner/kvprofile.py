"""KV admission on the time profile: the peak KV the admitted requests can hold from now on.

Reserving ``prompt + output`` for an admitted request's whole life over-counts: it holds that
much only at its end, and the plan guarantees its end (its last token's deadline). Two bounds
that hold whatever the executor does make this safe:

* growth: a request gains at most ``tokens_per_step`` tokens per step, and no step is shorter
  than ``min_step_s`` (the batch time of one token), so at time ``t`` it holds at most
  ``min(full, held + tokens_per_step * (ceil((t - start) / min_step_s) + 1))`` tokens;
* completion: an admitted request finishes by its last token's deadline ``F`` (the plan's
  guarantee), after which it holds nothing.

The sum of these bounds is non-decreasing between completions, so its maximum over ``t >= start``
is reached just before some ``F`` (counting every request with ``F_r >= F``). A candidate fits if
its full reservation fits under ``capacity - peak``: then at every future time the admitted
requests' KV is within the pool, so none of them is ever preempted (docs/planner.md, section 3).
"""

from __future__ import annotations

import math

import numpy as np

from sloserve.core.request import Request
from sloserve.planner.deadlines import PACE_KEY, paced_segments


def peak_blocks(held_tokens: np.ndarray, full_tokens: np.ndarray, finish_s: np.ndarray, start_s: float,
                min_step_s: float, tokens_per_step: int, block_tokens: int) -> int:
    """Largest total of per-request KV blocks the bounds above allow at any time >= start_s."""
    if held_tokens.size == 0:
        return 0
    if not (min_step_s > 0 and tokens_per_step >= 1 and block_tokens >= 1):
        raise ValueError("min_step_s, tokens_per_step and block_tokens must be positive")
    full = np.asarray(full_tokens, dtype=np.int64)
    held = np.minimum(np.asarray(held_tokens, dtype=np.int64), full)
    fin = np.asarray(finish_s, dtype=np.float64)
    # a finish time that is not finite or already past (a late request, only possible when the
    # model and the engine disagree) keeps the request at its full size for good
    fin = np.where(np.isfinite(fin) & (fin >= start_s), fin, math.inf)
    times = np.unique(fin[np.isfinite(fin)])
    full_blocks = -(-full // block_tokens)
    peak = int(full_blocks[~np.isfinite(fin)].sum())  # never-finishing part (none in practice)
    if times.size == 0:
        return peak
    steps = np.ceil((times - start_s) / min_step_s) + 1  # steps that can end by each time
    grown = held[None, :] + tokens_per_step * steps[:, None].astype(np.int64)
    size = np.minimum(grown, full[None, :])
    alive = fin[None, :] >= times[:, None]  # alive just before each finish time (inclusive)
    blocks = np.where(alive, -(-size // block_tokens), 0)
    finite = np.isfinite(fin)[None, :]
    return peak + int((blocks * finite).sum(axis=1).max())


class KVProfile:
    """The policy's side of the KV profile and of paced arrivals: a collaborator of
    SLOsServeScheduler (reads its ``slo``, ``kv``, ``dl``, ``config``, ``planned_output``,
    ``mem_blocks`` and calls its ``_replan``), with its own caches."""

    def __init__(self, scheduler) -> None:
        self.s = scheduler
        self._kvp_peak: tuple | None = None
        self._kvp_arrays: tuple | None = None
        self._kvp_static: dict = {}

    def free_blocks(self, start_s: float, cands: list[Request] = ()) -> int:
        """KV blocks new admissions may take: capacity minus the sum of full reservations, or
        (``kv_profile``) minus the peak the admitted requests can hold from ``start_s`` on. With a
        single candidate the profile includes it (its own ramp and end): the answer is then its
        full size when that fits (else the profile's free blocks without it, less than its size)."""
        cap = self.s.kv.capacity_blocks
        if not self.s.config.kv_profile or self.s.config.output_length == "predict":
            return cap - self.s.reserved_total
        held, full, fin = self._resident_arrays()
        cached = self._kvp_peak
        if cached is not None and cached[0] is self.s._view and cached[1] == start_s:
            free = cached[2]
        else:
            free = cap - self._peak(held, full, fin, start_s)
            self._kvp_peak = (self.s._view, start_s, free)
        if len(cands) == 1 and cands[0].request_id not in self.s.slo:
            c = cands[0]
            need = self.s.mem_blocks(c)
            if need > free:
                h = np.append(held, c.prompt_tokens + c.num_output_tokens + 1)
                f = np.append(full, c.prompt_tokens + self.s.planned_output(c))
                if self._peak(h, f, np.append(fin, self._finish_s(c)), start_s) <= cap:
                    return need
        return free

    def _resident_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(held, full, finish) of the admitted requests, cached with the tier view (which is
        rebuilt whenever a request joins, leaves or makes progress)."""
        view = self.s.view()
        cached = self._kvp_arrays
        if cached is not None and cached[0] is view:
            return cached[1]
        rs = list(self.s.slo.values())
        old = self._kvp_static
        self._kvp_static = {r.request_id: self._static(r, old.get(r.request_id)) for r in rs}  # members only
        static = list(self._kvp_static.values())
        arrays = (np.array([r.prompt_tokens + r.num_output_tokens + 1 for r in rs], dtype=np.int64),
                  np.array([s[1] for s in static], dtype=np.int64), np.array([s[2] for s in static], dtype=np.float64))
        self._kvp_arrays = (view, arrays)
        return arrays

    def _static(self, r: Request, got: tuple | None) -> tuple:
        """(first-token time, full size, finish time) of an admitted request: fixed once its first
        token is out (reserve mode; the profile is off in predict mode), so cached per request."""
        if got is None or got[0] != r.first_token_s:
            got = (r.first_token_s, r.prompt_tokens + self.s.planned_output(r), self._finish_s(r))
        return got

    def _peak(self, held: np.ndarray, full: np.ndarray, fin: np.ndarray, start_s: float) -> int:
        if held.size == 0:
            return 0
        peak = peak_blocks(held, full, fin, start_s, self.s.ctx.perf.batch_time_s(1), self._tokens_per_step(),
                           self.s.kv.block_size_tokens)
        block = self.s.kv.block_size_tokens
        return min(peak, int((-(-full // block)).sum()))

    def _finish_s(self, r: Request) -> float:
        """Deadline of the last planned token (the plan guarantees it; before the first token
        is out, t0 is at most the TTFT deadline)."""
        n = self.s.planned_output(r)
        if n <= 1:
            return self.s.dl.ttft_s(r)
        origin = self.s.dl.decode_origin_s(r) if r.first_token_s is not None else self.s.dl.ttft_s(r)
        return origin + self.s.dl.cumulative_tpot_s(r, n)

    def _tokens_per_step(self) -> int:
        """Most tokens one request gains in one step (speculation verifies several)."""
        spec = getattr(self.s.ctx, "spec", None)
        if spec is None or getattr(spec, "mode", "off") == "off":
            return 1
        return max(int(getattr(spec, "max_spec_len", 1)), int(getattr(spec, "fixed_len", 1))) + 1

    def admit_arrival(self, r: Request, now_s: float) -> bool:
        """Run the DP for an arrival. With ``kv_pace`` < 1 (and the KV profile) the arrival is
        planned at the faster pace first when the pool is filling up (its deadlines move
        earlier, it finishes sooner, its KV is free sooner), at its SLO pace first otherwise,
        and at the other one if the first does not admit it; the pace sticks once admitted."""
        paces = [1.0]
        if self.s.config.kv_pace < 1 and self.s.config.kv_profile and self.s.config.output_length != "predict":
            start = self.s.inflight_end_s if self.s.inflight_end_s is not None else now_s
            busy = self.s.kv.capacity_blocks - self.free_blocks(start) > self.s.config.kv_pace_above * self.s.kv.capacity_blocks
            paces = [self.s.config.kv_pace, 1.0] if busy else [1.0, self.s.config.kv_pace]
        floor_ms = self.s.config.kv_pace_floor * self.s.ctx.perf.batch_time_s(1) * 1e3
        for pace in paces:
            if pace < 1:
                r.extra[PACE_KEY] = paced_segments(r.segments, pace, floor_ms)
            if r.request_id in self.s._replan(now_s, [r], promote=False):
                return True
            r.extra.pop(PACE_KEY, None)
        return False

