"""The scheduler's CPU time per call, split as the simulator charges it (``--charge-scheduler-time``).

The simulator delays each step by a deterministic model of the scheduler's CPU time
(sloserve/sim/overhead.py): per step ``step_s + step_per_resident_s x resident`` (the
``schedule`` call that builds the step and the ``on_step_done`` that takes its result, which
re-plans after completions), and per arrival ``add_s + add_per_resident_s x resident`` (its
admission, the DP for slos-serve). This script measures exactly those on the loaded replica of
benchmark/planner_overhead.py (loose SLOs, unbounded KV, ``--rounds`` steps per resident count,
one arrival every other step so steps with and without an arrival are both timed), as mean CPU
time (``time.thread_time``: what the charge models, and robust to other processes on the
machine), and fits the two lines by least squares over the resident counts:

    python benchmark/scheduler_cost.py --policies slos-serve,vllm --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from planner_overhead import LoadedReplica  # noqa: E402

RESIDENTS = (32, 64, 128, 256)  # the baselines stop growing past their running cap (vllm 256, sarathi 128)


def measure(policy: str, resident: int, rounds: int, model: str, seed: int) -> dict:
    """Mean CPU ms of one step's calls (``schedule`` + ``on_step_done``) and of one ``add``."""
    rep = LoadedReplica(resident, model, seed, {}, policy=policy)
    sched = rep.sched
    rep.warm_up(16)
    step_ms, add_ms, step_after_add_ms = [], [], []
    for i in range(rounds):
        arrival = i % 2 == 0
        rep.make_room(1 if arrival else 0)
        if arrival:
            (r,) = rep.new_requests(1)
            c0 = time.thread_time()
            sched.add(r, rep.t)
            add_ms.append((time.thread_time() - c0) * 1e3)
            rep.admitted([r])
        c0 = time.thread_time()
        plan = sched.schedule(rep.t)
        cpu_ms = (time.thread_time() - c0) * 1e3
        if plan.is_empty:  # an idle replica's call delays no step: the simulator charges nothing
            rep.t += 0.01
            continue
        res = rep.engine.execute(plan, sched.requests)  # the simulated engine: not the scheduler's time
        rep.t += res.step_s
        c0 = time.thread_time()
        sched.on_step_done(plan, res, rep.t)
        cpu_ms += (time.thread_time() - c0) * 1e3
        (step_after_add_ms if arrival else step_ms).append(cpu_ms)
    if not step_ms or not step_after_add_ms:
        raise RuntimeError(f"{policy} ran no step with {resident} requests resident: nothing to time")
    return {
        "policy": policy,
        "resident": resident,
        "rounds": rounds,
        "step_ms": float(np.mean(step_ms)),
        "step_after_arrival_ms": float(np.mean(step_after_add_ms)),
        "add_ms": float(np.mean(add_ms)),
    }


def fit_line(x: list[float], y: list[float]) -> tuple[float, float]:
    """(intercept, slope) by least squares, neither below zero (a cost is never negative)."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    if slope < 0:
        return float(max(np.mean(y), 0.0)), 0.0
    if intercept < 0:
        return 0.0, float(np.dot(x, y) / np.dot(x, x))
    return float(intercept), float(slope)


def fit(rows: list[dict]) -> dict:
    """The charge model of one policy, in seconds: the step line, and the arrival line (its
    ``add`` plus what it changes in the next step)."""
    xs = [r["resident"] for r in rows]
    step_s, step_per_s = fit_line(xs, [r["step_ms"] / 1e3 for r in rows])
    # what a step with an arrival costs beyond one without: the add, plus (or minus: the add may
    # do work the step would have done, such as rebuilding the tier view) the change in the step
    extra = [(r["add_ms"] + r["step_after_arrival_ms"] - r["step_ms"]) / 1e3 for r in rows]
    add_s, add_per_s = fit_line(xs, extra)
    return {"step_s": step_s, "step_per_resident_s": step_per_s, "add_s": add_s, "add_per_resident_s": add_per_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="slos-serve,vllm", help="comma-separated registered policies")
    ap.add_argument("--rounds", type=int, default=400, help="steps timed per resident count")
    ap.add_argument("--residents", default=",".join(map(str, RESIDENTS)))
    ap.add_argument("--model", default="opt-13b-tp2-a100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    policies = [p for p in args.policies.split(",") if p]
    residents = [int(x) for x in args.residents.split(",")]
    cells = [(p, n) for p in policies for n in residents]
    rows = [measure(p, n, args.rounds, args.model, args.seed) for p, n in tqdm(cells, desc="scheduler cost")]
    print("| policy | resident | step (schedule + on_step_done) ms | the step after an arrival ms | add ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['policy']} | {r['resident']} | {r['step_ms']:.3f} | {r['step_after_arrival_ms']:.3f} | "
            f"{r['add_ms']:.3f} |"
        )
    fits = {p: fit([r for r in rows if r["policy"] == p]) for p in policies}
    for p, f in fits.items():
        print(
            f"{p}: per step {f['step_s'] * 1e3:.3f} ms + {f['step_per_resident_s'] * 1e6:.2f} us x resident; "
            f"per arrival {f['add_s'] * 1e3:.3f} ms + {f['add_per_resident_s'] * 1e6:.2f} us x resident"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "fits": fits, "command": " ".join(sys.argv)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
