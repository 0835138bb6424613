"""The simulator against queueing theory: M/D/1 waiting time and Little's law."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.core.slo import TTFTSLO, DecodeSegment, ProgramSpec, StageSpec
from sloserve.perf.paper import Line, PaperLinesModel
from sloserve.policies.fcfs import FCFSScheduler
from sloserve.sim import SimConfig, Simulator

SERVICE_S = 0.05
CONSTANT = PaperLinesModel("constant", (Line(0.0, 0.0, SERVICE_S),))


def poisson_programs(rate: float, n: int, seed: int) -> list[ProgramSpec]:
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))
    stage = StageSpec(64, 1, TTFTSLO(absolute_ms=1e6), (DecodeSegment(1e6),))
    return [ProgramSpec(f"p{i:06d}", float(t), "x", (stage,)) for i, t in enumerate(arrivals)]


class _CountingFCFS(FCFSScheduler):
    """Records (time, resident count) after every change, for the time-average queue length."""

    def add(self, request, now_s):
        decision = super().add(request, now_s)
        self.__dict__.setdefault("occupancy", []).append((now_s, len(self.requests)))
        return decision

    def on_step_done(self, plan, result, now_s):
        events = super().on_step_done(plan, result, now_s)
        self.__dict__.setdefault("occupancy", []).append((now_s, len(self.requests)))
        return events


def run_md1(rho: float, n: int = 20000, seed: int = 1):
    cfg = SimConfig(model="constant", policy="fcfs", policy_options={"max_running": 1}, kv_tokens=1 << 20)
    sim = Simulator(poisson_programs(rho / SERVICE_S, n, seed), cfg, perf=CONSTANT)
    counting = _CountingFCFS(sim.replicas[0].scheduler.ctx, sim.replicas[0].scheduler.config)
    sim.replicas[0].scheduler = counting
    return sim, sim.run(), counting


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_wait_matches_pollaczek_khinchine(rho):
    _, result, _ = run_md1(rho)
    waits = np.array([r.token_times[0] - r.arrival_s - SERVICE_S for r in result.records])
    expected = rho * SERVICE_S / (2 * (1 - rho))
    assert waits.min() >= -1e-9
    assert waits.mean() == pytest.approx(expected, rel=0.06)


def test_littles_law_on_queue():
    rho = 0.7
    sim, result, counting = run_md1(rho, n=20000, seed=3)
    times, counts = np.array(counting.occupancy).T
    horizon = result.summary["sim_time_s"]
    # piecewise-constant integral of the scheduler's resident count over the run
    mean_in_system = float((counts[:-1] * np.diff(times)).sum() / horizon)
    sojourn = np.array([r.finish_s - r.arrival_s for r in result.records])
    arrival_rate = len(result.records) / horizon
    assert mean_in_system == pytest.approx(arrival_rate * sojourn.mean(), rel=0.02)
    # and the M/D/1 value: L = rho + rho^2 / (2 (1 - rho))
    assert mean_in_system == pytest.approx(rho + rho**2 / (2 * (1 - rho)), rel=0.08)
