"""Outcomes -> StageRecords -> the run's JSON summary, with the simulator's own metric code.

TTFT SLOs are resolved like the simulator does (``TTFTSLO.resolve_s`` with the batch-time
model's zero-load prefill time), using the prompt length the server reports when it reports
one. Attainment, goodput and per-tier/per-stage splits come from ``sloserve.metrics.summarize``;
per-segment attainment (thinking vs answer) from ``token_deadlines_s``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from sloserve.bench.client import StageOutcome
from sloserve.metrics import StageRecord, summarize, token_deadlines_s
from sloserve.perf.base import BatchTimeModel


def to_record(o: StageOutcome, model: BatchTimeModel) -> StageRecord:
    stage = o.stage
    prompt = o.prompt_tokens_reported or stage.prompt_tokens
    meta = o.meta or {}
    rejected = o.status == 429
    tier = "rejected" if rejected else str(meta.get("tier") or "slo")  # no tier reported: all admitted
    rec = StageRecord(
        request_id=f"{o.program.program_id}:{o.stage_index}",
        program_id=o.program.program_id,
        slo_class=o.program.slo_class,
        stage_index=o.stage_index,
        stage_name=stage.name,
        arrival_s=o.send_s,
        ttft_slo_s=stage.ttft.resolve_s(prompt, model.zero_load_prefill_s),
        segments=stage.segments,
        prompt_tokens=prompt,
        output_tokens=stage.output_tokens,
        replica_id=int(meta.get("replica") or 0),
        tier=tier,
        rejected=rejected,
        reason=str(meta.get("admission") or (o.error or "")),
        num_preemptions=int(meta.get("num_retractions") or 0),
    )
    rec.token_times = list(o.token_times)
    if o.ok:
        rec.finish_s = o.token_times[-1]
    return rec


def segment_attainment(records: list[StageRecord], tolerance: float) -> dict[str, float]:
    """Share of stages whose tokens of each named decode segment all met their deadlines."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        if len(r.segments) < 2:
            continue
        times = np.asarray(r.token_times)
        ok_run = r.completed and r.tier not in ("best_effort", "rejected")
        dl = token_deadlines_s(r.arrival_s, r.ttft_slo_s, r.segments, times, tolerance) if times.size else times
        met = times <= dl + 1e-12
        start = 0
        for i, seg in enumerate(r.segments):
            end = r.output_tokens if seg.num_tokens is None or i == len(r.segments) - 1 else start + seg.num_tokens
            part = met[start:end]
            hits[seg.name].append(bool(ok_run and part.size == end - start and part.all()))
            start = end
    return {k: float(np.mean(v)) for k, v in sorted(hits.items())}


def _latency_block(name: str, values_s: list[float]) -> dict:
    """SGLang's mean/median/std/p90/p95/p99 fields, in ms (None without samples)."""
    arr = np.asarray(values_s, dtype=np.float64) * 1e3
    keys = ("mean", "median", "std", "p90", "p95", "p99")
    if arr.size == 0:
        return {f"{k}_{name}_ms": None for k in keys}
    vals = (arr.mean(), np.median(arr), arr.std(), *np.percentile(arr, (90, 95, 99)))
    return {f"{k}_{name}_ms": round(float(v), 4) for k, v in zip(keys, vals)}


