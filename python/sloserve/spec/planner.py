"""Speculative batch planner: the prefill budget admitted speculative decodes leave, over time.

Mirrors ``sloserve.planner.batch`` (the non-speculative planner) and returns its ``StepGrid`` and
``Forecast`` types, so the DP admission and the executor take either planner unchanged:

* the step length is ``tau`` from ``choose_tier_lengths`` (a tier with TPOT ``P`` verifying ``s``
  positions may stretch a step to ``P * g(s)``, ``g`` = planned tokens per step), instead of
  the tightest TPOT; a step holds ``max_tokens_within_s(tau, spec_steps)`` tokens, which pays
  for the drafts through the batch-time model's spec_steps term;
* a decode is *forced* into a step when its next token is due by ``start + 2 tau`` (the same
  rule as the non-speculative planner), and a forced step of a tier-``P`` decode costs ``s``
  verified positions instead of one token. In expectation a forced step advances the request
  ``g(s)`` tokens, i.e. ``g(s) * P`` seconds of deadline, so its forced steps by a horizon
  ``T`` number ``floor((T - first_due) / (g(s) P)) + 1`` (at most one per step, at most
  ``ceil(tokens left / g(s))`` in all).

Decode deadlines stay guaranteed whatever the draws: the executor ends every step by the
earliest next-token deadline and every verify produces at least one token (docs/speculative.md).
Only the prefill budget is an expectation; ``safety_margin`` keeps it on the safe side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from sloserve.planner.batch import EPS_S, DecodeLoad, Forecast, StepGrid
from sloserve.spec.acceptance import planned_tokens
from sloserve.spec.lengths import LengthChoice, TierLoad, choose_tier_lengths


@dataclass(frozen=True)
class TierSpecPlan:
    """Lengths chosen for the SLO tier's current mix: per TPOT, positions and planned tokens."""

    choice: LengthChoice | None
    positions_by_tpot: Mapping[float, int]
    tokens_by_tpot: Mapping[float, float]  # planned tokens per verify step, g(s)

    @property
    def spec_steps(self) -> int:
        return self.choice.spec_steps if self.choice is not None else 0

    @property
    def step_len_s(self) -> float | None:
        return self.choice.step_len_s if self.choice is not None else None

    def positions(self, tpot_s: float) -> int:
        return self.positions_by_tpot.get(tpot_s, 1)

    def tokens(self, tpot_s: float) -> float:
        return self.tokens_by_tpot.get(tpot_s, 1.0)

    def effective_tpot_s(self, tpot_s: float) -> float:
        """Seconds of step time per verified position a decode of this TPOT needs (fluid bound
        for the DP: ``n * T / effective_tpot`` positions by horizon T)."""
        return tpot_s * self.tokens(tpot_s) / self.positions(tpot_s)


NO_SPEC = TierSpecPlan(None, {}, {})


def plan_tiers(perf, spec, decodes: Sequence[tuple[float, float]], kv_read_tokens: int = 0) -> TierSpecPlan:
    """Choose lengths for decodes given as (tpot_s, alpha) pairs; NO_SPEC when speculation is off
    or no length beats ordinary decoding's step (then the caller plans as without speculation)."""
    if spec is None or not spec.enabled or not decodes:
        return NO_SPEC
    by_tpot: dict[float, list[float]] = {}
    for tpot, alpha in decodes:
        by_tpot.setdefault(tpot, []).append(alpha)
    keys = sorted(by_tpot)
    # the tier's slowest-accepting member bounds its planned progress
    tiers = [TierLoad(p, len(by_tpot[p]), min(by_tpot[p])) for p in keys]
    if spec.mode == "fixed":
        choice = _fixed_choice(perf, tiers, spec, kv_read_tokens)
    else:
        choice = choose_tier_lengths(
            perf, tiers, spec.max_spec_len, spec.safety_margin, kv_read_tokens, spec.uniform_len
        )
    if choice is None or choice.spec_steps == 0:
        return NO_SPEC
    positions = dict(zip(keys, choice.positions))
    tokens = {p: planned_tokens(t.alpha, positions[p], spec.safety_margin) for p, t in zip(keys, tiers)}
    return TierSpecPlan(choice, positions, tokens)


def _fixed_choice(perf, tiers: list[TierLoad], spec, kv_read_tokens: int) -> LengthChoice | None:
    """The fixed ablation: every tier verifies ``fixed_len`` positions; the step is as long as the
    tightest tier allows."""
    s = spec.fixed_len
    tau = min(t.tpot_s * planned_tokens(t.alpha, s, spec.safety_margin) for t in tiers)
    tokens = int(perf.max_tokens_within_s(tau - EPS_S, s - 1, kv_read_tokens))
    decode = sum(t.num_decodes * s for t in tiers)
    return LengthChoice(tuple([s] * len(tiers)), s - 1, tau, tokens, decode) if tokens >= decode else None


