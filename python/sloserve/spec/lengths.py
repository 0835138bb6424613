"""Speculation length choice: per TPOT tier (SLO-adaptive), per batch (goodput), or fixed.

Lengths are counted in *verified positions* ``s`` (``s - 1`` drafts plus the last real token);
``s = 1`` is ordinary decoding. One batch runs one draft-step count, ``spec_steps = max(s) - 1``
(SGLang's EAGLE runs one step count per batch); a tier with a shorter length verifies only its
first ``s_i`` positions (``uniform=True`` gives every decode the batch's length instead).

SLO-adaptive choice (``choose_tier_lengths``): a tier with TPOT ``P_i`` whose decodes verify
``s_i`` positions advances ``g(s_i)`` planned tokens per step (``planned_tokens``), so a step
may last ``tau <= P_i * g(s_i)`` for every tier present. The step holds
``max_tokens_within_s(tau, max s - 1)`` tokens. A decode joins a step when its next token is
due (the planner's forced rule), i.e. once per ``g(s_i) * P_i`` seconds, so the decodes need
``sum_i n_i s_i / (g(s_i) P_i)`` verified positions per second and the rest is prefill budget;
the objective is prefill tokens per second, subject to every decode fitting one step together.
For a fixed assignment the best step is the longest allowed one (tokens per second grow with
the step length under a batch-time model affine in tokens), so the optimum has
``tau = P_j * g(s_j)`` for some tier j and length; given tau, each tier's best length is the
smallest s with ``P_i * g(s) >= tau`` (``s / g(s)`` grows with s, and so do the draft steps).
Enumerating the T*K candidate taus is therefore an exact search, O(T^2 K) model evaluations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

from sloserve.spec.acceptance import expected_tokens, planned_tokens

EPS_S = 1e-9
MAX_PRODUCT = 4096  # exhaustive per-tier search limit for the decode-only objective


@dataclass(frozen=True)
class TierLoad:
    """Decodes of one TPOT tier in a batch: their count and the (conservative) alpha to plan on."""

    tpot_s: float
    num_decodes: int
    alpha: float


@dataclass(frozen=True)
class LengthChoice:
    """Per-tier verified positions (aligned with the tiers given) and the resulting step."""

    positions: tuple[int, ...]
    spec_steps: int
    step_len_s: float
    step_tokens: int
    decode_tokens: int  # every decode verifying in the same step (the feasibility bound)
    decode_rate_tps: float = 0.0  # verified positions per second the decodes need (fluid)

    @property
    def prefill_tokens(self) -> int:
        """Prefill room of a step carrying every decode."""
        return self.step_tokens - self.decode_tokens

    @property
    def prefill_rate_tps(self) -> float:
        """Prefill tokens per second over many steps: decodes join a step only when due."""
        if self.step_len_s <= 0:
            return 0.0
        return self.step_tokens / self.step_len_s - self.decode_rate_tps


def _evaluate(
    perf, tiers: Sequence[TierLoad], positions: tuple[int, ...], tau: float, kv_read_tokens: int, safety_margin: float
) -> LengthChoice | None:
    spec_steps = max(positions) - 1
    tokens = int(perf.max_tokens_within_s(tau - EPS_S, spec_steps, kv_read_tokens))
    decode = sum(t.num_decodes * s for t, s in zip(tiers, positions))
    if tokens < decode:
        return None
    # a tier-i decode needs one verify step per g(s_i) * P_i seconds of deadline
    rate = sum(
        t.num_decodes * s / (t.tpot_s * planned_tokens(t.alpha, s, safety_margin)) for t, s in zip(tiers, positions)
    )
    return LengthChoice(positions, spec_steps, tau, tokens, decode, rate)


def choose_tier_lengths(
    perf, tiers: Sequence[TierLoad], max_len: int, safety_margin: float, kv_read_tokens: int = 0, uniform: bool = False
) -> LengthChoice | None:
    """Exact search for the per-tier lengths maximizing prefill tokens per second.

    Returns None when no assignment even fits the decodes (the caller falls back to s = 1
    everywhere with the non-speculative planner). Ties prefer the shorter step.
    """
    tiers = [t for t in tiers if t.num_decodes > 0]
    if not tiers:
        return None
    allowed = [[t.tpot_s * planned_tokens(t.alpha, s, safety_margin) for s in range(1, max_len + 1)] for t in tiers]
    candidates = sorted({tau for row in allowed for tau in row})
    best: LengthChoice | None = None
    for tau in candidates:
        positions = []
        for row in allowed:
            s = next((i + 1 for i, a in enumerate(row) if a >= tau - EPS_S), None)
            if s is None:
                break
            positions.append(s)
        if len(positions) != len(tiers):
            continue
        if uniform:
            positions = [max(positions)] * len(positions)
        choice = _evaluate(perf, tiers, tuple(positions), tau, kv_read_tokens, safety_margin)
        if choice is not None and (best is None or choice.prefill_rate_tps > best.prefill_rate_tps + 1e-9):
            best = choice
    return best


def goodput_length(perf, alphas: Sequence[float], prefill_tokens: int, max_len: int, kv_read_tokens: int = 0) -> int:
    """One length for the whole batch maximizing expected decode tokens per second.

    The SmartSpec rule (also behind vLLM's and SGLang's batch-size-driven adaptive
    speculation): drafts pay off while the step is dominated by fixed costs, and stop paying
    off once verifying extra positions costs more time than the accepted tokens save.
    """
    if not alphas:
        return 1
    n = len(alphas)
    best_s, best_rate = 1, -1.0
    for s in range(1, max_len + 1):
        produced = sum(expected_tokens(a, s) for a in alphas)
        step = perf.batch_time_s(prefill_tokens + n * s, s - 1, kv_read_tokens)
        rate = produced / step if step > 0 else 0.0
        if rate > best_rate + 1e-12:
            best_s, best_rate = s, rate
    return best_s


def constrained_lengths(
    perf,
    tiers: Sequence[TierLoad],
    fixed_tokens: int,
    max_len: int,
    safety_margin: float,
    time_limit_s: float,
    kv_read_tokens: int = 0,
    uniform: bool = False,
) -> tuple[int, ...]:
    """Per-tier lengths for a batch whose other ``fixed_tokens`` are already chosen.

    Maximizes expected decode tokens while the step time stays within every tier's
    ``P_i * g(s_i)`` and within ``time_limit_s`` (the earliest next-token deadline). Used by
    the decorator that adds SLO-aware speculation to a policy's own batch. All ones when
    nothing longer fits.
    """
    k = len(tiers)
    ones = (1,) * k
    if k == 0:
        return ones
    if uniform or max_len**k > MAX_PRODUCT:
        space = [(s,) * k for s in range(1, max_len + 1)]
    else:
        space = itertools.product(range(1, max_len + 1), repeat=k)
    best, best_tokens = ones, -1.0
    for positions in space:
        limit = min(
            [time_limit_s] + [t.tpot_s * planned_tokens(t.alpha, s, safety_margin) for t, s in zip(tiers, positions)]
        )
        tokens = fixed_tokens + sum(t.num_decodes * s for t, s in zip(tiers, positions))
        if perf.batch_time_s(tokens, max(positions) - 1, kv_read_tokens) > limit + EPS_S and positions != ones:
            continue
        gain = sum(t.num_decodes * expected_tokens(t.alpha, s) for t, s in zip(tiers, positions))
        if gain > best_tokens + 1e-9:
            best, best_tokens = tuple(positions), gain
    return best
