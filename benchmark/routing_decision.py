"""Routing decision time per request, for every registered routing policy.

The replicas are fabricated views whose ``can_admit`` and ``summary`` are table look-ups, so
the time measured is the router's own (what the router process or DP controller adds per
request); a planner's ``can_admit`` cost is the planner's and is measured by its benchmark.
Loads change as requests are routed and summaries are republished every few requests, so the
routers' pending ledgers and burst trackers do real work. Arrivals are bursty (Gamma CV 4).

    python benchmark/routing_decision.py --replicas 8 --requests 20000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sloserve.core.plan import AdmitDecision, AdmitReason, ReplicaSummary
from sloserve.core.request import Request
from sloserve.core.slo import DecodeSegment
from sloserve.routing.base import ROUTERS, create_router

TIERS = (("chatbot", 100.0), ("coder", 50.0), ("summarizer", 100.0))


class BenchView:
    """A replica whose state is a few numbers the benchmark moves around."""

    def __init__(self, replica_id: int, summary_only: bool) -> None:
        self.replica_id = replica_id
        self.summary_only = summary_only
        self.outstanding = 0
        self.requests = 0
        self.spare = 20_000
        self._summary = self._make(0.0)

    def _make(self, now_s: float) -> ReplicaSummary:
        return ReplicaSummary(
            self.replica_id,
            time_s=now_s,
            num_requests=self.requests,
            outstanding_tokens=self.outstanding,
            free_kv_tokens=90_000,
            kv_capacity_tokens=100_000,
            prefill_backlog_tokens=self.outstanding // 3,
            prefill_tokens_per_s=12_000.0,
            spare_prefill_tokens=((0.25, self.spare // 8), (1.0, self.spare // 2), (2.0, self.spare)),
        )

    def publish(self, now_s: float) -> None:
        self._summary = self._make(now_s)

    def summary(self) -> ReplicaSummary:
        return self._summary

    def can_admit(self, request: Request, now_s: float) -> AdmitDecision:
        if self.summary_only:
            raise NotImplementedError
        if request.prompt_tokens > self.spare:
            return AdmitDecision(AdmitReason.NO_TIME)
        return AdmitDecision(AdmitReason.ADMITTED, slack_s=(self.spare - request.prompt_tokens) / 12_000.0)


def make_requests(n: int, seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    cv = 4.0  # Gamma inter-arrivals with CV 4: bursts
    gaps = rng.gamma(1.0 / cv**2, cv**2 / 10.0, size=n)  # mean 0.1 s
    times = np.cumsum(gaps)
    prompts = rng.integers(50, 2000, size=n)
    outputs = rng.integers(10, 400, size=n)
    tiers = rng.integers(0, len(TIERS), size=n)
    out = []
    for i in range(n):
        name, tpot = TIERS[tiers[i]]
        out.append(
            Request(
                f"b{i}", float(times[i]), int(prompts[i]), int(outputs[i]), 1.5, (DecodeSegment(tpot),), slo_class=name
            )
        )
    return out


def bench(
    name: str, options: dict, replicas: int, requests: list[Request], publish_every: int, summary_only: bool, seed: int
) -> dict:
    views = [BenchView(i, summary_only) for i in range(replicas)]
    router = create_router(name, options, seed=seed)
    rng = np.random.default_rng(seed)
    durations = np.empty(len(requests), dtype=np.int64)
    for i, req in enumerate(requests):
        t0 = time.perf_counter_ns()
        d = router.route(req, views, req.arrival_s)
        durations[i] = time.perf_counter_ns() - t0
        v = views[d.replica_id]
        v.outstanding += req.prompt_tokens + req.output_tokens
        v.requests += 1
        v.spare = max(v.spare - req.prompt_tokens, 0)
        if i % publish_every == publish_every - 1:  # a step ended somewhere: replicas drain and republish
            for w in views:
                done = int(rng.integers(0, 3000))
                w.outstanding = max(w.outstanding - done, 0)
                w.requests = max(w.requests - int(rng.integers(0, 3)), 0)
                w.spare = min(w.spare + done, 20_000)
                w.publish(req.arrival_s)
    us = durations[len(durations) // 10 :] / 1e3  # skip warm-up
    return {
        "policy": name,
        "options": options,
        "replicas": replicas,
        "summary_only": summary_only,
        "median_us": float(np.median(us)),
        "p99_us": float(np.percentile(us, 99)),
        "max_us": float(us.max()),
        "mean_us": float(us.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--publish-every", type=int, default=4, help="requests between summary refreshes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args(argv)
    reqs = make_requests(args.requests, args.seed)
    runs = [(name, {}, False) for name in ROUTERS.names()]
    runs.append(("slo-proactive", {}, True))  # summary-only: the live router / DP controller
    rows = []
    print(f"{'policy':28s} {'median_us':>10s} {'p99_us':>10s} {'max_us':>10s}")
    for name, options, summary_only in runs:
        row = bench(name, options, args.replicas, reqs, args.publish_every, summary_only, args.seed)
        rows.append(row)
        label = name + (" (summary-only)" if summary_only else "")
        print(f"{label:28s} {row['median_us']:10.1f} {row['p99_us']:10.1f} {row['max_us']:10.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"replicas": args.replicas, "requests": args.requests, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
