"""Overload on the real engine: best effort served however late, or expired at its TTFT deadline.

    python benchmark/overload_expiry.py --from-json real_vs_sim.json [--json out.json]

SGLang + sloserve plugin on CPU with real_vs_sim.py's tiny model, fitted profile and workload
(its --work-dir cache: run real_vs_sim.py first), one busy loop beside the server, serves the
workload at the measured capacity and at ``--overload`` times it, under two settings of the
plugin, interleaved ``--repeats`` times (these machines drift within minutes):

* ``serve``: ``--no-best-effort-expiry``, best effort served however late (the old behaviour);
* ``expire`` (the default): a request the plan did not admit ends with 429 when its TTFT
  deadline passes without a first token.

Prints, per setting and rate, admitted requests and how many missed their SLO (the client's
measure), attainment over all requests, the tiers and the median TTFT; writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_vs_sim as rv  # noqa: E402  (its server, workload and cache)
from sloserve.bench import loop  # noqa: E402

SETTINGS = {"serve": ["--no-best-effort-expiry"], "expire": []}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-json", required=True, help="a real_vs_sim.py result: its measured capacity")
    ap.add_argument("--policy-opt", action="append", default=[], metavar="K=V", help="as real_vs_sim.py's")
    ap.add_argument("--work-dir", default=None, help="real_vs_sim.py's --work-dir (its default when not given)")
    ap.add_argument("--json", default=None, help="write the points here")
    ap.add_argument("--overload", type=float, default=1.6, help="the overloaded rate, as a multiple of capacity")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds of the settings")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = ap.parse_args(argv)
    if args.overload <= 0 or args.repeats < 1:
        ap.error("--overload must be > 0 and --repeats >= 1")
    return args


def point(res: dict, setting: str, rate: float, round_: int) -> dict:
    details = res["details"]
    admitted = [d for d in details if d["tier"] == "slo"]
    ttft = [d["ttft_ms"] for d in details if d.get("ttft_ms") is not None]
    return {
        "setting": setting,
        "round": round_,
        "rate_rps": rate,
        "requests": len(details),
        "admitted": len(admitted),
        "admitted_misses": sum(not d["attained"] for d in admitted),
        "attainment": res["attainment"],
        "tiers": dict(Counter(d["tier"] for d in details)),
        "median_ttft_ms": statistics.median(ttft) if ttft else None,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    prior = json.loads(Path(args.from_json).read_text())
    capacity = prior.get("measured_capacity_rps")
    if not capacity:
        print(f"error: {args.from_json} has no measured capacity", file=sys.stderr)
        return 2
    passed = [f"--policy-opt={o}" for o in args.policy_opt] + (["--work-dir", args.work_dir] if args.work_dir else [])
    rv_args = rv.parse_args(["--json", "/dev/null", *passed])
    work = Path(rv_args.work_dir)
    csv_path = work / f"profile-hogs{rv_args.cpu_hogs}-threads{rv_args.engine_threads}.csv"
    fit_path = csv_path.with_suffix(".fit.json")
    if not fit_path.exists() or not rv.zero_load_path(csv_path).exists():
        print(f"error: no cached profile and fit in {work}: run benchmark/real_vs_sim.py first", file=sys.stderr)
        return 2
    model = rv.ensure_model(rv_args, work)
    base = loop.LoopWorkload(duration_s=rv_args.duration_s, ttft_slowdown=rv_args.ttft_slowdown, seed=rv_args.seed)
    workload = loop.ZeroLoad(**json.loads(rv.zero_load_path(csv_path).read_text())).apply(base, rv_args.tpot_steps)
    rates = [capacity, capacity * args.overload]
    points = []
    hogs = rv.start_cpu_hogs(rv_args.cpu_hogs)
    started = time.monotonic()
    try:
        for round_ in range(args.repeats):
            for setting in args.settings:
                extra = rv.server_policy_args(rv_args, fit_path, True) + SETTINGS[setting]
                srv = rv.start_server(f"overload-{setting}", model, work, extra, work / "overload-steps", rv_args)
                try:
                    cfg = rv.bench_config(srv.url, str(fit_path))
                    for rate in rates:
                        res = rv.run_benchmark(cfg, srv.url, rate, workload=workload.bench_workload)
                        points.append(p := point(res, setting, rate, round_))
                        print(json.dumps(p), flush=True)
                finally:
                    srv.stop()
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    print(f"\n{'setting':<8} {'rate':>6} {'admitted':>9} {'misses':>7} {'attainment':>11} {'median TTFT':>12}")
    for setting in args.settings:
        for rate in rates:
            ps = [p for p in points if p["setting"] == setting and p["rate_rps"] == rate]
            adm, miss = sum(p["admitted"] for p in ps), sum(p["admitted_misses"] for p in ps)
            att = statistics.median(p["attainment"] for p in ps)
            ttft = statistics.median(p["median_ttft_ms"] or 0.0 for p in ps)
            print(f"{setting:<8} {rate:>6.2f} {adm:>9} {miss:>7} {att:>11.3f} {ttft:>10.0f} ms")
    if args.json:
        out = {
            "command": "python benchmark/overload_expiry.py " + " ".join(argv or sys.argv[1:]),
            "capacity_rps": capacity,
        }
        out.update(elapsed_s=round(time.monotonic() - started, 1), rates_rps=rates, points=points)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
