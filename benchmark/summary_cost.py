"""Cost of ``slos-serve``'s ``summary()`` (published after every step) with and without the spare curve.

The replica is built as in benchmark/planner_overhead.py (``--resident`` requests, loose SLOs,
``--new`` arrivals per step). After each of ``--rounds`` steps the summary is timed as the
runtime sees it right after a step: tier view and grid caches cold (best of ``--repeat``).

    python benchmark/summary_cost.py --resident 256
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import timeit

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from planner_overhead import LoadedReplica  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resident", type=int, default=256)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--model", default="opt-13b-tp2-a100")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rep = LoadedReplica(args.resident, args.model, args.seed, {})
    sched = rep.sched
    rep.warm_up(args.new)
    times: dict[str, list[float]] = {"with_spare_ms": [], "without_spare_ms": [], "curve_on_warm_rows_ms": []}
    slo, pending = [], []
    for _ in range(args.rounds):
        rep.make_room(args.new)
        batch = rep.new_requests(args.new)
        for r in batch:
            sched.add(r, rep.t)
        rep.admitted(batch)
        rep.step(sched.schedule(rep.t))  # leaves the tier view unbuilt, as a summary right after a step sees it
        t = rep.t

        def cold(now: float = t, spare: bool = True) -> None:
            sched.tiers.invalidate()
            sched.planner.clear_grids()
            sched.summary(now, spare)

        for key, flag in (("with_spare_ms", True), ("without_spare_ms", False)):
            times[key].append(min(timeit.repeat(lambda f=flag: cold(spare=f), number=1, repeat=args.repeat)) * 1e3)
        sched.summary(t)
        times["curve_on_warm_rows_ms"].append(
            min(timeit.repeat(lambda: sched.publisher.spare_prefill(t), number=1, repeat=args.repeat)) * 1e3  # noqa: B023
        )
        slo.append(len(sched.tiers.slo))
        pending.append(int(sched.tiers.view().pending_deadline_s.size))
    out = {
        "resident": args.resident,
        "slo_tier_mean": float(np.mean(slo)),
        "pending_prefills_mean": float(np.mean(pending)),
        **{f"{k}_p50": round(float(np.median(v)), 4) for k, v in times.items()},
        **{f"{k}_p90": round(float(np.percentile(v, 90)), 4) for k, v in times.items()},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
