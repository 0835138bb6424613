"""Capacity per GPU for each scenario: slos-serve against every registered baseline.

Runs the simulator's capacity search (highest rate with attainment >= target) per (scenario,
policy) and prints a markdown table with the ratio of slos-serve to the best baseline and the
geometric mean of that ratio over scenarios. Example (the authors' configuration):

    python benchmark/capacity_table.py --model opt-13b-tp2-a100 --kv-tokens 97648 \
        --max-seq-len 2038 --num-requests 300 --jobs 2 --json cap.json

Options other than --scenarios/--policies/--slos-opt/--jobs are the simulator's (same names as
``python -m sloserve.sim capacity``); ``--policy`` and ``--policy-opt`` there are ignored.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from copy import copy
from dataclasses import replace

from sloserve.sim.options import add_search_arguments, add_sim_arguments, build_sim_config, parse_kv, workload_config

SCENARIOS = ["chatbot", "coder", "summarizer", "reasoning", "tool-calling", "mixed"]
MAIN = "slos-serve"


def default_policies() -> list[str]:
    """slos-serve plus every registered baseline (disaggregated roles as one 'distserve')."""
    from sloserve.core.scheduler import SCHEDULERS  # noqa: PLC0415
    from sloserve.core.topology import disaggregated_names  # noqa: PLC0415

    topologies = disaggregated_names()
    roles = {role for pair in topologies.values() for role in pair}
    names = [n for n in SCHEDULERS.names() if n not in roles] + sorted(topologies)
    return [MAIN] + sorted(n for n in set(names) if n != MAIN)


def one(job: tuple) -> tuple[str, str, float, dict]:
    from sloserve.sim.capacity import capacity_search  # noqa: PLC0415
    from sloserve.workloads import build_workload  # noqa: PLC0415

    args, scenario, policy, options = job
    a = copy(args)
    a.scenario, a.policy, a.policy_opt = scenario, policy, []
    config = replace(build_sim_config(a), policy_options=dict(options))
    res = capacity_search(
        lambda r: build_workload(workload_config(a, r)).programs,
        config,
        args.attainment,
        args.start_rate,
        args.resolution,
    )
    return scenario, policy, res.capacity_rps_per_gpu, res.to_dict()


def table(caps: dict, scenarios: list[str], policies: list[str]) -> str:
    base = [p for p in policies if p != MAIN]
    head = "| scenario | " + " | ".join(policies) + " | slos-serve / best baseline |"
    lines = [head, "|" + "---|" * (len(policies) + 2)]
    ratios = []
    for s in scenarios:
        cells = [f"{caps[(s, p)]:.3g}" for p in policies]
        best = max((caps[(s, p)] for p in base), default=0.0)
        ratio = caps[(s, MAIN)] / best if best > 0 and MAIN in policies else float("nan")
        if math.isfinite(ratio) and ratio > 0:
            ratios.append(ratio)
        shown = f"{ratio:.2f}x" if math.isfinite(ratio) else "n/a"  # no baseline (or no slos-serve) run
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {shown} |")
    if ratios:
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        lines.append(
            f"\nGeo-mean over scenarios of slos-serve / best baseline: **{geo:.2f}x** "
            f"(capacity in requests/s per GPU at attainment >= target)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sim_arguments(ap)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--policies", default=None, help="comma-separated policies (default: slos-serve + all baselines)")
    ap.add_argument("--slos-opt", action="append", metavar="KEY=VALUE", help="slos-serve option (repeatable)")
    add_search_arguments(ap)
    args = ap.parse_args(argv)
    if args.num_requests is None and not args.trace:
        args.num_requests = 300
    scenarios = args.scenarios.split(",")
    policies = args.policies.split(",") if args.policies else default_policies()
    slos_opts = parse_kv(args.slos_opt, "--slos-opt")
    jobs = [(args, s, p, slos_opts if p == MAIN else {}) for s in scenarios for p in policies]
    caps, details = {}, {}
    with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        for scenario, policy, cap, detail in pool.map(one, jobs):
            caps[(scenario, policy)] = cap
            details[f"{scenario}/{policy}"] = detail
            print(f"{scenario:14s} {policy:14s} {cap:.3f} req/s/GPU", file=sys.stderr, flush=True)
    text = table(caps, scenarios, policies)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "attainment": args.attainment, "table": text, "runs": details}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
