"""Batch-time model interface.

A batch is described by scalars so the planner's inner loops stay cheap:
``num_tokens`` every token computed (prefill chunk tokens, decode tokens, verified drafts),
``spec_steps`` draft-model steps, ``kv_read_tokens`` the KV context the batch's attention reads
(sum over items of the context before the step), ``attn_pairs`` the prefill-attention work
(sum over items of n * (context + n / 2)), ``num_requests`` the requests in the batch (a serving
loop pays per request too: sampling, bookkeeping, the output path; 0 = not charged, how callers
that do not know the batch's requests ask). Forms that ignore a term simply do not use it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable

import numpy as np

from sloserve.core.plan import StepPlan


class BatchTimeModel(ABC):
    """Predicts the wall time of one engine step."""

    name: str = ""

    @abstractmethod
    def batch_time_s(
        self,
        num_tokens: int,
        spec_steps: int = 0,
        kv_read_tokens: int = 0,
        attn_pairs: float = 0.0,
        num_requests: int = 0,
    ) -> float:
        """Seconds for a batch of this shape."""

    def max_tokens_within_s(
        self, time_s: float, spec_steps: int = 0, kv_read_tokens: int = 0, num_requests: int = 0
    ) -> int:
        """Largest ``num_tokens`` whose batch time is at most ``time_s`` (0 if even 1 does not fit)
        in a batch of ``num_requests`` requests.

        Generic version: exponential then binary search (monotone in num_tokens). Forms with a
        closed-form inverse override it.
        """

        def time_of(n: int) -> float:
            return self.batch_time_s(n, spec_steps, kv_read_tokens, 0.0, num_requests)

        if time_of(1) > time_s:
            return 0
        hi = 1
        while time_of(hi * 2) <= time_s:
            hi *= 2
            if hi >= 1 << 24:
                return hi
        lo, hi = hi, hi * 2  # batch_time(lo) fits, batch_time(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if time_of(mid) <= time_s:
                lo = mid
            else:
                hi = mid
        return lo

    def zero_load_prefill_s(self, prompt_tokens: int) -> float:
        """Time to prefill ``prompt_tokens`` alone on an idle engine (the TTFT slowdown base)."""
        return self.batch_time_s(prompt_tokens, 0, 0, prompt_tokens * (prompt_tokens + 1) / 2, 1)

    def one_token_step_s(self) -> float:
        """The shortest step: one token of one request."""
        return self.batch_time_s(1, num_requests=1)

    def max_decodes_within_s(self, time_s: float, kv_read_tokens: int = 0) -> int:
        """Largest ``n`` such that ``n`` one-token decodes (n tokens, n requests, reading
        ``kv_read_tokens`` in all) run within ``time_s``: a decode batch's size, which a model
        that charges per request bounds more tightly than ``max_tokens_within_s``."""
        lo, hi = 0, self.max_tokens_within_s(time_s, 0, kv_read_tokens) + 1  # hi tokens alone do not fit
        while hi - lo > 1:  # the time is monotone in n
            mid = (lo + hi) // 2
            if self.batch_time_s(mid, 0, kv_read_tokens, 0.0, mid) <= time_s:
                lo = mid
            else:
                hi = mid
        return lo

    def plan_time_s(self, plan: StepPlan) -> float:
        """Batch time of a step plan (the simulated engine's step duration)."""
        return self.batch_time_s(*plan_shape(plan.items, plan.spec_steps))


def plan_shape(items: Iterable, spec_steps: int = 0) -> tuple[int, int, int, float, int]:
    """(num_tokens, spec_steps, kv_read_tokens, attn_pairs, num_requests) of scheduled items."""
    num_tokens = 0
    kv_read = 0
    pairs = 0.0
    num_requests = 0
    for item in items:
        num_tokens += item.num_tokens
        kv_read += item.context_tokens
        pairs += item.num_tokens * (item.context_tokens + (item.num_tokens + 1) / 2)
        num_requests += 1
    return num_tokens, spec_steps, kv_read, pairs, num_requests


def extend_requests(num_tokens, num_requests):
    """The requests of an *extend batch*, one that computes prefill tokens (more tokens than
    requests: a chunk, alone or with decodes riding along), else 0; scalars or arrays alike."""
    return np.multiply(num_requests, np.greater(num_tokens, num_requests))


class ScaledModel(BatchTimeModel):
    """``base`` with every step ``factor`` times as long: an engine whose true mean speed
    differs from a fitted model by a known factor (the simulator's ``--step-time-bias-known``)."""

    def __init__(self, base: BatchTimeModel, factor: float) -> None:
        if not factor > 0:
            raise ValueError(f"scale factor must be positive, got {factor}")
        self.base, self.factor = base, factor
        self.name = f"{getattr(base, 'name', '')}x{factor:g}"

    def batch_time_s(
        self,
        num_tokens: int,
        spec_steps: int = 0,
        kv_read_tokens: int = 0,
        attn_pairs: float = 0.0,
        num_requests: int = 0,
    ) -> float:
        return self.factor * self.base.batch_time_s(num_tokens, spec_steps, kv_read_tokens, attn_pairs, num_requests)

    def max_tokens_within_s(
        self, time_s: float, spec_steps: int = 0, kv_read_tokens: int = 0, num_requests: int = 0
    ) -> int:
        return self.base.max_tokens_within_s(time_s / self.factor, spec_steps, kv_read_tokens, num_requests)
