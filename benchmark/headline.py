"""The headline table: the full system against the baselines, in paper mode and realistic mode.

Cells are (mode, scenario, replicas, policy). Each is a capacity search (highest rate with
attainment >= target) on the seeded workload, then one run at that rate for admitted misses,
client timeouts, goodput and smooth goodput (metrics/smooth.py). Modes (docs/simulator.md "Realistic mode"):

* ``paper``: true output lengths, the engine runs the model's time, no timeouts, free scheduler.
* ``realistic``: hidden lengths, 10% step-time noise, client timeouts, scheduler time charged
  (``--realistic``); slos-serve plans with learned lengths (``output_length=learn``).

The full system is slos-serve with SLO-adaptive speculation (``--spec adaptive``, engine
acceptance ``--full-alpha``) and the proactive router with more than one replica; each baseline
runs with round-robin routing and no speculation. Every slos-serve variant plans at the metric's
tolerance (``planning_tolerance=0.05``). Capacity is per GPU.

    python benchmark/headline.py --out headline/                      # every cell: hours
    python benchmark/headline.py --out headline/ --scenarios coder --replicas 1 --num-requests 100
    python benchmark/headline.py --out headline4/ --replicas-list 4 --num-requests-per-replica 300

``--num-requests-per-replica N`` gives a cell of R replicas N x R programs, so its arrivals last as
long as a one-replica cell's at the same per-GPU rate (a fixed count at 4 replicas measures a
transient). Each cell also records goodput and smooth goodput (requests/s), shown per GPU for the
full system and the best baseline in a second table per mode.

Each finished cell is written to ``--out/<mode>_<scenario>_r<replicas>_<policy>.json``; a rerun
skips those (resumable), and the table is printed and written to ``--out/table.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from copy import copy
from dataclasses import replace
from pathlib import Path

SCENARIOS = ["chatbot", "coder", "summarizer", "reasoning", "tool-calling", "mixed"]
BASELINES = ["vllm", "sarathi-2048", "sglang", "edf", "distserve"]
FULL = "full"  # slos-serve + adaptive speculation + proactive routing
MODES = ["paper", "realistic"]


def cell_args(args, mode: str, scenario: str, replicas: int, policy: str) -> tuple[argparse.Namespace, dict]:
    """Parsed simulator arguments and policy options of one cell."""
    a = copy(args)
    a.scenario, a.replicas, a.policy_opt, a.router_opt = scenario, replicas, [], []
    a.realistic, a.oracle_output_len = mode == "realistic", mode == "paper"
    a.spec, a.router, a.policy = "off", "round-robin", policy
    if getattr(args, "num_requests_per_replica", None):
        a.num_requests = args.num_requests_per_replica * replicas  # the cell's count, distserve's too
    options: dict = {}
    if policy in (FULL, "slos-serve"):
        a.policy = "slos-serve"
        options = {"planning_tolerance": 0.05}
        if mode == "realistic":
            options["output_length"] = "learn"
    if policy == FULL:
        a.spec, a.alpha = "adaptive", args.full_alpha
        a.router = "slo-proactive" if replicas > 1 else "round-robin"
    if policy == "distserve":
        options = {"prefill_replicas": replicas, "decode_replicas": replicas}
        a.replicas = 1
    return a, options


def run_cell(job: tuple) -> tuple[str, dict]:
    from sloserve.sim.capacity import capacity_and_summary  # noqa: PLC0415
    from sloserve.sim.options import build_sim_config, workload_config  # noqa: PLC0415
    from sloserve.workloads import build_workload  # noqa: PLC0415

    key, args, mode, scenario, replicas, policy = job
    a, options = cell_args(args, mode, scenario, replicas, policy)
    config = replace(build_sim_config(a), policy_options=options)

    def programs(rate: float):
        return build_workload(workload_config(a, rate)).programs

    res, at = capacity_and_summary(programs, config, args.attainment, args.start_rate, args.resolution)
    return key, {
        "mode": mode,
        "scenario": scenario,
        "replicas": replicas,
        "policy": policy,
        "capacity_rps": res.capacity_rps,
        "capacity_rps_per_gpu": res.capacity_rps_per_gpu,
        "num_gpus": res.num_gpus,
        "attainment": at.get("attainment"),
        "num_admitted": at.get("num_admitted"),
        "num_admitted_slo_misses": at.get("num_admitted_slo_misses"),
        "num_client_timeouts": at.get("num_client_timeouts"),
        "goodput_rps": at.get("goodput_rps"),
        "smooth_goodput_rps": at.get("smooth_goodput_rps"),
        "num_requests": a.num_requests,
        "points": res.to_dict()["points"],
    }


def ratio(cells: dict, mode: str, scenario: str, replicas: int, policies) -> tuple[dict, float | None]:
    """Each policy's capacity per GPU in one (mode, scenario, replicas), and full / best baseline."""
    caps = {p: (cells.get(cell_key(mode, scenario, replicas, p)) or {}).get("capacity_rps_per_gpu") for p in policies}
    best = max((caps[p] for p in policies if p != FULL and caps[p] is not None), default=None)
    full = caps.get(FULL)
    return caps, (full / best if full and best else None)


