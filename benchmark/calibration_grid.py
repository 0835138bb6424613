"""slos-serve's capacity and admitted misses under step noise, per calibration setting.

For each scenario and each named setting of the batch-time calibration (docs/planner.md §6b) it
runs the simulator's capacity search, then one run at the capacity rate, and prints capacity per
GPU with the admitted requests that missed there. The grid the default (the 0.9 quantile with a
0.999 tail for deadline steps) was chosen on:

    python benchmark/calibration_grid.py --model opt-13b-tp2-a100 --max-seq-len 2038 --realistic \
        --policy-opt output_length=learn --policy-opt planning_tolerance=0.05 --num-requests 200 --jobs 2

Simulator options are ``python -m sloserve.sim capacity``'s (``--realistic``, ``--trace``,
``--spec``...); ``--policy-opt`` applies to every setting, a setting's own options win.
"""

from __future__ import annotations

import argparse
import json
import sys
from copy import copy
from dataclasses import replace

from sloserve.bench.jobs import run_jobs
from sloserve.sim.options import add_search_arguments, add_sim_arguments, build_sim_config, parse_kv, workload_config

SCENARIOS = ["chatbot", "coder", "summarizer", "reasoning", "tool-calling", "mixed"]
SETTINGS = {
    "q0.99": {"calibrate_quantile": 0.99, "calibrate_tail_quantile": 0.0},  # the default before stop 25
    "q0.9+tail0.999": {"calibrate_quantile": 0.9, "calibrate_tail_quantile": 0.999},  # the default
    "q0.8+tail0.999": {"calibrate_quantile": 0.8, "calibrate_tail_quantile": 0.999},
    "q0.9+tail0.99": {"calibrate_quantile": 0.9, "calibrate_tail_quantile": 0.99},
    "runs4": {"calibrate_quantile": 0.99, "calibrate_tail_quantile": 0.0, "calibrate_run_steps": 4},
    "off": {"calibrate": False},
}


def one(job: tuple) -> tuple[str, str, dict]:
    from sloserve.sim.capacity import capacity_and_summary  # noqa: PLC0415
    from sloserve.workloads import build_workload  # noqa: PLC0415

    args, scenario, name, options = job
    a = copy(args)
    a.scenario, a.policy, a.policy_opt = scenario, "slos-serve", []
    config = replace(build_sim_config(a), policy_options=options)

    def programs(rate: float):
        return build_workload(workload_config(a, rate)).programs

    res, at = capacity_and_summary(programs, config, args.attainment, args.start_rate, args.resolution)
    return (
        scenario,
        name,
        {
            "capacity_rps_per_gpu": res.capacity_rps_per_gpu,
            "capacity_rps": res.capacity_rps,
            "num_admitted": at.get("num_admitted"),
            "num_admitted_slo_misses": at.get("num_admitted_slo_misses"),
            "options": options,
        },
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sim_arguments(ap)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    add_search_arguments(ap)
    args = ap.parse_args(argv)
    names = args.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        ap.error(f"unknown setting(s) {', '.join(unknown)}; choices: {', '.join(SETTINGS)}")
    common = parse_kv(args.policy_opt, "--policy-opt")
    scenarios = args.scenarios.split(",")
    jobs = [(args, s, n, {**common, **SETTINGS[n]}) for s in scenarios for n in names]
    cells: dict[tuple[str, str], dict] = {}
    for scenario, name, cell in run_jobs(one, jobs, args.jobs, "capacity searches"):
        cells[(scenario, name)] = cell
    lines = ["| scenario | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for s in scenarios:
        shown = []
        for n in names:
            c = cells[(s, n)]
            shown.append(f"{c['capacity_rps_per_gpu']:.3g} ({c['num_admitted_slo_misses']}/{c['num_admitted']})")
        lines.append(f"| {s} | " + " | ".join(shown) + " |")
    text = "\n".join(lines)
    print("capacity per GPU (admitted misses / admitted, in one run at the capacity rate)\n" + text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"table": text, "cells": {f"{s}/{n}": c for (s, n), c in cells.items()}}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
