"""Capacity search against a live server: bisection on the arrival rate, each point a fresh run.

Capacity is the highest rate whose attainment reaches the target. Every probe is a complete
run with the same seed, so points differ only in rate (common random numbers). ``run_at`` is
injected so the search can start a fresh server per point, or reuse one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class CapacityPoint:
    rate_rps: float
    attainment: float
    result: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class CapacityResult:
    capacity_rps: float  # 0 when even the lowest rate misses the target
    target_attainment: float
    points: tuple[CapacityPoint, ...]


def capacity_search(
    run_at: Callable[[float], dict], lo_rps: float, hi_rps: float, target: float, iters: int, progress=None
) -> CapacityResult:
    """Bisect [lo, hi]: check lo, then hi, then ``iters`` midpoints."""
    points: list[CapacityPoint] = []

    def probe(rate: float) -> bool:
        res = run_at(rate)
        points.append(CapacityPoint(rate, float(res["attainment"]), res))
        if progress is not None:
            progress(rate, res["attainment"])
        return res["attainment"] >= target

    if not probe(lo_rps):
        return CapacityResult(0.0, target, tuple(points))
    if probe(hi_rps):
        return CapacityResult(hi_rps, target, tuple(points))
    good, bad = lo_rps, hi_rps
    for _ in range(iters):
        mid = (good * bad) ** 0.5 if bad / good > 4 else (good + bad) / 2  # geometric while the bracket is wide
        if probe(mid):
            good = mid
        else:
            bad = mid
    return CapacityResult(good, target, tuple(points))