@dataclass(frozen=True)
class SpecDecodeLoad:
    """``DecodeLoad`` plus, per row, verified positions per forced step and forced-step spacing."""

    base: DecodeLoad
    positions: np.ndarray  # s_i
    spacing_s: np.ndarray  # g(s_i) * tpot_i: deadline time one expected verify step covers
    max_steps: np.ndarray  # ceil(tokens left / g(s_i))

    def __len__(self) -> int:
        return len(self.base)


def spec_load(load: DecodeLoad, tiers: TierSpecPlan, lead_s: float = 0.0) -> SpecDecodeLoad:
    """Attach the tier plan's lengths to each decode stream of ``load`` (keyed by its TPOT).

    ``lead_s``: the executor forces a decode this much earlier than its due time (its first
    forced step comes earlier; the count per horizon only grows, so the forecast stays safe)."""
    if lead_s:
        load = DecodeLoad(load.first_due_s - lead_s, load.tpot_s, load.cap_tokens)
    tp = load.tpot_s
    pos = np.array([tiers.positions(float(p)) for p in tp], dtype=np.int64)
    g = np.array([tiers.tokens(float(p)) for p in tp], dtype=np.float64)
    steps = np.ceil(load.cap_tokens / np.maximum(g, 1.0) - EPS_S).astype(np.int64)
    return SpecDecodeLoad(load, pos, tp * g, np.maximum(steps, 0))


def spec_forced_by(grid: StepGrid, load: SpecDecodeLoad, m) -> np.ndarray:
    """Total verified positions of forced decodes in the first m steps, for each m given."""
    m = np.atleast_1d(np.asarray(m, dtype=np.int64))
    if len(load) == 0:
        return np.zeros(m.shape, dtype=np.int64)
    horizon = grid.forced_horizon_s(m)
    due = np.floor((horizon[None, :] - load.base.first_due_s[:, None]) / load.spacing_s[:, None] + EPS_S) + 1
    due = np.where(np.isnan(due), 0, due)  # +inf horizon (stretched step 0): every stream counts
    steps = np.clip(due, 0, load.max_steps[:, None])
    steps = np.minimum(steps, m[None, :])
    return (steps * load.positions[:, None]).sum(axis=0).astype(np.int64)


def spec_forecast(grid: StepGrid, load: SpecDecodeLoad, deadlines_s) -> Forecast:
    """Prefill budget by each deadline after the forced speculative decodes (planner.batch's
    ``forecast`` with positions per forced step). Infeasible when all decodes verifying at
    once would not fit one step."""
    d = np.atleast_1d(np.asarray(deadlines_s, dtype=np.float64))
    m = grid.steps_by(d)
    forced = spec_forced_by(grid, load, m)
    budget = grid.tokens_by(m) - forced
    feasible = int(load.positions.sum()) <= min(grid.first_tokens, grid.step_tokens)
    return Forecast(grid, d, m, grid.forced_horizon_s(m), budget.astype(np.int64), feasible)


def make_spec_grid(
    perf, start_s: float, tiers: TierSpecPlan, earliest_due_s: float, kv_read_tokens: int = 0
) -> StepGrid:
    """The speculative step grid: steps of ``tau`` seconds at the plan's draft-step count; the
    first ends by the earliest decode deadline (the guarantee for tokens already due)."""
    step = tiers.step_len_s
    if step is None:
        raise ValueError("make_spec_grid needs a tier plan with speculation")
    first = min(step, earliest_due_s - start_s) if np.isfinite(earliest_due_s) else step
    first = max(first, 1e-6)

    def tokens(length_s: float) -> int:
        return int(perf.max_tokens_within_s(length_s - EPS_S, tiers.spec_steps, kv_read_tokens))

    return StepGrid(start_s, first, step, tokens(first), tokens(step))


def expand_load(load: DecodeLoad, tiers: TierSpecPlan, lead_s: float = 0.0) -> DecodeLoad:
    """The same forced positions as ``spec_load`` in planner.batch's own ``DecodeLoad`` form: a
    stream verifying ``s`` positions per forced step becomes ``s`` streams with spacing
    ``g(s) * P`` and ``ceil(tokens left / g(s))`` tokens each. The non-speculative ``forecast``
    and DP admission then count speculative decodes exactly as ``spec_forecast`` does."""
    if len(load) == 0:
        return load
    sl = spec_load(load, tiers, lead_s)
    reps = sl.positions
    return DecodeLoad(
        np.repeat(sl.base.first_due_s, reps),
        np.repeat(sl.spacing_s, reps),
        np.repeat(sl.max_steps, reps).astype(np.int64),
    )
