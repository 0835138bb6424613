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
    run_at: Callable[[float], dict],
    lo_rps: float,
    hi_rps: float,
    target: float,
    iters: int,
    progress=None,
    widen: int = 0,
) -> CapacityResult:
    """Bisect [lo, hi]: check lo, then hi, then ``iters`` midpoints. With ``widen`` > 0 a bracket
    that missed the capacity is moved, at most that many times, by its width ratio or 2, whichever
    is less: down while lo misses the target, up while hi meets it (a prediction can be off by more than the
    bracket); the capacity stays censored at the last hi (or 0) when it never turns."""
    points: list[CapacityPoint] = []

    def probe(rate: float) -> bool:
        res = run_at(rate)
        points.append(CapacityPoint(rate, float(res["attainment"]), res))
        if progress is not None:
            progress(rate, res["attainment"])
        return res["attainment"] >= target

    ratio, moves, bad = min(hi_rps / lo_rps, 2.0), widen, None  # a move past the bracket doubles or halves
    while not probe(lo_rps):  # the low end misses: move the bracket down
        if moves <= 0:
            return CapacityResult(0.0, target, tuple(points))
        moves, bad, lo_rps = moves - 1, lo_rps, lo_rps / ratio
    good = lo_rps
    if bad is None:  # the low end holds: is the high end still below capacity?
        while probe(hi_rps):
            if moves <= 0:
                return CapacityResult(hi_rps, target, tuple(points))
            moves, good, hi_rps = moves - 1, hi_rps, hi_rps * ratio
        bad = hi_rps
    for _ in range(iters):
        mid = (good * bad) ** 0.5 if bad / good > 4 else (good + bad) / 2  # geometric while the bracket is wide
        if probe(mid):
            good = mid
        else:
            bad = mid
    return CapacityResult(good, target, tuple(points))
