"""Per-stage SLO attainment from token timestamps. Shared by the simulator, runtime and bench.

A stage meets its SLO iff it was served (not rejected) and: the first token came within the
TTFT SLO, and every later token i came by ``t0 + sum of TPOT SLOs of tokens 2..i``, where
``t0 = max(TTFT deadline, actual first-token time)``. ``tolerance`` (default 5%) stretches
each relative deadline; ``check_every`` > 1 gives the coarser variant that checks only every
N-th token (and the last one).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sloserve.core.slo import DecodeSegment

DEFAULT_TOLERANCE = 0.05


def tpot_array_s(segments: Sequence[DecodeSegment], num_output_tokens: int) -> np.ndarray:
    """TPOT SLO (s) of output tokens 1..num_output_tokens (token 1's entry is unused, 0)."""
    out = np.zeros(num_output_tokens, dtype=np.float64)
    start = 0  # index of the segment's first token (0-based output index)
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        end = num_output_tokens if (last or seg.num_tokens is None) else min(start + seg.num_tokens, num_output_tokens)
        out[start:end] = seg.tpot_ms / 1e3
        start = end
        if start >= num_output_tokens:
            break
    if num_output_tokens:
        out[0] = 0.0
    return out


def token_deadlines_s(
    arrival_s: float,
    ttft_slo_s: float,
    segments: Sequence[DecodeSegment],
    token_times_s: Sequence[float],
    tolerance: float = DEFAULT_TOLERANCE,
) -> np.ndarray:
    """Deadline of each output token actually produced, tolerance included."""
    times = np.asarray(token_times_s, dtype=np.float64)
    n = times.size
    if n == 0:
        return times
    ttft_deadline = arrival_s + ttft_slo_s
    t0 = max(ttft_deadline, float(times[0]))
    cum = np.cumsum(tpot_array_s(segments, n))
    deadlines = t0 + cum * (1.0 + tolerance)
    deadlines[0] = arrival_s + ttft_slo_s * (1.0 + tolerance)
    return deadlines


def stage_attained(
    arrival_s: float,
    ttft_slo_s: float,
    segments: Sequence[DecodeSegment],
    token_times_s: Sequence[float],
    tolerance: float = DEFAULT_TOLERANCE,
    check_every: int = 1,
) -> bool:
    """True iff every checked token met its (tolerance-stretched) deadline."""
    times = np.asarray(token_times_s, dtype=np.float64)
    if times.size == 0:
        return False
    deadlines = token_deadlines_s(arrival_s, ttft_slo_s, segments, times, tolerance)
    if check_every > 1:
        idx = np.unique(np.r_[np.arange(0, times.size, check_every), times.size - 1])
        return bool(np.all(times[idx] <= deadlines[idx] + 1e-12))
    return bool(np.all(times <= deadlines + 1e-12))
