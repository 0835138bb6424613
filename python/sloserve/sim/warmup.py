"""A replica's warm-up: the synthetic requests a served replica runs before it reports ready,
and the simulator's run of them in virtual time.

A served replica does not meet its first request cold: SGLang sends a warm-up request through
the scheduler at start, and the embedded runtime runs these requests (runtime/warmup.py, in
wall time), so a policy that calibrates its batch-time model from observed steps
(planner/calibrate.py) has measured the engine before the first real admission. The simulator
does the same before the first arrival when its engine is not the model (step-time noise,
bias, a replayed ratio trace or its own step-cost model), since there is then something to
measure: cold, the first admissions of a burst were planned on the unmeasured model and missed
(issue 15: 7 of the invariant grid's 9 admitted misses came in the coder burst before the
engine was measured). With the exact engine (paper mode) nothing runs, so such runs are
unchanged. The requests never reach the records or the router; they are gone (finished or
aborted) before time 0 and count in the scheduler's own stats like any request.
"""

from __future__ import annotations

from sloserve.core.request import Request
from sloserve.core.scheduler import Scheduler, SchedulerContext
from sloserve.core.slo import DecodeSegment

WARMUP_REQUESTS = 4
WARMUP_OUTPUT_TOKENS = 12
WARMUP_PROMPT_TOKENS = 256
ID_PREFIX = "sloserve-warmup-"
WARMUP_START_S = -600.0  # virtual time the simulated warm-up starts at: done long before t = 0
MAX_WARMUP_CALLS = 1024  # schedule calls: a policy that never finishes the synthetic requests stops
IDLE_TICK_S = 1e-3  # an empty plan without a wake-up time: ask again this much later


def warmup_requests(ctx: SchedulerContext, perf, now_s: float) -> list[Request]:
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


def warm_up(sched: Scheduler, ctx: SchedulerContext, engine) -> int:
    """Run the warm-up requests through ``sched`` on the simulated ``engine`` in virtual time
    (one arrives per step, so steps mix prefills and decodes as served traffic does, as in the
    runtime's); returns the steps run. ``ctx``: the replica's context (the model as given).
    With ``--charge-scheduler-time`` its steps are not charged the scheduler's time (about 0.2 ms
    beside 30-100 ms steps here), so it measures served steps' ratios under 1% low."""
    now = WARMUP_START_S
    pending = warmup_requests(ctx, ctx.perf, now)
    steps = 0
    for _ in range(MAX_WARMUP_CALLS):
        if pending:
            sched.add(pending.pop(0), now)
        plan = sched.schedule(now)
        if plan.is_empty:
            if not pending and not any(rid.startswith(ID_PREFIX) for rid in sched.resident):
                break
            now = plan.wakeup_s if plan.wakeup_s is not None and plan.wakeup_s > now else now + IDLE_TICK_S
            continue
        result = engine.execute(plan, sched.resident)
        now += result.step_s
        sched.on_step_done(plan, result, now)
        steps += 1
    for rid in [rid for rid in sched.resident if rid.startswith(ID_PREFIX)]:
        sched.abort(rid, now)
    return steps
