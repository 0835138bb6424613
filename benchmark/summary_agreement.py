"""How often summary-only admission estimates agree with the replicas' live ``can_admit``.

Runs one simulation (the ``python -m sloserve.sim run`` arguments, router ``slo-proactive``).
For every arrival and every replica, before the router decides, it compares ``can_admit`` on
the replica's live state with ``SummaryAdmission.estimate`` from:

* ``spare``: the published summary plus the router's pending ledger (what a summary-only
  ``slo-proactive`` sees), judged by the published spare prefill curve;
* ``backlog``: the same summary judged by prefill backlog and rate (``summary_spare=false``);
* ``spare_fresh``: a summary taken now with nothing pending (no staleness), same headroom;
* ``spare_fresh_h0``: the fresh summary with no headroom (the curve alone).

The routing itself is the router's own (the comparison does not change it).

    python benchmark/summary_agreement.py --scenario coder --policy slos-serve \\
        --trace AzureLLMInferenceTrace_code.csv --trace-window 1786:3400 --num-requests 600 \\
        --max-seq-len 2038 --replicas 4 --router slo-proactive --router-opt use_can_admit=false --rate 8
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from sloserve.datadir import data_file
from sloserve.routing.summary import EffectiveLoad, PendingLoad, SummaryAdmission
from sloserve.sim.options import add_sim_arguments, build_sim_config, workload_config
from sloserve.sim.simulator import Simulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sim_arguments(ap)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--out", default=None, help="write the JSON result here")
    args = ap.parse_args()
    if args.trace and "/" not in args.trace:
        args.trace = str(data_file("traces", args.trace))
    from sloserve.workloads import build_workload

    config = build_sim_config(args)
    sim = Simulator(build_workload(workload_config(args, args.rate)).programs, config)
    router = sim.router
    if not hasattr(router, "ledger"):
        raise SystemExit("use --router slo-proactive (its pending ledger is what summary-only routing sees)")
    headroom = router.config.summary_headroom
    judges = {"spare": SummaryAdmission(headroom), "backlog": SummaryAdmission(headroom, use_spare=False)}
    fresh = {"spare_fresh": SummaryAdmission(headroom), "spare_fresh_h0": SummaryAdmission(0.0)}
    tallies: dict[str, Counter] = {k: Counter() for k in [*judges, *fresh]}
    route = router.route

    def compare(request, replicas, now_s):
        for view in replicas:
            truth = view.can_admit(request, now_s)
            if truth.reason.value not in ("admitted", "no_time"):
                continue  # KV or SLO refusals: the time estimate is not what decides them
            summary = view.summary()
            load = router.ledger.effective(summary, now_s)
            for name, judge in judges.items():
                tallies[name][(truth.admitted, judge.estimate(request, summary, load, now_s).admitted)] += 1
            now = view.scheduler.summary(now_s)
            idle = EffectiveLoad(
                now.replica_id,
                now.num_requests,
                now.outstanding_tokens,
                now.prefill_backlog_tokens,
                now.free_kv_tokens,
                PendingLoad(),
            )
            for name, judge in fresh.items():
                tallies[name][(truth.admitted, judge.estimate(request, now, idle, now_s).admitted)] += 1
        return route(request, replicas, now_s)

    router.route = compare
    result = sim.run()
    out = {"rate_rps": args.rate, "attainment": result.summary.get("attainment"), "estimators": {}}
    for name, t in tallies.items():
        n = sum(t.values())
        out["estimators"][name] = {
            "pairs": n,
            "agree": round((t[(True, True)] + t[(False, False)]) / n, 4),
            "can_admit_yes": t[(True, True)] + t[(True, False)],
            "false_refusals": t[(True, False)],  # the replica would admit, the estimate says no
            "false_admits": t[(False, True)],  # the estimate says yes, the replica refuses
        }
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
