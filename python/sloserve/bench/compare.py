"""Run the same workload against several targets (URLs or launched policies), tabulate, plot."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, ContextManager

from sloserve.bench.capacity import CapacityResult, capacity_search
from sloserve.bench.client import probe
from sloserve.bench.config import BenchConfig
from sloserve.bench.runner import append_result, run_benchmark
from sloserve.bench.servers import embedded_server


@dataclass
class TargetRuns:
    label: str
    results: list[dict] = field(default_factory=list)
    capacity: CapacityResult | None = None


def targets(cfg: BenchConfig) -> list[tuple[str, Callable[[], ContextManager[str]]]]:
    """(label, context manager yielding a base URL) per server to measure."""
    if cfg.policy:
        return [(p, lambda p=p: embedded_server(p, cfg.server_args, None)) for p in cfg.policy]
    return [(u, lambda u=u: contextlib.nullcontext(u)) for u in cfg.urls]


def _bar(cfg: BenchConfig, total: int, desc: str):
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=desc, disable=cfg.disable_tqdm, file=sys.stderr, leave=False)


def _one_run(cfg: BenchConfig, url: str, rate: float, label: str) -> dict:
    with _bar(cfg, cfg.num_prompts, f"{label} @ {rate:g} rps") as bar:
        result = run_benchmark(cfg, url, rate, progress=lambda: bar.update(1))
    result["label"] = label
    if cfg.output_file:
        append_result(cfg.output_file, result)
    return result


def run_target(cfg: BenchConfig, label: str, url: str) -> TargetRuns:
    asyncio.run(probe(url))  # fail clearly (BenchError) before any progress bar is drawn
    runs = TargetRuns(label)
    if not cfg.capacity_search:
        runs.results = [_one_run(cfg, url, r, label) for r in cfg.rates]
        return runs
    with _bar(cfg, 2 + cfg.capacity_iters, f"capacity {label}") as bar:

        def progress(rate: float, att: float) -> None:
            bar.set_postfix(rate=f"{rate:.3g}", attainment=f"{att:.2f}")
            bar.update(1)

        runs.capacity = capacity_search(
            lambda r: _one_run(cfg, url, r, label),
            cfg.capacity_lo,
            cfg.capacity_hi,
            cfg.capacity_target,
            cfg.capacity_iters,
            progress,
        )
    runs.results = [p.result for p in runs.capacity.points]
    return runs


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:.1%}" if pct else f"{v:.3g}"


def table(all_runs: list[TargetRuns]) -> str:
    """A plain-text comparison table, one row per run."""
    head = f"{'target':<28} {'rate':>7} {'attain':>7} {'goodput':>8} {'admitted':>8} {'p50 TTFT':>9} {'p50 TPOT':>9}  per tier"
    lines = [head, "-" * len(head)]
    for runs in all_runs:
        for r in sorted(
            runs.results, key=lambda r: float(r["request_rate"]) if r["request_rate"] != "inf" else math.inf
        ):
            tiers = " ".join(f"{k}={v:.0%}" for k, v in r["attainment_by_tier"].items())
            lines.append(
                f"{runs.label[:28]:<28} {str(r['request_rate'])[:7]:>7} {_fmt(r['attainment'], True):>7} "
                f"{_fmt(r['goodput_rps']):>8} {_fmt(r['admitted_fraction'], True):>8} "
                f"{_fmt(r['median_ttft_ms']):>9} {_fmt(r['median_tpot_ms']):>9}  {tiers}"
            )
        if runs.capacity is not None:
            lines.append(
                f"{runs.label[:28]:<28} capacity {runs.capacity.capacity_rps:.3g} rps at "
                f"{runs.capacity.target_attainment:.0%} attainment"
            )
    return "\n".join(lines)


def write_plots(cfg: BenchConfig, all_runs: list[TargetRuns]) -> list[str]:
    """attainment_vs_rate.png and tier_bars.png under --plot-dir; returns the paths."""
    from sloserve.bench.plots import plot_attainment_vs_rate, plot_tier_bars  # noqa: PLC0415

    assert cfg.plot_dir is not None
    os.makedirs(cfg.plot_dir, exist_ok=True)
    finite = lambda r: r["request_rate"] != "inf"  # noqa: E731
    series = {t.label: [(float(r["request_rate"]), r["attainment"]) for r in t.results if finite(r)] for t in all_runs}
    caps = {t.label: t.capacity.capacity_rps for t in all_runs if t.capacity is not None}
    paths = []
    if any(series.values()):
        path = os.path.join(cfg.plot_dir, "attainment_vs_rate.png")
        plot_attainment_vs_rate(series, path, caps, cfg.capacity_target if caps else None, title=cfg.scenario)
        paths.append(path)
    bars, title = tier_bars(all_runs)
    path = os.path.join(cfg.plot_dir, "tier_bars.png")
    plot_tier_bars(bars, path, title=f"{cfg.scenario}: {title}")
    return paths + [path]


def _rate(r: dict) -> float:
    return float(r["request_rate"]) if r["request_rate"] != "inf" else math.inf


def _rate_text(rate: float) -> str:
    return "all at once" if math.isinf(rate) else f"{rate:.3g} rps"


def tier_bars(all_runs: list[TargetRuns]) -> tuple[dict[str, dict], str]:
    """Per-tier attainment bars that compare like with like: every target at the highest rate
    they all ran; else (a capacity search bisects each target to its own rates) each target at
    its capacity, the rate in its label. Returns ``{bar label: attainment_by_tier}`` and a title."""
    runs = [t for t in all_runs if t.results]
    common = set.intersection(*({_rate(r) for r in t.results} for t in runs)) if runs else set()
    searched = any(t.capacity is not None and t.capacity.capacity_rps > 0 for t in runs)
    if common and not searched:
        rate = max(common)
        return (
            {t.label: next(r for r in t.results if _rate(r) == rate)["attainment_by_tier"] for t in runs},
            f"attainment per tier at {_rate_text(rate)}",
        )
    bars = {}
    for t in runs:
        run = _bar_run(t)
        bars[f"{t.label} @ {_rate_text(_rate(run))}"] = run["attainment_by_tier"]
    return bars, "attainment per tier at each target's capacity" if searched else "attainment per tier"


def _bar_run(t: TargetRuns) -> dict:
    """The run a tier bar shows: the one at the capacity rate, else the highest rate."""
    if t.capacity is not None and t.capacity.capacity_rps > 0:
        return next(p.result for p in t.capacity.points if p.rate_rps == t.capacity.capacity_rps)
    return max(t.results, key=_rate)
