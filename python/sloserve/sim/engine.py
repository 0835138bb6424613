"""The simulated engine: executes a step plan in the batch-time model's predicted time.

Used by the discrete-event simulator (virtual time) and by the embedded runtime (which sleeps
for ``step_s`` of wall time). Speculative verifies sample their accepted drafts from a seeded
generator with the engine's true acceptance rate alpha (the policy only ever estimates it).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from sloserve.core.plan import StepPlan, StepResult
from sloserve.core.request import Request


def read_ratio_trace(path: str) -> np.ndarray:
    """A ratio trace file: one observed/predicted ratio per line ('#' lines are comments)."""
    try:
        ratios = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=1)
    except (OSError, ValueError) as exc:
        raise ValueError(f"step-time trace {path!r}: {exc}") from None
    return ratios


def write_ratio_trace(ratios: np.ndarray, path: str, note: str = "") -> None:
    header = "observed/predicted step-time ratios, in run order (sloserve sim --step-time-trace)"
    np.savetxt(path, np.asarray(ratios, dtype=np.float64), fmt="%.5f", header=header + (f"; {note}" if note else ""))


class SimulatedEngine:
    """``noise_cv`` > 0 or ``bias`` != 0 make the engine differ from the model the planner uses:
    a step takes ``plan_time_s x (1 + bias) x X`` with X lognormal of mean 1 and that coefficient
    of variation, drawn from ``noise_rng`` (its own seeded stream, so draft acceptance draws are
    the same with and without noise).

    ``ratio_trace`` (observed / predicted step times of a real engine, in the order it ran them)
    replays a measured engine instead: step i takes ``plan_time_s x trace[(start + i) % len]``,
    ``start`` drawn from ``noise_rng``. In order, because a shared host's contention comes in runs
    of slow steps (the ratios' autocorrelation), which i.i.d. noise of the same spread misses."""

    def __init__(
        self,
        perf,
        rng: np.random.Generator | None = None,
        default_alpha: float = 0.0,
        time_scale: float = 1.0,
        noise_cv: float = 0.0,
        bias: float = 0.0,
        noise_rng: np.random.Generator | None = None,
        ratio_trace: np.ndarray | None = None,
    ) -> None:
        if noise_cv < 0 or bias <= -1:
            raise ValueError("step-time noise must be >= 0 and bias > -1")
        if ratio_trace is not None and (ratio_trace.size == 0 or not np.all(ratio_trace > 0)):
            raise ValueError("a step-time ratio trace needs at least one ratio, all > 0")
        self.perf = perf
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.default_alpha = default_alpha
        self.time_scale = time_scale  # 0 gives a zero-time engine (runtime overhead benchmarks)
        self.bias = bias
        self.noise_sigma = float(np.sqrt(np.log1p(noise_cv * noise_cv)))
        self.noise_rng = noise_rng if noise_rng is not None else np.random.default_rng(1)
        self.extra_s = 0.0  # charged to the next step (the scheduler's own CPU time), then reset
        self.ratio_trace = ratio_trace
        self._trace_pos = int(self.noise_rng.integers(ratio_trace.size)) if ratio_trace is not None else 0

    def step_time_s(self, plan: StepPlan) -> float:
        if plan.is_empty:
            return 0.0
        t = self.perf.plan_time_s(plan) * self.time_scale * (1.0 + self.bias)
        if self.noise_sigma > 0:
            s = self.noise_sigma
            t *= float(np.exp(self.noise_rng.normal(-0.5 * s * s, s)))
        if self.ratio_trace is not None:
            t *= float(self.ratio_trace[self._trace_pos % self.ratio_trace.size])
            self._trace_pos += 1
        extra, self.extra_s = self.extra_s, 0.0
        return t + extra

    def accepted_drafts(self, alpha: float, num_drafts: int) -> int:
        """Geometric acceptance: draft i is kept only if drafts 1..i-1 were and a coin says so."""
        if num_drafts <= 0 or alpha <= 0:
            return 0
        draws = self.rng.random(num_drafts)
        rejected = np.nonzero(draws >= alpha)[0]
        return int(rejected[0]) if rejected.size else num_drafts

    def execute(self, plan: StepPlan, requests: Mapping[str, Request]) -> StepResult:
        produced: dict[str, int] = {}
        finished: set[str] = set()
        for item in plan.items:
            req = requests.get(item.request_id)
            if req is None:
                continue
            if req.num_computed_tokens + item.num_tokens < req.num_tokens:
                continue  # a prefill chunk that does not finish the prompt produces nothing
            # the true acceptance rate is the engine's (ground truth the policy never sees)
            count = 1 + self.accepted_drafts(self.default_alpha, item.spec_draft_tokens)
            limit = req.output_tokens
            if req.max_new_tokens is not None:
                limit = min(limit, req.max_new_tokens)
            count = max(min(count, limit - req.num_output_tokens), 1)
            produced[item.request_id] = count
            if req.num_output_tokens + count >= limit:
                finished.add(item.request_id)
        return StepResult(self.step_time_s(plan), produced, frozenset(finished))
