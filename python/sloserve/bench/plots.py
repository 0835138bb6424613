"""Comparison plots of live-server runs (matplotlib, headless, imported lazily)."""

from __future__ import annotations

from typing import Mapping, Sequence


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_attainment_vs_rate(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str,
    capacity: Mapping[str, float] | None = None,
    target: float | None = None,
    title: str = "",
) -> None:
    """One line per server/policy: attainment against request rate; capacity marked when known."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in series.items():
        pts = sorted(pts)
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=label)
        if capacity and capacity.get(label):
            ax.axvline(capacity[label], color=line.get_color(), ls=":", lw=1)
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set_xlabel("request rate (programs/s)")
    ax.set_ylabel("SLO attainment")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "attainment against rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tier_bars(by_label: Mapping[str, Mapping[str, float]], path: str, title: str = "") -> None:
    """Grouped bars: attainment of each SLO tier (slo_class), one bar per server/policy."""
    plt = _pyplot()
    tiers = sorted({t for v in by_label.values() for t in v})
    labels = list(by_label)
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(4, 1.5 * len(tiers) + 2), 4))
    for i, label in enumerate(labels):
        xs = [j + i * width for j in range(len(tiers))]
        ax.bar(xs, [by_label[label].get(t, 0.0) for t in tiers], width, label=label)
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(tiers))])
    ax.set_xticklabels(tiers)
    ax.set_ylabel("SLO attainment")
    ax.set_ylim(0, 1.05)
    ax.set_title(title or "attainment per tier")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
