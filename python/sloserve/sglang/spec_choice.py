"""SLO-aware speculation length (pure): the batch's draft steps from its tightest TPOT.

A verify step with ``k`` drafts and per-draft acceptance ``alpha`` yields on average
``(1 - alpha**(k+1)) / (1 - alpha)`` tokens per request. The step takes the batch-time model's
``batch_time_s(bs * (k + 1), k, kv_read)``. We choose the largest candidate ``k`` whose time per
expected token fits the tightest TPOT SLO in the batch (more drafts = more throughput while the
SLO holds); if none fits, the ``k`` with the smallest time per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def expected_tokens(alpha: float, k: int) -> float:
    if k <= 0:
        return 1.0
    if alpha >= 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def choose_steps(
    candidates: Sequence[int], tpot_s: float, alpha: float, batch_size: int, kv_read_tokens: int, perf
) -> int:
    if not candidates:
        raise ValueError("no candidate speculative steps")
    bs = max(int(batch_size), 1)
    per_token = {}
    for k in sorted(set(int(c) for c in candidates)):
        step_s = perf.batch_time_s(bs * (k + 1), k, kv_read_tokens, 0.0, bs)
        per_token[k] = step_s / expected_tokens(alpha, k)
    fitting = [k for k, t in per_token.items() if t <= tpot_s]
    if fitting:
        return max(fitting)
    return min(per_token, key=lambda k: (per_token[k], k))


@dataclass
class AlphaEstimator:
    """Per-draft acceptance from verify outcomes, as an exponential moving average.

    With ``k`` drafts, the accepted count ``a`` of one request has mean sum_{i=1..k} alpha**i;
    a batch's mean accepted count is inverted by bisection (monotone in alpha).
    """

    alpha: float = 0.6
    weight: float = 0.2

    def update(self, accepted_per_req: Sequence[int], k: int) -> float:
        if k <= 0 or not accepted_per_req:
            return self.alpha
        mean = min(max(sum(accepted_per_req) / len(accepted_per_req), 0.0), float(k))
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            if expected_tokens(mid, k) - 1.0 < mean:
                lo = mid
            else:
                hi = mid
        self.alpha = (1 - self.weight) * self.alpha + self.weight * lo
        return self.alpha