def geo_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in values) / len(values))


def table(cells: dict, modes, scenarios, replicas, policies) -> str:
    out = []
    for mode in modes:
        out.append(f"\n### {mode} mode\n")
        out.append(
            "| scenario | replicas | " + " | ".join(policies) + " | full / best baseline | full: admitted misses |"
        )
        out.append("|---|---|" + "---|" * (len(policies) + 2))
        for r in replicas:
            ratios = []
            for s in scenarios:
                caps, ratio_ = ratio(cells, mode, s, r, policies)
                if ratio_:
                    ratios.append(ratio_)
                shown = [f"{caps[p]:.3g}" if caps[p] is not None else "-" for p in policies]
                miss = (cells.get(cell_key(mode, s, r, FULL)) or {}).get("num_admitted_slo_misses")
                out.append(
                    f"| {s} | {r} | " + " | ".join(shown) + f" | {f'{ratio_:.2f}x' if ratio_ else '-'} | "
                    f"{'-' if miss is None else miss} |"
                )
            if ratios:
                out.append(
                    f"\nGeo-mean of full / best baseline at {r} replica(s), {mode} mode, over "
                    f"{len(ratios)} scenario(s): **{geo_mean(ratios):.2f}x** (the paper reports 2.2x)\n"
                )
        out += goodput_table(cells, mode, scenarios, replicas, policies)
    return "\n".join(out)


