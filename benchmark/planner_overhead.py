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

UNBOUNDED_KV = 50_000_000  # tokens: KV never binds, only time does


def make_request(i: int, t: float, rng: np.random.Generator) -> Request:
    # loose enough SLOs that hundreds of requests can be resident in the SLO tier at once
    tpot = float(rng.choice([100.0, 150.0, 200.0]))
    return Request(
        f"r{i}",
        t,
        int(rng.integers(64, 768)),
        int(rng.integers(200, 2000)),
        float(rng.choice([1.0, 2.0, 4.0])),
        (DecodeSegment(tpot),),
        slo_class=f"tpot{int(tpot)}",
    )


class LoadedReplica:
    """A slos-serve replica on the simulated engine, kept at ``resident`` requests by aborting the
    oldest before each batch of arrivals (shared with benchmark/summary_cost.py)."""

    def __init__(
        self,
        resident: int,
        model: str,
        seed: int,
        options: dict,
        kv_tokens: int = UNBOUNDED_KV,
        policy: str = "slos-serve",
    ) -> None:
        self.resident, self.rng = resident, np.random.default_rng(seed)
        perf = get_model(model)
        self.sched = create_scheduler(policy, SchedulerContext(perf, kv_tokens, 16), options)
        self.engine = SimulatedEngine(perf)
        self.t, self.next_id, self.order = 0.0, 0, []

    def new_requests(self, n: int) -> list[Request]:
        out = [make_request(self.next_id + k, self.t, self.rng) for k in range(n)]
        self.next_id += n
        return out

    def admitted(self, batch: list[Request]) -> None:
        self.order += [r.request_id for r in batch]

    def warm_up(self, new: int) -> None:
        """Arrivals spread over a few steps until ``resident`` requests are in."""
        for _ in range(10 * self.resident):
            if len(self.sched.requests) >= self.resident:
                return
            for r in self.new_requests(min(new, self.resident - len(self.sched.requests))):
                self.sched.add(r, self.t)
                self.order.append(r.request_id)
            self.step(self.sched.schedule(self.t))
        # a policy that hands requests on (distserve's prefill side) never holds them all
        raise RuntimeError(f"the replica never held {self.resident} requests ({len(self.sched.requests)})")

    def make_room(self, new: int) -> None:
        self.order = [rid for rid in self.order if rid in self.sched.requests]
        for rid in self.order[: max(len(self.order) + new - self.resident, 0)]:
            self.sched.abort(rid, self.t)

    def step(self, plan) -> None:
        """Execute ``plan`` (from ``schedule(self.t)``) and report it back."""
        if plan.is_empty:
            self.t += 0.01
            return
        res = self.engine.execute(plan, self.sched.requests)
        self.t += res.step_s
        self.sched.on_step_done(plan, res, self.t)


def run(resident: int, new: int, rounds: int, model: str, seed: int, options: dict, kv_tokens: int = 0) -> dict:
    rep = LoadedReplica(resident, model, seed, options, kv_tokens or UNBOUNDED_KV)
    sched = rep.sched
    rep.warm_up(new)
    call_ms, add_ms, sched_ms, cpu_ms = [], [], [], []
    for _ in range(rounds):
        rep.make_room(new)
        batch = rep.new_requests(new)
        c0 = time.thread_time()
        t0 = time.perf_counter()
        for r in batch:
            sched.add(r, rep.t)
        t1 = time.perf_counter()
        plan = sched.schedule(rep.t)
        t2 = time.perf_counter()
        cpu_ms.append((time.thread_time() - c0) * 1e3)
        rep.admitted(batch)
        add_ms.append((t1 - t0) * 1e3)
        sched_ms.append((t2 - t1) * 1e3)
        call_ms.append((t2 - t0) * 1e3)
        rep.step(plan)
    a = np.asarray(call_ms)
    return {
        "resident": resident,
        "new": new,
        "rounds": rounds,
        "model": model,
        "kv_tokens": kv_tokens or UNBOUNDED_KV,
        "num_slo": len(sched.tiers.slo),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "mean_ms": float(a.mean()),
        # CPU time of the same calls: robust to other processes on a shared machine
        "cpu_p50_ms": float(np.percentile(cpu_ms, 50)),
        "cpu_p99_ms": float(np.percentile(cpu_ms, 99)),
        "add_p50_ms": float(np.percentile(add_ms, 50)),
        "schedule_p50_ms": float(np.percentile(sched_ms, 50)),
        "admitted_fraction": sched.reasons["admitted"] / max(rep.next_id, 1),
        "resident_at_end": len(sched.requests),
    }


def sweep(rounds: int, model: str, seed: int, options: dict) -> list[dict]:
    """Per-call wall time against resident and new requests, printed as a markdown table."""
    from tqdm import tqdm

    cells = [(res, new) for res in (64, 128, 256, 512) for new in (1, 4, 16)]
    out = [run(res, new, rounds, model, seed, options) for res, new in tqdm(cells, desc="planner overhead")]
    print("| resident | new | p50 ms | p99 ms | max ms | per admission p50 ms |")
    print("|---|---|---|---|---|---|")
    for r in out:
        print(
            f"| {r['resident']} | {r['new']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} | "
            f"{r['add_p50_ms'] / r['new']:.3f} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resident", type=int, default=256)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--model", default="opt-13b-tp2-a100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy-opt", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--kv-tokens",
        type=int,
        default=0,
        help="KV pool (default: unbounded, KV never binds; e.g. 97648, the authors' opt-13b pool, where it does)",
    )
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="instead: a table over resident in 64/128/256/512 and new in 1/4/16 (JSON: a list)",
    )
    args = ap.parse_args()
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.policy_opt)}
    if args.sweep:
        out = sweep(args.rounds, args.model, args.seed, options)
    else:
        out = run(args.resident, args.new, args.rounds, args.model, args.seed, options, args.kv_tokens)
        print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
