"""Planner overhead: wall time per scheduling call of the slos-serve policy.

One measured call = the admission work of ``--new`` arrivals (``add`` each, which runs the DP)
plus the ``schedule`` that builds the next step, with ``--resident`` requests resident. Between
calls (not timed) the step is executed on the simulated engine and reported back, and the
oldest requests are aborted so the resident count stays put.

    python benchmark/planner_overhead.py --resident 256 --new 16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sloserve.core.request import Request
from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.core.slo import DecodeSegment
from sloserve.perf.presets import get_model
from sloserve.sim.engine import SimulatedEngine


def make_request(i: int, t: float, rng: np.random.Generator) -> Request:
    # loose enough SLOs that hundreds of requests can be resident in the SLO tier at once
    tpot = float(rng.choice([100.0, 150.0, 200.0]))
    return Request(f"r{i}", t, int(rng.integers(64, 768)), int(rng.integers(200, 2000)),
                   float(rng.choice([1.0, 2.0, 4.0])), (DecodeSegment(tpot),), slo_class=f"tpot{int(tpot)}")


def run(resident: int, new: int, rounds: int, model: str, seed: int, options: dict) -> dict:
    rng = np.random.default_rng(seed)
    perf = get_model(model)
    sched = create_scheduler("slos-serve", SchedulerContext(perf, 50_000_000, 16), options)
    engine = SimulatedEngine(perf)
    t, next_id = 0.0, 0
    order: list[str] = []

    def step(now: float) -> float:
        plan = sched.schedule(now)
        if plan.is_empty:
            return now + 0.01
        res = engine.execute(plan, sched.requests)
        sched.on_step_done(plan, res, now + res.step_s)
        return now + res.step_s

    while len(sched.requests) < resident:  # warm up: arrivals spread over a few steps
        for _ in range(min(new, resident - len(sched.requests))):
            r = make_request(next_id, t, rng)
            next_id += 1
            sched.add(r, t)
            order.append(r.request_id)
        t = step(t)
    call_ms, add_ms, sched_ms, cpu_ms = [], [], [], []
    for _ in range(rounds):
        order = [rid for rid in order if rid in sched.requests]
        for rid in order[: max(len(order) + new - resident, 0)]:
            sched.abort(rid, t)
        batch = [make_request(next_id + k, t, rng) for k in range(new)]
        next_id += new
        c0 = time.thread_time()
        t0 = time.perf_counter()
        for r in batch:
            sched.add(r, t)
        t1 = time.perf_counter()
        plan = sched.schedule(t)
        t2 = time.perf_counter()
        cpu_ms.append((time.thread_time() - c0) * 1e3)
        order += [r.request_id for r in batch]
        add_ms.append((t1 - t0) * 1e3)
        sched_ms.append((t2 - t1) * 1e3)
        call_ms.append((t2 - t0) * 1e3)
        if plan.is_empty:
            t += 0.01
            continue
        res = engine.execute(plan, sched.requests)
        t += res.step_s
        sched.on_step_done(plan, res, t)
    a = np.asarray(call_ms)
    return {
        "resident": resident, "new": new, "rounds": rounds, "model": model,
        "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()),
        "mean_ms": float(a.mean()),
        # CPU time of the same calls: robust to other processes on a shared machine
        "cpu_p50_ms": float(np.percentile(cpu_ms, 50)), "cpu_p99_ms": float(np.percentile(cpu_ms, 99)),
        "add_p50_ms": float(np.percentile(add_ms, 50)), "schedule_p50_ms": float(np.percentile(sched_ms, 50)),
        "admitted_fraction": sched.reasons["admitted"] / max(next_id, 1),
        "resident_at_end": len(sched.requests),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resident", type=int, default=256)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--model", default="opt-13b-tp2-a100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy-opt", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args()
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.policy_opt)}
    out = run(args.resident, args.new, args.rounds, args.model, args.seed, options)
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