def plot(cells: dict, modes, scenarios, replicas, policies, path: Path) -> bool:
    """One panel per mode: full / best baseline per scenario, a bar per replica count, the
    geo-mean last, against parity and the paper's 2.2x. False when no cell has a ratio."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), sharey=True, squeeze=False)
    width, drawn = 0.8 / len(replicas), False
    for ax, mode in zip(axes[0], modes):
        for i, r in enumerate(replicas):
            got = [ratio(cells, mode, s, r, policies)[1] for s in scenarios]
            shown = [x for x in got if x]
            heights = [x or 0.0 for x in got] + [geo_mean(shown) if shown else 0.0]
            xs = [k + (i - (len(replicas) - 1) / 2) * width for k in range(len(heights))]
            bars = ax.bar(xs, heights, width, label=f"{r} replica{'s' if r > 1 else ''}")
            ax.bar_label(bars, [f"{h:.2f}" if h else "" for h in heights], fontsize=7, padding=1)
            drawn = drawn or bool(shown)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhline(2.2, color="gray", ls=":", lw=1.0, label="paper's 2.2x")
        ax.set_xticks(range(len(scenarios) + 1), [*scenarios, "geo-mean"], rotation=30, ha="right")
        ax.set_title(f"{mode} mode")
        ax.set_ylabel("full system / best baseline (capacity per GPU)")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def goodput_table(cells: dict, mode: str, scenarios, replicas, policies) -> list[str]:
    """Goodput / smooth goodput per GPU in the run at the capacity rate: full and best baseline."""
    out = [
        f"\nGoodput / smooth goodput, {mode} mode (requests/s per GPU, in the run at each policy's capacity rate;"
        " best baseline by capacity)\n",
        "| scenario | replicas | full | best baseline |",
        "|---|---|---|---|",
    ]
    for r in replicas:
        for s in scenarios:
            got = {p: c for p in policies if (c := cells.get(cell_key(mode, s, r, p)))}
            base = [p for p in got if p != FULL]
            best = max(base, key=lambda p: got[p]["capacity_rps_per_gpu"], default=None)
            full = _goodputs(got.get(FULL))
            out.append(f"| {s} | {r} | {full} | {_goodputs(got.get(best)) + f' ({best})' if best else '-'} |")
    return out


def _goodputs(cell: dict | None) -> str:
    if not cell or not cell.get("num_gpus"):
        return "-"
    shown = [cell.get(k) for k in ("goodput_rps", "smooth_goodput_rps")]
    return " / ".join("-" if v is None else f"{v / cell['num_gpus']:.3g}" for v in shown)


def cell_key(mode: str, scenario: str, replicas: int, policy: str) -> str:
    return f"{mode}_{scenario}_r{replicas}_{policy}"


def main(argv: list[str] | None = None) -> int:
    from sloserve.sim.options import add_search_arguments, add_sim_arguments  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sim_arguments(ap)
    ap.add_argument("--out", required=True, help="directory for the cells (resumable) and table.md")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--replicas-list", dest="replicas_list", default="1,4", help="replica counts (paper: 4)")
    ap.add_argument(
        "--num-requests-per-replica",
        type=int,
        help="programs per replica: a cell with R replicas gets N x R (overrides --num-requests), so arrivals "
        "last as long at every replica count at the same per-GPU rate",
    )
    ap.add_argument("--policies", default=",".join([FULL] + BASELINES), help=f"'{FULL}' is the full system")
    ap.add_argument("--full-alpha", type=float, default=0.7, help="draft acceptance rate of the full system's engine")
    add_search_arguments(ap)
    args = ap.parse_args(argv)
    if args.num_requests is None and not args.trace:
        args.num_requests = 200
    modes, scenarios = args.modes.split(","), args.scenarios.split(",")
    replicas, policies = [int(x) for x in args.replicas_list.split(",")], args.policies.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells, jobs = {}, []
    for m in modes:
        for s in scenarios:
            for r in replicas:
                for p in policies:
                    key = cell_key(m, s, r, p)
                    path = out / f"{key}.json"
                    if path.exists():
                        cells[key] = json.loads(path.read_text())
                    else:
                        jobs.append((key, args, m, s, r, p))
    bar = _bar(len(jobs))
    for key, res in _results(jobs, args.jobs):
        cells[key] = res
        (out / f"{key}.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
        bar(key, res)
    text = table(cells, modes, scenarios, replicas, policies)
    (out / "table.md").write_text(text + "\n")
    if plot(cells, modes, scenarios, replicas, policies, out / "headline.png"):
        print(f"plot: {out / 'headline.png'}", file=sys.stderr)
    print(text)
    return 0


def _results(jobs: list, workers: int):
    """Finished cells as they come: in this process with one job, else in a process pool."""
    if workers <= 1 or len(jobs) <= 1:
        yield from (run_cell(j) for j in jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for fut in as_completed([pool.submit(run_cell, j) for j in jobs]):
            yield fut.result()


def _bar(total: int):
    """A tqdm bar on a terminal, one line per finished cell otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=total, desc="headline cells", file=sys.stderr)
        return lambda key, res: (bar.set_postfix_str(key), bar.update(1))
    return lambda key, res: print(f"{key}: {res['capacity_rps_per_gpu']:.3f} req/s/GPU", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
