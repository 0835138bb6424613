"""Capacity search: the highest arrival rate whose SLO attainment meets a target.

Bracket by doubling/halving from a start rate, then bisect until the bracket is within the
resolution (2.5% by default). Rejected requests count as failures. The workload is rebuilt
for every rate from the same seed, so lengths are identical and only arrivals are rescaled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from sloserve.core.slo import ProgramSpec
from sloserve.sim.config import SimConfig
from sloserve.sim.simulator import Simulator

MIN_RATE_RPS = 1e-3


@dataclass(frozen=True)
class CapacityPoint:
    rate_rps: float
    attainment: float
    admitted_fraction: float
    goodput_rps: float
    sim_wall_s: float


@dataclass(frozen=True)
class CapacityResult:
    capacity_rps: float
    capacity_rps_per_gpu: float
    num_gpus: int
    target_attainment: float
    points: tuple[CapacityPoint, ...]

    def to_dict(self) -> dict:
        return {
            "capacity_rps": self.capacity_rps,
            "capacity_rps_per_gpu": self.capacity_rps_per_gpu,
            "num_gpus": self.num_gpus,
            "target_attainment": self.target_attainment,
            "points": [p.__dict__ for p in sorted(self.points, key=lambda p: p.rate_rps)],
        }


def capacity_search(
    make_programs: Callable[[float], Sequence[ProgramSpec]],
    config: SimConfig,
    target_attainment: float = 0.9,
    start_rate_rps: float = 1.0,
    resolution: float = 0.025,
    max_points: int = 40,
    progress: Callable[[CapacityPoint], None] | None = None,
    perf=None,
) -> CapacityResult:
    """``make_programs(rate)`` builds the workload at a rate; the config is fixed otherwise."""
    if not 0 < target_attainment <= 1:
        raise ValueError("target attainment must be in (0, 1]")
    if start_rate_rps <= 0:
        raise ValueError("start rate must be positive")
    points: list[CapacityPoint] = []
    num_gpus = [1]

    def ok(rate: float) -> bool:
        sim = Simulator(make_programs(rate), config, perf)
        num_gpus[0] = sim.num_gpus
        s = sim.run().summary
        point = CapacityPoint(rate, s["attainment"], s["admitted_fraction"], s["goodput_rps"], s["sim_wall_s"])
        points.append(point)
        if progress is not None:
            progress(point)
        return s["attainment"] >= target_attainment

    lo, hi = 0.0, None
    rate = start_rate_rps
    if ok(rate):
        lo = rate
        while hi is None and len(points) < max_points:
            rate *= 2
            if ok(rate):
                lo = rate
            else:
                hi = rate
    else:
        hi = rate
        while lo == 0.0 and rate > MIN_RATE_RPS and len(points) < max_points:
            rate /= 2
            if ok(rate):
                lo = rate
            else:
                hi = rate
    while lo > 0 and hi is not None and (hi - lo) / hi > resolution and len(points) < max_points:
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return CapacityResult(lo, lo / num_gpus[0], num_gpus[0], target_attainment, tuple(points))


def capacity_and_summary(
    make_programs: Callable[[float], Sequence[ProgramSpec]],
    config: SimConfig,
    target_attainment: float = 0.9,
    start_rate_rps: float = 1.0,
    resolution: float = 0.025,
) -> tuple[CapacityResult, dict]:
    """``capacity_search``, then one run at the capacity rate: the result and that run's summary
    (admitted misses, goodput... at capacity; ``{}`` when no rate met the target)."""
    res = capacity_search(make_programs, config, target_attainment, start_rate_rps, resolution)
    at = Simulator(make_programs(res.capacity_rps), config).run().summary if res.capacity_rps > 0 else {}
    return res, at
