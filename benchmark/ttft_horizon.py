"""How many steps away a first token is due, and the planning margin a miss budget asks there.

Each stage's TTFT SLO (resolved with the batch-time model, as the simulator does) divided by its
tightest TPOT, the step length the planner runs beside it: the deadline's horizon in steps. The
time ``k`` steps take under lognormal step noise of coefficient of variation ``--cv`` varies by
about ``cv / sqrt(k)`` of its mean, so a first token planned right at its deadline that may miss
only ``--miss`` of the time must be planned ``z x cv / sqrt(k)`` of the horizon early (``z`` the
normal quantile of ``1 - miss``). docs/planner.md §6b, "Stop 37", prices that margin on the exact
engine with ``--ttft-scale``; its table came from

    python benchmark/ttft_horizon.py --max-seq-len 2038

Workload options are ``python -m sloserve.sim``'s (``--model``, ``--seed``, ``--num-requests``,
``--json`` for the table); ``--scenarios`` picks the scenarios (``--scenario`` is not read).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from statistics import NormalDist

import numpy as np

from sloserve.perf.presets import get_model
from sloserve.sim.options import add_sim_arguments, workload_config
from sloserve.workloads import SCENARIOS, build_workload

BASE_SCENARIOS = ("chatbot", "coder", "summarizer", "reasoning", "tool-calling", "mixed")


def horizons(args: argparse.Namespace, scenario: str) -> np.ndarray:
    """Every stage's TTFT SLO in steps of its tightest TPOT."""
    a = argparse.Namespace(**{**vars(args), "scenario": scenario})
    model = get_model(args.model)
    out = []
    for program in build_workload(workload_config(a, 1.0)).programs:
        for st in program.stages:
            tpot_s = min(seg.tpot_ms for seg in st.segments) / 1e3
            out.append(st.ttft.resolve_s(st.prompt_tokens, model.zero_load_prefill_s) / tpot_s)
    return np.asarray(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sim_arguments(ap)
    ap.add_argument("--scenarios", default=",".join(BASE_SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--cv", type=float, default=0.1, help="per-step noise, coefficient of variation")
    ap.add_argument("--miss", type=float, default=0.001, help="miss probability a request at its limit may have")
    args = ap.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown or not names:
        ap.error(f"unknown scenarios {unknown}; choices: {', '.join(SCENARIOS)}")
    if not (args.cv > 0 and 0 < args.miss < 1):
        ap.error("--cv must be > 0 and --miss in (0, 1)")
    if args.num_requests is None and not args.trace:
        args.num_requests = 200
    z = NormalDist().inv_cdf(1.0 - args.miss)
    print(f"TTFT horizon in steps of the tightest TPOT; margin for a {args.miss:g} miss chance at cv {args.cv:g}")
    print("| scenario | stages | p10 | median | p90 | margin at the median |")
    print("|---|---|---|---|---|---|")
    rows = {}
    for name in names:
        k = horizons(args, name)
        p10, p50, p90 = (float(x) for x in np.percentile(k, [10, 50, 90]))
        margin = z * args.cv / math.sqrt(p50)
        rows[name] = {"stages": int(k.size), "p10": p10, "median": p50, "p90": p90, "margin": margin}
        print(f"| {name} | {k.size} | {p10:.1f} | {p50:.1f} | {p90:.1f} | {100 * margin:.0f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cv": args.cv, "miss": args.miss, "z": z, "scenarios": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
