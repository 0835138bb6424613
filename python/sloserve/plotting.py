"""Plots (matplotlib, imported lazily, headless): attainment against rate, run timelines.

Outside the pure core on purpose: only CLIs and benchmarks import this module.
"""

from __future__ import annotations

from typing import Mapping


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_capacity(
    results: Mapping[str, object], path: str, title: str = "", target: float | None = None, xlabel: str | None = None
) -> None:
    """Attainment against rate per policy, the capacity point of each marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, res in results.items():
        pts = sorted(res.points, key=lambda p: p.rate_rps)
        (line,) = ax.plot([p.rate_rps for p in pts], [p.attainment for p in pts], marker="o", ms=3, label=name)
        ax.axvline(res.capacity_rps, color=line.get_color(), ls=":", lw=1)
        target = res.target_attainment if target is None else target
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set_xlabel(xlabel or "arrival rate (requests/s)")
    ax.set_ylabel("SLO attainment")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_run(result, path: str, title: str = "") -> None:
    """Per-request TTFT over arrival time, coloured by tier, misses marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {"slo": "tab:blue", "best_effort": "tab:orange", "pending": "tab:blue", "rejected": "tab:red"}
    for tier, color in colors.items():
        recs = [r for r in result.records if r.tier == tier and r.token_times]
        if not recs:
            continue
        ax.scatter([r.arrival_s for r in recs], [r.ttft_s * 1e3 for r in recs], s=6, color=color, label=tier)
        miss = [r for r in recs if not r.attained()]
        if miss:
            ax.scatter(
                [r.arrival_s for r in miss],
                [r.ttft_s * 1e3 for r in miss],
                s=14,
                facecolors="none",
                edgecolors="black",
                lw=0.5,
            )
    ax.set_xlabel("arrival time (s)")
    ax.set_ylabel("TTFT (ms)")
    ax.set_yscale("log")
    ax.set_title(title + " (circled: SLO missed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
