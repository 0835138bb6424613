"""Where the capacity a noisy engine costs goes: one rate, the exact engine against a noisy one
planned with the default margin, with none, and with the median scale.

Issue 15 asks that capacity under 10% step noise stay within 5% of the exact-model run while at
most 0.1% of admitted requests miss. ``noise_capacity.py`` measures the capacity; this splits
the attainment at one rate near it into what the planner's margin costs and what the noise
costs whatever the planner does. Per variant, over the same seeds (admitted_misses.py's runs):

* ``exact``: the engine runs the model's time;
* ``noise``: lognormal step noise of ``--cv``, the default calibration (the 0.9 quantile scale
  and the 0.9999 tail for steps that end at a deadline, docs/planner.md §6b);
* ``no margin``: the same engine, ``calibrate=false`` (the planner trusts the model as given);
* ``median scale``: the same engine, ``calibrate_quantile=0.5`` (only the deadline steps keep a margin).

docs/planner.md §6b, "Stop 36", ran it as

    python benchmark/noise_gap.py --scenario summarizer --rate 4.0 --policy slos-serve \\
        --num-requests 200 --max-seq-len 2038 --policy-opt planning_tolerance=0.05 \\
        --oracle-output-len --seeds 8 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import sys
from copy import copy
from pathlib import Path

from sloserve.bench.jobs import run_jobs
from sloserve.sim.options import add_sim_arguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from admitted_misses import one, totals  # noqa: E402

# variant -> (noise as a multiple of --cv, planner options added to the run's)
VARIANTS = {
    "exact": (0.0, []),
    "noise": (1.0, []),
    "no margin": (1.0, ["calibrate=false"]),
    "median scale": (1.0, ["calibrate_quantile=0.5"]),
}


def _job(job: tuple) -> tuple[str, dict]:
    args, name, seed = job
    noise, opts = VARIANTS[name]
    a = copy(args)
    a.step_time_noise, a.realistic = noise * args.cv, False
    a.policy_opt = list(args.policy_opt or []) + opts
    return name, one((a, seed))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sim_arguments(ap)
    ap.add_argument("--rate", type=float, required=True, help="arrival rate, requests/s (all replicas)")
    ap.add_argument("--seeds", type=int, default=8, help="seeds --seed, --seed + 1, ...")
    ap.add_argument("--cv", type=float, default=0.1, help="the noisy engine's coefficient of variation")
    ap.add_argument("--jobs", type=int, default=1, help="parallel processes (the machine is shared: keep it small)")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.rate <= 0 or args.cv <= 0:
        ap.error("--seeds must be >= 1, --rate and --cv > 0")
    seeds = range(args.seed, args.seed + args.seeds)
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for name, run in run_jobs(_job, [(args, n, s) for n in VARIANTS for s in seeds], args.jobs, "runs"):
        runs[name].append(run)
    print(f"{args.scenario} at {args.rate} requests/s, seeds {seeds[0]}-{seeds[-1]}, noise CV {args.cv}")
    print("| variant | admitted misses | share | mean attainment | vs exact (points) |")
    print("|---|---|---|---|---|")
    table = {name: totals(got) for name, got in runs.items()}
    for name, row in table.items():
        share = row["num_admitted_slo_misses"] / row["num_admitted"] if row["num_admitted"] else 0.0
        gap = 100 * (row["mean_attainment"] - table["exact"]["mean_attainment"])
        print(
            f"| {name} | {row['num_admitted_slo_misses']} of {row['num_admitted']:,} | {100 * share:.2f}% "
            f"| {row['mean_attainment']:.4f} | {gap:+.1f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seeds": list(seeds), "variants": table, "runs": runs}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
