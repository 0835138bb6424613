"""Capacity with SLO-adaptive, fixed, goodput-driven and no speculation (issue 4 evaluation).

Usage (the numbers in docs/speculative.md):

    python benchmark/spec_capacity.py --json spec_capacity.json                 # capacity table
    python benchmark/spec_capacity.py --robustness --json spec_robust.json      # wrong prior

Every cell is a capacity search (``sloserve.sim.capacity``: highest rate with >= 90% SLO
attainment) on the same seeded workload; the search's last passing rate is re-run to count
admitted requests that missed (TTFT vs decode-token misses separately). The policy is
``slos-serve`` with speculation from ``sloserve.spec`` (``slos-serve+spec``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from sloserve.metrics.attainment import token_deadlines_s
from sloserve.sim import SimConfig, Simulator
from sloserve.sim.capacity import capacity_search
from sloserve.spec import SpecConfig, speculative_policy
from sloserve.workloads import WorkloadConfig, build_workload

SCENARIOS = ["chatbot", "coder", "summarizer", "reasoning", "tool-calling", "mixed"]
MODES = ["off", "fixed", "adaptive", "goodput"]


def spec_config(mode: str, prior: float, args, online: bool = True) -> SpecConfig | None:
    if mode == "off":
        return None
    return SpecConfig(
        mode=mode, alpha_prior=prior, max_spec_len=args.max_spec_len, fixed_len=args.fixed_len, online=online
    )


def misses(scenario: str, rate: float, cfg: SimConfig, args) -> dict:
    """Admitted requests that missed at ``rate``: by their first token or a later one."""
    wl = build_workload(
        WorkloadConfig(scenario=scenario, rate_rps=rate, num_requests=args.num_requests, seed=args.seed)
    )
    res = Simulator(wl.programs, cfg).run()
    admitted = [r for r in res.records if r.tier == "slo" and r.completed]
    ttft = decode = 0
    for r in admitted:
        d = token_deadlines_s(r.arrival_s, r.ttft_slo_s, r.segments, r.token_times, cfg.tolerance)
        late = np.nonzero(np.asarray(r.token_times) > d + 1e-9)[0]
        ttft += int(late.size > 0 and late[0] == 0)
        decode += int(np.any(late >= 1))
    return {
        "num_admitted": len(admitted),
        "ttft_misses": ttft,
        "decode_misses": decode,
        "mean_accepted_tokens_per_step": res.summary["mean_accepted_tokens_per_step"],
    }


def cell(
    scenario: str, model: str, alpha: float, mode: str, args, prior: float | None = None, online: bool = True
) -> dict:
    spec = spec_config(mode, alpha if prior is None else prior, args, online)
    cfg = SimConfig(model=model, policy=speculative_policy(args.policy), spec=spec, alpha=alpha, seed=args.seed)

    def make(rate: float):
        return build_workload(
            WorkloadConfig(scenario=scenario, rate_rps=rate, num_requests=args.num_requests, seed=args.seed)
        ).programs

    t0 = time.perf_counter()
    res = capacity_search(make, cfg, args.attainment, args.start_rate, args.resolution)
    out = {
        "policy": args.policy,
        "scenario": scenario,
        "model": model,
        "alpha": alpha,
        "mode": mode,
        "prior": spec.alpha_prior if spec else None,
        "online": online,
        "capacity_rps": res.capacity_rps,
        "capacity_rps_per_gpu": res.capacity_rps_per_gpu,
        "num_points": len(res.points),
    }
    if res.capacity_rps > 0:
        out.update(misses(scenario, res.capacity_rps, cfg, args))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def emit(rows: list[dict], row: dict, path: str | None) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)
    if path:
        with open(path, "w") as fh:
            json.dump(rows, fh, indent=1)


def report(rows: list[dict]) -> str:
    """Markdown tables from the rows of a run (``--report FILE``)."""
    out = []
    cap = [r for r in rows if r["online"] and (r["prior"] is None or r["prior"] == r["alpha"])]
    groups: dict[tuple, dict] = {}
    for r in cap:
        groups.setdefault((r.get("policy", "slos-serve"), r["model"], r["alpha"], r["scenario"]), {})[r["mode"]] = r
    if groups:
        out.append(
            "| policy | model | alpha | scenario | "
            + " | ".join(MODES)
            + " | adaptive/off | admitted misses (TTFT/decode) at capacity |"
        )
        out.append("|---|---|---|---|" + "---|" * (len(MODES) + 2))
        ratios: dict[tuple, list[float]] = {}
        for (policy, model, alpha, scen), by in groups.items():
            caps = [f"{by[m]['capacity_rps']:.3g}" if m in by else "-" for m in MODES]
            ratio = (
                by["adaptive"]["capacity_rps"] / by["off"]["capacity_rps"]
                if "adaptive" in by and "off" in by and by["off"]["capacity_rps"] > 0
                else float("nan")
            )
            ratios.setdefault((policy, model, alpha), []).append(ratio)
            miss = ", ".join(
                f"{m} {by[m].get('ttft_misses', 0)}/{by[m].get('decode_misses', 0)} of {by[m].get('num_admitted', 0)}"
                for m in MODES
                if m in by and (by[m].get("ttft_misses") or by[m].get("decode_misses"))
            )
            out.append(
                f"| {policy} | {model} | {alpha} | {scen} | "
                + " | ".join(caps)
                + f" | {ratio:.2f}x | {miss or 'none'} |"
            )
        for (policy, model, alpha), rs in ratios.items():
            good = [x for x in rs if np.isfinite(x) and x > 0]
            if good:
                out.append(
                    f"\ngeo-mean adaptive/off, {policy}, {model}, alpha {alpha}: {float(np.exp(np.mean(np.log(good)))):.2f}x"
                )
    rob = [r for r in rows if r["prior"] is not None and r["prior"] != r["alpha"] or not r["online"]]
    if rob:
        out.append("\n| model | scenario | true alpha | prior | online | capacity | TTFT/decode misses |")
        out.append("|---|---|---|---|---|---|---|")
        for r in rob:
            out.append(
                f"| {r['model']} | {r['scenario']} | {r['alpha']} | {r['prior']} | {r['online']} | "
                f"{r['capacity_rps']:.3g} | {r.get('ttft_misses', 0)}/{r.get('decode_misses', 0)} of {r.get('num_admitted', 0)} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="+", default=SCENARIOS)
    p.add_argument("--models", nargs="+", default=["opt-13b-tp2-a100", "opt-6.7b-a100"])
    p.add_argument("--alphas", nargs="+", type=float, default=[0.6, 0.8])
    p.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    p.add_argument("--policy", default="slos-serve", help="base policy (wrapped with speculation)")
    p.add_argument("--num-requests", type=int, default=200)
    p.add_argument("--max-spec-len", type=int, default=6)
    p.add_argument("--fixed-len", type=int, default=4)
    p.add_argument("--attainment", type=float, default=0.9)
    p.add_argument("--start-rate", type=float, default=1.0)
    p.add_argument("--resolution", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--robustness",
        action="store_true",
        help="true alpha 0.5..0.9 with a wrong prior (--prior), online estimation on and off",
    )
    p.add_argument("--prior", type=float, default=0.8, help="the planner's prior in --robustness")
    p.add_argument("--true-alphas", nargs="+", type=float, default=[0.5, 0.6, 0.7, 0.8, 0.9])
    p.add_argument("--json", help="write all rows here (rewritten after every row)")
    p.add_argument("--report", nargs="+", metavar="JSON", help="print markdown tables from earlier runs and exit")
    args = p.parse_args(argv)
    if args.report:
        rows = [row for path in args.report for row in json.load(open(path))]
        print(report(rows))
        return 0
    rows: list[dict] = []
    if args.robustness:
        for model in args.models:
            for scenario in args.scenarios:
                for alpha in args.true_alphas:
                    for online in (True, False):
                        emit(rows, cell(scenario, model, alpha, "adaptive", args, args.prior, online), args.json)
        return 0
    for model in args.models:
        for alpha in args.alphas:
            for scenario in args.scenarios:
                for mode in args.modes:
                    emit(rows, cell(scenario, model, alpha, mode, args), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
