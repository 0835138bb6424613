"""Online calibration of how fast an admitted request's KV grows (``kv_growth_calibrate``).

The KV profile (planner/kvprofile.py) counts each resident as growing at the fastest rate the
engine allows; under speculation that is every draft accepted in a step that carries this
request alone (95 tokens/s on opt-13b-tp2-a100 with 4 positions). Loaded, a request gains far
less: on the authors' chatbot window the full system's residents gained about
31 tokens/s (2.4 accepted tokens per 79 ms step), so the profile counted every resident at its
full size seconds before it got there and the pool held a fifth idle while arrivals were refused
for KV (docs/results.md §3b, stop 34).

Like the batch-time calibration (planner/calibrate.py) this measures instead: every step adds,
for each resident decoding for at least ``window_s``, the tokens it gained over the last
``window_s`` seconds; the profile then counts a rate of ``margin`` x the ``quantile`` of those
samples (never above the physical bound, which also holds until ``min_samples`` are in). A
resident that outgrows it takes KV the profile did not count: best-effort requests are preempted
first (planner/executor.py), and the executor counts a forced decode left without KV as
``decode_overload``. Used under speculation only: without it one token per step is what a
request gains when steps are short, and counting less lost capacity (docs/planner.md §3b).
"""

from __future__ import annotations

from collections import deque

import numpy as np

WINDOW_S = 1.0  # the span one sample covers
SAMPLES = 4096  # most recent samples kept
MIN_SAMPLES = 256  # samples before the calibrated rate replaces the physical bound
REFRESH_SAMPLES = 64  # new samples before the quantile is taken again


class GrowthCalibration:
    """Samples of residents' token gains over ``window_s`` and their calibrated rate."""

    def __init__(self, quantile: float, margin: float, window_s: float = WINDOW_S) -> None:
        if not (0 < quantile <= 1 and margin >= 1 and window_s > 0):
            raise ValueError("growth calibration needs a quantile in (0, 1], a margin >= 1 and a window > 0")
        self.quantile, self.margin, self.window_s = quantile, margin, window_s
        self._recent: dict[str, deque] = {}  # request id -> (step end, tokens) within the window
        self._samples: deque = deque(maxlen=SAMPLES)
        self._fresh = 0  # samples since the quantile was last taken
        self._rate_tps: float | None = None

    def observe(self, items, produced: dict, residents: dict, now_s: float) -> None:
        """A step ending at ``now_s`` carried ``items`` and produced ``produced`` tokens per
        request; ``residents`` are the admitted requests (id -> request)."""
        since = now_s - self.window_s
        for item in items:
            r = residents.get(item.request_id)
            if r is None:
                continue
            got = self._recent.setdefault(item.request_id, deque())
            got.append((now_s, int(produced.get(item.request_id, 0))))
            while got and got[0][0] <= since:
                got.popleft()
            if r.first_token_s is not None and r.first_token_s <= since:  # decoding the whole window
                self._samples.append(sum(n for _, n in got))
                self._fresh += 1
        for rid in [rid for rid in self._recent if rid not in residents]:
            del self._recent[rid]

    def rate_tps(self) -> float | None:
        """Tokens a second the profile counts per resident, or None while samples are few."""
        if len(self._samples) < MIN_SAMPLES:
            return None
        if self._rate_tps is None or self._fresh >= REFRESH_SAMPLES:
            q = float(np.quantile(np.fromiter(self._samples, dtype=np.float64), self.quantile))
            self._rate_tps = max(q, 1.0) / self.window_s * self.margin
            self._fresh = 0
        return self._rate_tps