def summarize_run(
    outcomes: list[StageOutcome],
    programs,
    duration_s: float,
    model: BatchTimeModel,
    tolerance: float,
    details: bool = False,
) -> dict:
    """The run summary: SGLang bench_serving's latency fields plus the SLO metrics."""
    records = [to_record(o, model) for o in outcomes]
    stages = {p.program_id: len(p.stages) for p in programs}
    summary = summarize(records, len(programs), stages, duration_s, tolerance)
    ok = [o for o in outcomes if o.ok]
    itl = [b - a for o in ok for a, b in zip(o.token_times, o.token_times[1:])]
    out_tokens = sum(len(o.token_times) for o in ok)
    in_tokens = sum(o.prompt_tokens_reported or o.stage.prompt_tokens for o in ok)
    # a tier in meta_info, or an HTTP 429 refusal, is the server reporting its admission decision
    reported = [o for o in outcomes if (o.meta and o.meta.get("tier")) or o.status == 429]
    errors = [o.error for o in outcomes if o.error]
    result = {
        "duration": duration_s,
        "completed": summary["num_completed"],
        "num_stage_requests": len(outcomes),
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "request_throughput": summary["num_completed"] / duration_s if duration_s > 0 else 0.0,
        "input_throughput": in_tokens / duration_s if duration_s > 0 else 0.0,
        "output_throughput": out_tokens / duration_s if duration_s > 0 else 0.0,
        "total_throughput": (in_tokens + out_tokens) / duration_s if duration_s > 0 else 0.0,
        # mean requests in flight (Little's law), as SGLang reports it
        "concurrency": sum(o.token_times[-1] - o.send_s for o in ok) / duration_s if duration_s > 0 else 0.0,
        **_latency_block("ttft", [r.ttft_s for r in records if r.completed]),
        **_latency_block("tpot", [r.tpot_s for r in records if r.completed and r.tpot_s is not None]),
        **_latency_block("itl", itl),
        **_latency_block("e2e_latency", [o.token_times[-1] - o.send_s for o in ok]),
        "attainment": summary["attainment"],
        "attainment_every20": summary["attainment_every20"],
        "attainment_by_tier": summary["attainment_by_tier"],
        "attainment_by_stage": summary["attainment_by_stage"],
        "attainment_by_segment": segment_attainment(records, tolerance),
        "goodput_rps": summary["goodput_rps"],
        # "Revisiting SLO and goodput metrics" (metrics/smooth.py): partial credit by idle latency
        "smooth_goodput_rps": summary["smooth_goodput_rps"],
        "smooth_attainment": summary["smooth_attainment"],
        "idle_latency_ms": summary["idle_latency_ms"],
        # what the server says it admitted (meta_info tier); None when it reports no tier
        "admitted_fraction": _admitted_fraction(outcomes, len(programs)) if reported else None,
        "num_rejected": summary["num_rejected"],
        "num_best_effort": summary["num_best_effort"],
        "num_admitted_slo_misses": summary["num_admitted_slo_misses"],
        "num_errors": len(errors),
        "first_error": errors[0] if errors else None,
        "server_slo_met_fraction": _server_met(outcomes),
    }
    if details:
        result["details"] = [_detail(o, r) for o, r in zip(outcomes, records)]
        # SGLang's --output-details arrays, one entry per stage request
        result["input_lens"] = [r.prompt_tokens for r in records]
        result["output_lens"] = [len(o.token_times) for o in outcomes]
        result["ttfts"] = [None if r.ttft_s is None else r.ttft_s for r in records]
        result["itls"] = [[b - a for a, b in zip(o.token_times, o.token_times[1:])] for o in outcomes]
        result["errors"] = [o.error or "" for o in outcomes]
    return result


def _admitted_fraction(outcomes: list[StageOutcome], num_programs: int) -> float:
    """Programs whose every stage ran and was reported in the ``slo`` tier."""
    by_prog: dict[str, list[bool]] = defaultdict(list)
    need: dict[str, int] = {}
    for o in outcomes:
        by_prog[o.program.program_id].append(o.ok and (o.meta or {}).get("tier") == "slo")
        need[o.program.program_id] = len(o.program.stages)
    full = sum(1 for pid, v in by_prog.items() if len(v) == need[pid] and all(v))
    return full / max(num_programs, 1)


def _server_met(outcomes: list[StageOutcome]) -> float | None:
    flags = [o.meta.get("slo_met") for o in outcomes if o.meta and o.meta.get("slo_met") is not None]
    return float(np.mean(flags)) if flags else None


def _detail(o: StageOutcome, r: StageRecord) -> dict:
    return {
        "program_id": r.program_id,
        "stage": r.stage_name,
        "stage_index": r.stage_index,
        "slo_class": r.slo_class,
        "send_s": round(o.send_s, 6),
        "status": o.status,
        "error": o.error,
        "tier": r.tier,
        "prompt_tokens": r.prompt_tokens,
        "output_tokens": len(o.token_times),
        "ttft_ms": None if r.ttft_s is None else r.ttft_s * 1e3,
        "ttft_slo_ms": r.ttft_slo_s * 1e3,
        "tpot_ms": None if r.tpot_s is None else r.tpot_s * 1e3,
        "attained": r.attained(),
        "server_slo_met": (o.meta or {}).get("slo_met"),
        "admission": (o.meta or {}).get("admission"),
        # the SLO as the server resolved it (docs/slo-api.md), to check tags travelled intact, and
        # the TTFT/TPOT it measured where its tokens left the scheduler (the client adds the way out)
        **{f"server_{k}": (o.meta or {}).get(k) for k in _SERVER_SLO_KEYS},
    }


_SERVER_SLO_KEYS = ("slo_ttft_ms", "slo_tpot_ms", "slo_think_tpot_ms", "slo_think_tokens", "tier", "ttft_ms", "tpot_ms")
