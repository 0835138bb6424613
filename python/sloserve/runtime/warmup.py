"""Warm-up of a scheduler process before it reports ready.

The first steps a fresh process runs pay one-off costs (lazily imported modules, numpy's first
calls, the planner's memoized step grids, page faults), which made the first real request the
slow one (TTFT 71-192 ms against a 33 ms model prefill on a loaded machine). ``warm_up`` runs a
few synthetic requests through the same planner and engine first: one arrives per step, so the
steps mix prefills and decodes as served traffic does. The first ``COLD_STEPS`` steps are not
learned from (one cold step would hold the calibrator's high quantile up for hundreds of steps);
the rest are, so the first real admission already plans with a measured step-time correction.
The requests never reach the front or the router; they are gone (finished or aborted) before
the replica reports ready, and they count in the replica's own stats like any request.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from sloserve.core.request import Request
from sloserve.core.slo import DecodeSegment
from sloserve.runtime.step_timing import StepTimer

log = logging.getLogger("sloserve.scheduler")

WARMUP_REQUESTS = 4
WARMUP_OUTPUT_TOKENS = 12
WARMUP_PROMPT_TOKENS = 256
COLD_STEPS = 2
BUDGET_S = 3.0  # most wall time a warm-up may take (a slow --time-scale skips it instead)
ID_PREFIX = "sloserve-warmup-"


def warmup_requests(ctx, perf, now_s: float) -> list[Request]:
    """Admittable synthetic requests: a prompt that fits the replica, SLOs several steps loose."""
    limit = min(ctx.kv_capacity_tokens // (2 * WARMUP_REQUESTS), ctx.max_seq_len_tokens or ctx.kv_capacity_tokens)
    prompt = max(1, min(WARMUP_PROMPT_TOKENS, limit - WARMUP_OUTPUT_TOKENS))
    tpot_ms = 4e3 * perf.batch_time_s(WARMUP_REQUESTS, num_requests=WARMUP_REQUESTS)
    ttft_s = 1.0 + 20.0 * perf.zero_load_prefill_s(prompt)
    return [
        Request(
            request_id=f"{ID_PREFIX}{i}",
            arrival_s=now_s,
            prompt_tokens=prompt,
            output_tokens=WARMUP_OUTPUT_TOKENS,
            ttft_slo_s=ttft_s,
            segments=(DecodeSegment(tpot_ms),),
            slo_class="warmup",
        )
        for i in range(WARMUP_REQUESTS)
    ]


def warm_up(sched, ctx, engine, timer: StepTimer, now: Callable[[], float], budget_s: float = BUDGET_S) -> dict:
    """Run the warm-up requests to completion (or until ``budget_s``) through the scheduler
    interface (``ctx``: the replica's SchedulerContext); returns stats keys."""
    pending = warmup_requests(ctx, timer.perf, now())
    one_step_s = getattr(engine, "time_scale", 1.0) * timer.perf.batch_time_s(pending[0].prompt_tokens, num_requests=1)
    if one_step_s * 2 * WARMUP_REQUESTS > budget_s:
        log.info("warm-up skipped: one step takes %.2f s of wall time", one_step_s)
        return {"warmup_steps": 0, "warmup_s": 0.0}
    started = time.monotonic()
    steps = 0
    while time.monotonic() - started < budget_s:
        if pending:
            sched.add(pending.pop(0), now())
        timer.begin()
        plan = sched.schedule(now())
        if plan.is_empty:
            timer.idle()
            if not pending and not any(rid.startswith(ID_PREFIX) for rid in sched.resident):
                break
            time.sleep(0.001)  # the policy waits (pacing, memory): as the serving loop would
            continue
        result = engine.execute(plan, sched.resident)
        time.sleep(engine.step_wall_s(result))
        sched.on_step_done(plan, timer.end(plan, result, learn=steps >= COLD_STEPS), now())
        steps += 1
    for rid in [rid for rid in sched.resident if rid.startswith(ID_PREFIX)]:
        sched.abort(rid, now())
    timer.idle()
    elapsed = time.monotonic() - started
    log.info("warm-up: %d steps in %.3f s", steps, elapsed)
    return {"warmup_steps": steps, "warmup_s": round(elapsed, 4)}
