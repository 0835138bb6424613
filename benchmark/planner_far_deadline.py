"""Planner time per call against how far away a TTFT deadline is (issue 13, defect 2).

The replica is built as in benchmark/planner_overhead.py (``--resident`` requests with loose
SLOs); every call adds ``--new`` arrivals whose TTFT SLO is ``slo_ttft_ms`` (absolute) and
builds the next step. One run measures every TTFT side by side, with today's forced-decode
table (dense up to ``batch.DENSE_STEPS`` step counts, sparse beyond) and, where it fits in
memory, with a dense-only table (the planner before the fix). ``cells`` is the deterministic
work counter (``ForcedTable.cells``: (step count, stream) pairs evaluated), ``peak KiB`` the
largest traced allocation total during one call (tracemalloc, on ``--mem-rounds`` extra calls).
Times are medians over the calls of ``--repeats`` passes, interleaved over the settings.

    python benchmark/planner_far_deadline.py --resident 256 --new 16 --rounds 200 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc

import numpy as np

import sloserve.planner.batch as batch
from sloserve.planner.batch import ForcedTable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from planner_overhead import LoadedReplica  # noqa: E402

# 1 s and 10 s (dense: under DENSE_STEPS steps of 0.1 s); 10 min (the validated maximum); past it
# (the planner takes any SLO). 1 s admits about a quarter of the arrivals, the others nearly all,
# and an admission costs more than a refusal: compare 10 s with the far ones.
TTFT_MS = (1e3, 1e4, 6e5, 1e6, 1e9)
DENSE_ONLY_MAX_CELLS = 5e8  # skip the dense-only table where one table would exceed ~4 GB


class TableCounter:
    """Collects every ForcedTable built while active (their ``cells`` are the planner's work)."""

    def __init__(self) -> None:
        self.tables: list[ForcedTable] = []
        self._init = ForcedTable.__init__

    def __enter__(self) -> "TableCounter":
        init, tables = self._init, self.tables

        def counted(table, *args, **kwargs):
            init(table, *args, **kwargs)
            tables.append(table)

        ForcedTable.__init__ = counted
        return self

    def __exit__(self, *exc) -> None:
        ForcedTable.__init__ = self._init


def one_call(rep: LoadedReplica, new: int, ttft_ms: float) -> None:
    rep.make_room(new)
    arrivals = rep.new_requests(new)
    for r in arrivals:
        r.ttft_slo_s = ttft_ms / 1e3
        rep.sched.add(r, rep.t)
    plan = rep.sched.schedule(rep.t)
    rep.admitted(arrivals)
    rep.step(plan)


def measure(args, ttft_ms: float, dense_steps: int) -> dict:
    """One replica, ``--rounds`` timed calls then ``--mem-rounds`` traced ones: the raw samples."""
    batch.DENSE_STEPS = dense_steps
    rep = LoadedReplica(args.resident, args.model, args.seed, {})
    rep.warm_up(args.new)
    out: dict = {"call_ms": [], "cpu_ms": [], "cells": [], "peak_kib": []}
    for _ in range(args.rounds):
        with TableCounter() as tc:
            c0, t0 = time.thread_time(), time.perf_counter()
            one_call(rep, args.new, ttft_ms)
            out["call_ms"].append((time.perf_counter() - t0) * 1e3)
            out["cpu_ms"].append((time.thread_time() - c0) * 1e3)  # less sensitive to other processes
        out["cells"].append(sum(t.cells for t in tc.tables))
    for _ in range(args.mem_rounds):
        tracemalloc.start()
        one_call(rep, args.new, ttft_ms)
        out["peak_kib"].append(tracemalloc.get_traced_memory()[1] / 2**10)
        tracemalloc.stop()
    out["admitted_fraction"] = rep.sched.reasons["admitted"] / max(rep.next_id, 1)
    return out


def summarize(runs: list[dict]) -> dict:
    """Medians over the calls of every repeat pooled (repeats are interleaved across settings, so
    a busy spell of the machine hits every setting alike)."""

    def pool(key: str) -> list[float]:
        return [x for r in runs for x in r[key]]

    return {
        "p50_ms": float(np.percentile(pool("call_ms"), 50)),
        "p99_ms": float(np.percentile(pool("call_ms"), 99)),
        "cpu_p50_ms": float(np.percentile(pool("cpu_ms"), 50)),
        "cells_p50": float(np.percentile(pool("cells"), 50)),
        "peak_kib_max": max(pool("peak_kib"), default=float("nan")),
        "admitted_fraction": float(np.mean([r["admitted_fraction"] for r in runs])),
    }


def settings(args, default_dense: int) -> list[tuple[float, str, int]]:
    out = []
    for ttft_ms in TTFT_MS:
        out.append((ttft_ms, "now", default_dense))
        # a dense table counts ttft / step steps x streams; the loose SLOs' steps are >= 0.1 s
        if ttft_ms / 100 * (args.resident + args.new) <= DENSE_ONLY_MAX_CELLS:
            out.append((ttft_ms, "dense_only", 10**15))
    return out


def print_table(rows: list[dict]) -> None:
    print(
        "| slo_ttft_ms | admitted | p50 / p99 ms | CPU p50 ms | cells p50 | peak KiB "
        "| dense-only p50 / p99 ms | CPU p50 ms | cells p50 | peak KiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        now, old = row["now"], row.get("dense_only")
        before = "not run (memory) | | | "
        if old:
            before = (
                f"{old['p50_ms']:.2f} / {old['p99_ms']:.2f} | {old['cpu_p50_ms']:.2f} | "
                f"{old['cells_p50']:.0f} | {old['peak_kib_max']:.0f}"
            )
        print(
            f"| {row['slo_ttft_ms']:g} | {now['admitted_fraction']:.2f} | {now['p50_ms']:.2f} / "
            f"{now['p99_ms']:.2f} | {now['cpu_p50_ms']:.2f} | {now['cells_p50']:.0f} | "
            f"{now['peak_kib_max']:.0f} | {before} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resident", type=int, default=256)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved passes over every setting")
    ap.add_argument("--mem-rounds", type=int, default=10)
    ap.add_argument("--model", default="opt-13b-tp2-a100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args()
    default = batch.DENSE_STEPS
    todo = settings(args, default)
    runs: dict[tuple[float, str], list[dict]] = {(ms, kind): [] for ms, kind, _ in todo}
    for _ in range(args.repeats):
        for ms, kind, dense in todo:
            runs[(ms, kind)].append(measure(args, ms, dense))
    batch.DENSE_STEPS = default
    rows = []
    for ms in TTFT_MS:
        row = {"slo_ttft_ms": ms}
        row.update({kind: summarize(r) for (m, kind), r in runs.items() if m == ms})
        rows.append(row)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
