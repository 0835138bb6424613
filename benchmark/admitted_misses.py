"""Admitted requests that miss their SLO, over several seeds of one simulated setting.

A run at one rate says little about a count that is a few in a thousand, so this runs the same
simulator options (``python -m sloserve.sim run``'s, ``--rate`` included) once per seed and
prints, per seed and in total, admitted misses / admitted and attainment. docs/planner.md §6b
counts the deadline-step rules with it, e.g. the full system at 4 replicas in realistic mode at
the stop-25 headline capacity rate:

    python benchmark/admitted_misses.py --seeds 3 --jobs 2 --scenario coder --replicas 4 \
        --num-requests 800 --max-seq-len 2038 --policy slos-serve --policy-opt planning_tolerance=0.05 \
        --realistic --spec adaptive --alpha 0.7 --router slo-proactive --rate 34
"""

from __future__ import annotations

import argparse
import json
import sys
from copy import copy

from sloserve.bench.jobs import run_jobs
from sloserve.sim.options import add_sim_arguments, build_sim_config, workload_config


def one(job: tuple) -> dict:
    from sloserve.sim import Simulator  # noqa: PLC0415
    from sloserve.workloads import build_workload  # noqa: PLC0415

    args, seed = job
    a = copy(args)
    a.seed = seed
    s = Simulator(build_workload(workload_config(a, a.rate)).programs, build_sim_config(a)).run().summary
    keys = ("attainment", "num_admitted", "num_admitted_slo_misses", "num_client_timeouts")
    return {"seed": seed, **{k: s.get(k) for k in keys}}


def totals(runs: list[dict]) -> dict:
    """Admitted misses and admitted requests summed over ``one``'s runs, and their mean attainment."""
    return {
        "num_admitted_slo_misses": sum(r["num_admitted_slo_misses"] for r in runs),
        "num_admitted": sum(r["num_admitted"] for r in runs),
        "mean_attainment": sum(r["attainment"] for r in runs) / len(runs),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sim_arguments(ap)
    ap.add_argument("--rate", type=float, required=True, help="arrival rate, requests/s (all replicas)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (--seed is the first)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel processes (the machine is shared: keep it small)")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.rate <= 0:
        ap.error("--seeds must be >= 1 and --rate > 0")
    runs = run_jobs(one, [(args, args.seed + i) for i in range(args.seeds)], args.jobs, "seeds")
    total = totals(runs)
    misses, admitted, mean = total["num_admitted_slo_misses"], total["num_admitted"], total["mean_attainment"]
    for r in runs:
        print(
            f"seed {r['seed']}: {r['num_admitted_slo_misses']} / {r['num_admitted']} admitted missed, "
            f"attainment {r['attainment']:.4f}"
        )
    share = misses / admitted if admitted else 0.0
    print(f"total: {misses} / {admitted} admitted missed ({100 * share:.2f}%), mean attainment {mean:.4f}")
    if args.json:
        out = {"runs": runs, **total}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
