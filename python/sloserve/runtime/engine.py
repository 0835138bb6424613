"""The engine boundary of a scheduler process.

A scheduler process hands each step plan to an engine and gets a ``StepResult`` back; the
engine owns the wall time the step takes. ``SimulatedWallEngine`` is the embedded one: it asks
the simulated engine (batch-time model) how long the step takes and how many tokens it yields,
and the scheduler process then lets that much wall time pass. A GPU engine (SGLang) implements
the same two methods and returns after the real forward pass, with ``step_wall_s`` = 0.
"""

from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np

from sloserve.core.plan import StepPlan, StepResult
from sloserve.core.request import Request
from sloserve.sim.engine import SimulatedEngine


class Engine(Protocol):
    simulated: bool
    description: str

    def execute(self, plan: StepPlan, requests: Mapping[str, Request]) -> StepResult:
        """Run (or simulate) one step; tokens are counted in the result."""

    def step_wall_s(self, result: StepResult) -> float:
        """Wall time the caller must still let pass before the step's tokens exist."""


class SimulatedWallEngine:
    """Step time from the batch-time model, scaled by ``time_scale`` (0: a zero-time engine)."""

    simulated = True

    def __init__(self, perf, time_scale: float = 1.0, seed: int = 0, default_alpha: float = 0.0) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        self.sim = SimulatedEngine(
            perf, rng=np.random.default_rng(seed), default_alpha=default_alpha, time_scale=time_scale
        )
        self.time_scale = time_scale
        self.description = (
            f"simulated GPU: step times from batch-time model {getattr(perf, 'name', perf)!s}"
            f" x time_scale {time_scale:g}; synthetic tokens"
        )

    def execute(self, plan: StepPlan, requests: Mapping[str, Request]) -> StepResult:
        return self.sim.execute(plan, requests)

    def step_wall_s(self, result: StepResult) -> float:
        return result.step_s
