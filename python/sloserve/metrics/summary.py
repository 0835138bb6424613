"""Aggregate stage records into the run summary (attainment, latency percentiles, goodput, smooth goodput)."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np

from sloserve.metrics.attainment import DEFAULT_TOLERANCE
from sloserve.metrics.records import StageRecord
from sloserve.metrics.smooth import smooth_totals

PERCENTILES = (50, 90, 99)


def percentiles_ms(values_s: Iterable[float]) -> dict:
    arr = np.asarray([v for v in values_s if v is not None], dtype=np.float64) * 1e3
    if arr.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    out = {"mean": round(float(arr.mean()), 4)}
    for p in PERCENTILES:
        out[f"p{p}"] = round(float(np.percentile(arr, p)), 4)
    return out


def group_by_program(records: Iterable[StageRecord]) -> dict[str, list[StageRecord]]:
    programs: dict[str, list[StageRecord]] = defaultdict(list)
    for rec in records:
        programs[rec.program_id].append(rec)
    return programs


def summarize(
    records: list[StageRecord],
    num_programs: int,
    stages_per_program: dict[str, int],
    duration_s: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict:
    """Run summary. A program attains iff every one of its stages ran and attained.

    ``stages_per_program`` says how many stages each program has (a program whose later
    stages never ran, because an earlier one was rejected, fails).
    """
    programs = group_by_program(records)
    attained = {id(r): r.attained(tolerance) for r in records}  # each record's verdict, once
    ok = ok20 = admitted = completed = rejected = 0
    by_class: dict[str, list[bool]] = defaultdict(list)
    for pid, recs in programs.items():
        full = len(recs) == stages_per_program.get(pid, len(recs))
        met = full and all(attained[id(r)] for r in recs)
        ok += met
        ok20 += full and all(r.attained(tolerance, check_every=20) for r in recs)
        admitted += full and all(r.tier == "slo" for r in recs)
        completed += full and all(r.completed for r in recs)
        rejected += any(r.rejected for r in recs)
        by_class[recs[0].slo_class].append(met)
    by_stage: dict[str, list[bool]] = defaultdict(list)
    for rec in records:
        by_stage[rec.stage_name].append(attained[id(rec)])
    tiers = defaultdict(int)
    for rec in records:
        tiers[rec.tier] += 1
    n = max(num_programs, 1)
    benefit_total, idles_s = smooth_totals(programs, stages_per_program, tolerance)
    return {
        "num_requests": num_programs,
        "num_stages": len(records),
        "num_completed": completed,
        "num_rejected": rejected,
        "attainment": ok / n,
        "attainment_every20": ok20 / n,
        "admitted_fraction": admitted / n,
        "attainment_by_tier": {k: float(np.mean(v)) for k, v in sorted(by_class.items())},
        "attainment_by_stage": {k: float(np.mean(v)) for k, v in sorted(by_stage.items())},
        "num_admitted": tiers.get("slo", 0),
        "num_best_effort": tiers.get("best_effort", 0),
        "num_admitted_slo_misses": sum(1 for r in records if r.tier == "slo" and r.completed and not attained[id(r)]),
        "num_best_effort_met_deadlines": sum(
            1 for r in records if r.tier == "best_effort" and r.deadlines_met(tolerance)
        ),
        "ttft_ms": percentiles_ms(r.ttft_s for r in records),
        "tpot_ms": percentiles_ms(r.tpot_s for r in records),
        "goodput_rps": ok / duration_s if duration_s > 0 else 0.0,
        "num_preemptions": sum(r.num_preemptions for r in records),
        # smooth goodput (metrics/smooth.py): each program scores by how long its user idled
        "smooth_goodput_rps": benefit_total / duration_s if duration_s > 0 else 0.0,
        "smooth_attainment": benefit_total / n,
        "idle_latency_ms": percentiles_ms(idles_s),
    }
