"""Simulator speed: simulated requests per wall second, and the wall time of one capacity search.

    python benchmark/sim_speed.py --policies fcfs,vllm,sarathi,slos-serve --json out.json

The capacity search is the chatbot scenario over a 300 s window of the Azure conv trace
(900:1200, the SLOs-Serve authors' configuration) when the data is present, else a synthetic
Poisson workload of the same size. Target (issue 2): a capacity search in under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from sloserve.core.scheduler import SCHEDULERS
from sloserve.datadir import data_dir
from sloserve.sim import SimConfig, simulate
from sloserve.sim.capacity import capacity_search
from sloserve.workloads import WorkloadConfig, build_workload

AUTHORS = dict(model="opt-13b-tp2-a100", kv_tokens=97648, max_seq_len=2038)


def workload_config(rate: float) -> WorkloadConfig:
    root = data_dir()
    trace = root / "traces" / "AzureLLMInferenceTrace_conv.csv" if root else None
    if trace is not None and trace.exists():
        return WorkloadConfig(
            scenario="chatbot",
            rate_rps=rate,
            num_requests=None,
            trace_path=str(trace),
            trace_window_s=(900.0, 1200.0),
            max_seq_len=AUTHORS["max_seq_len"],
            seed=0,
        )
    return WorkloadConfig(scenario="chatbot", rate_rps=rate, num_requests=1500, max_seq_len=AUTHORS["max_seq_len"])


def bench_policy(policy: str, rate: float, repeats: int) -> dict:
    config = SimConfig(policy=policy, **AUTHORS)
    programs = build_workload(workload_config(rate)).programs
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        simulate(programs, config)
        walls.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    cap = capacity_search(lambda r: build_workload(workload_config(r)).programs, config, 0.9, start_rate_rps=2.0)
    search_wall = time.perf_counter() - t0
    return {
        "policy": policy,
        "num_requests": len(programs),
        "sim_wall_s_median": statistics.median(walls),
        "requests_per_wall_s": len(programs) / statistics.median(walls),
        "capacity_rps": cap.capacity_rps,
        "capacity_points": len(cap.points),
        "capacity_search_wall_s": search_wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="fcfs,vllm,sarathi,slos-serve")
    parser.add_argument("--rate", type=float, default=3.0, help="rate for the requests/s measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    known = set(SCHEDULERS.names())
    rows = []
    for policy in args.policies.split(","):
        if policy not in known:
            print(f"skipping unregistered policy {policy}", file=sys.stderr)
            continue
        rows.append(bench_policy(policy, args.rate, args.repeats))
        r = rows[-1]
        print(
            f"{policy:>12}: {r['requests_per_wall_s']:8.0f} req/wall-s  capacity search {r['capacity_search_wall_s']:6.1f} s "
            f"({r['capacity_points']} points, capacity {r['capacity_rps']:.2f} rps)",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
