"""Warm-up of a scheduler process before it reports ready.

The first steps a fresh process runs pay one-off costs (lazily imported modules, numpy's first
calls, the planner's memoized step grids, page faults), which made the first real request the
slow one (TTFT 71-192 ms against a 33 ms model prefill on a loaded machine). ``warm_up`` runs a
few synthetic requests (``sim/warmup.py``, which also runs them in the simulator's virtual time)
through the same planner and engine first: one arrives per step, so the
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

from sloserve.runtime.step_timing import StepTimer
from sloserve.sim.warmup import ID_PREFIX, WARMUP_REQUESTS, warmup_requests

log = logging.getLogger("sloserve.scheduler")

COLD_STEPS = 2
BUDGET_S = 3.0  # most wall time a warm-up may take (a slow --time-scale skips it instead)


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
