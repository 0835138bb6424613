"""Per-GPU capacity against replica count for each routing policy (simulator).

Workloads: ``code`` (Azure code trace, very bursty, coder SLOs), ``conv`` (Azure conversation
trace, near Poisson, chatbot SLOs), ``gamma4`` (mixed SLOs, synthetic Gamma arrivals, CV 4).
Trace windows keep their burst shape when rescaled to a rate; the synthetic workload has
``--per-replica`` programs per replica so that every replica count sees the same load per GPU.
Capacity = the highest rate with attainment >= target (the simulator's capacity search).
Scaling is super-linear when per-GPU capacity at N replicas exceeds that at 1 replica.

    python benchmark/routing_scaling.py --workloads code,conv,gamma4 --replicas 1,2,4,8 \\
        --routers round-robin,total-tokens,slo-sequential,slo-proactive --json scaling.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from sloserve.datadir import data_file
from sloserve.sim.capacity import capacity_search
from sloserve.sim.config import SimConfig


@dataclass(frozen=True)
class Workload:
    scenario: str
    trace: str | None = None
    window_s: tuple[float, float] | None = None
    arrival: str = "poisson"
    cv: float = 1.0


TRACE_END_S = 3400.0  # both Azure traces span about 57-59 minutes

WORKLOADS = {
    "code": Workload("coder", "AzureLLMInferenceTrace_code.csv", (1786.0, 2086.0)),
    "conv": Workload("chatbot", "AzureLLMInferenceTrace_conv.csv", (900.0, 1200.0)),
    "gamma4": Workload("mixed", arrival="gamma", cv=4.0),
}


def make_programs(workload: str, rate: float, replicas: int, args) -> list:
    from sloserve.workloads import WorkloadConfig, build_workload  # noqa: PLC0415

    w = WORKLOADS[workload]
    trace = str(data_file("traces", w.trace)) if w.trace else None
    num = None if trace else args.per_replica * replicas
    window = w.window_s
    if trace and args.max_trace_requests:
        num = args.max_trace_requests
    if trace and args.trace_per_replica:
        # Same programs per replica at every N, so a larger cluster is not measured on a
        # shorter run (a fixed count at N x the rate lasts 1/N as long and never fills queues):
        # the window runs from its start to the end of the trace, first N x K programs kept.
        num, window = args.trace_per_replica * replicas, (w.window_s[0], TRACE_END_S)
    cfg = WorkloadConfig(
        scenario=w.scenario,
        rate_rps=rate,
        num_requests=num,
        arrival=w.arrival,
        burstiness_cv=w.cv,
        trace_path=trace,
        trace_window_s=window,
        max_seq_len=args.max_seq_len,
        seed=args.seed,
    )
    return build_workload(cfg).programs


def one(task: tuple) -> dict:
    """Capacity of one (workload, replicas, router) cell."""
    workload, replicas, router, start_rate, args = task
    target = args.targets.get(workload, args.attainment)
    config = SimConfig(
        model=args.model,
        policy=args.policy,
        kv_tokens=args.kv_tokens,
        max_seq_len=args.max_seq_len,
        replicas=replicas,
        router=router,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    res = capacity_search(
        lambda r: make_programs(workload, r, replicas, args), config, target, start_rate, args.resolution
    )
    return {
        "workload": workload,
        "replicas": replicas,
        "router": router,
        "policy": args.policy,
        "max_attainment": max((p.attainment for p in res.points), default=0.0),
        **res.to_dict(),
        "wall_s": time.perf_counter() - t0,
    }


def load_done(path: str | None) -> list[dict]:
    """Rows already computed (``--rows`` JSON-lines file), so an interrupted grid resumes."""
    if not path:
        return []
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def run_grid(args) -> list[dict]:
    rows = load_done(args.rows)
    done = {(r["workload"], r["replicas"], r["router"]) for r in rows}
    base = {(r["workload"], r["router"]): r["capacity_rps"] for r in rows if r["replicas"] == 1}
    # Replica counts in order so a larger cluster starts its search near N x the 1-replica capacity.
    for n in args.replicas:
        tasks = []
        for w in args.workloads:
            for router in args.routers if n > 1 else args.routers[:1]:
                if (w, n, router) in done:
                    continue
                one_rate = base.get((w, router)) or base.get((w, args.routers[0])) or args.start_rate
                tasks.append((w, n, router, one_rate * n, args))
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for row in pool.map(one, tasks):
                new = [row]
                if n == 1:  # with one replica every router is the same: reuse it for all
                    new += [{**row, "router": r} for r in args.routers if r != row["router"]]
                    for r in new:
                        base[(r["workload"], r["router"])] = r["capacity_rps"]
                rows += new
                if args.rows:
                    with open(args.rows, "a") as f:
                        f.writelines(json.dumps(r) + "\n" for r in new)
                print(
                    f"{row['workload']:7s} N={row['replicas']} {row['router']:15s} "
                    f"capacity {row['capacity_rps']:.3f} rps, {row['capacity_rps_per_gpu']:.3f} per GPU "
                    f"({row['wall_s']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    return rows


def table(rows: list[dict], routers: list[str], replicas: list[int]) -> str:
    """Markdown: per-GPU capacity, and in brackets the ratio to the same router at 1 replica."""
    out = []
    for w in sorted({r["workload"] for r in rows}):
        out.append(f"\n{w}: per-GPU capacity (req/s/GPU), (x per-GPU at N=1)\n")
        out.append("| router | " + " | ".join(f"N={n}" for n in replicas) + " |")
        out.append("|---|" + "---|" * len(replicas))
        for router in routers:
            cells = []
            one_gpu = next(
                (
                    r["capacity_rps_per_gpu"]
                    for r in rows
                    if r["workload"] == w and r["router"] == router and r["replicas"] == 1
                ),
                None,
            )
            for n in replicas:
                row = next(
                    (r for r in rows if r["workload"] == w and r["router"] == router and r["replicas"] == n), None
                )
                if row is None:
                    cells.append("-")
                    continue
                ratio = f" ({row['capacity_rps_per_gpu'] / one_gpu:.2f}x)" if one_gpu else ""
                cells.append(f"{row['capacity_rps_per_gpu']:.3f}{ratio}")
            out.append(f"| {router} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="code,conv,gamma4")
    ap.add_argument("--replicas", default="1,2,4,8")
    ap.add_argument(
        "--routers", default="round-robin,total-tokens,total-requests,power-of-two,slo-sequential,slo-proactive"
    )
    ap.add_argument("--policy", default="slos-serve")
    ap.add_argument("--model", default="opt-13b-tp2-a100")
    ap.add_argument("--kv-tokens", type=int, default=97648)
    ap.add_argument("--max-seq-len", type=int, default=2038)
    ap.add_argument("--per-replica", type=int, default=150, help="synthetic programs per replica")
    ap.add_argument("--max-trace-requests", type=int, default=0, help="cap trace programs (0: whole window)")
    ap.add_argument(
        "--trace-per-replica",
        type=int,
        default=0,
        help="trace programs per replica from the window start (0: the window as is)",
    )
    ap.add_argument("--attainment", type=float, default=0.9, help="target attainment")
    ap.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="WORKLOAD=VALUE",
        help="per-workload attainment target (repeatable)",
    )
    ap.add_argument("--resolution", type=float, default=0.025)
    ap.add_argument("--start-rate", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="parallel capacity searches")
    ap.add_argument("--json", help="write all rows here at the end")
    ap.add_argument(
        "--rows", help="append each row to this JSON-lines file as it completes; rows already there are reused"
    )
    args = ap.parse_args(argv)
    args.workloads = args.workloads.split(",")
    args.replicas = sorted(int(x) for x in args.replicas.split(","))
    args.routers = args.routers.split(",")
    args.targets = {k: float(v) for k, _, v in (t.partition("=") for t in args.target)}
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {sorted(WORKLOADS)}")
    rows = run_grid(args)
    print(table(rows, args.routers, args.replicas))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
