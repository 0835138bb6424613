"""Online output-length predictor (``output_length="learn"``): no model weights.

The prediction for a request is an empirical upper quantile (``length_quantile``) of the output
lengths of recently finished requests with the same SLO class and prompt-length bucket (powers of
two), learned online from completions. Until a bucket has ``length_min_samples`` lengths the
class's pooled lengths are used, and until the class has that many the prior: the request's
``max_new_tokens`` (what reserve mode plans: safe, merely costly), so predictions only ever
start conservative.

When a request reaches its prediction and goes on (``extend``): the new prediction is the same
quantile of the lengths observed *beyond* its current length (conditional on having come this
far), or twice the current length when too few are known, never above ``max_new_tokens``. The
policy keeps the extension only if the plan stays feasible and the KV fits; otherwise it demotes
the request to best effort (planner/policy.py ``_track_lengths``), so the admitted rest keep
their guarantee.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from sloserve.core.request import Request


def prompt_bucket(prompt_tokens: int) -> int:
    """Power-of-two bucket of a prompt length (0: up to 64 tokens, then 128, 256, ...)."""
    return max(int(math.ceil(math.log2(max(prompt_tokens, 1)))) - 6, 0)


class LengthPredictor:
    def __init__(self, quantile: float = 0.9, min_samples: int = 20, window: int = 1000) -> None:
        if not 0 < quantile <= 1 or min_samples < 1 or window < min_samples:
            raise ValueError("need 0 < quantile <= 1, min_samples >= 1 and window >= min_samples")
        self.quantile, self.min_samples, self.window = quantile, min_samples, window
        self._by_key: dict[tuple[str, int], deque] = {}
        self._by_class: dict[str, deque] = {}

    def observe(self, slo_class: str, prompt_tokens: int, output_tokens: int) -> None:
        """A request finished with this many output tokens."""
        for table, key in ((self._by_key, (slo_class, prompt_bucket(prompt_tokens))), (self._by_class, slo_class)):
            q = table.get(key)
            if q is None:
                q = table[key] = deque(maxlen=self.window)
            q.append(int(output_tokens))

    def samples(self, r: Request) -> deque | None:
        """The lengths a prediction for ``r`` rests on (its bucket, else its class), or None."""
        got = self._by_key.get((r.slo_class, prompt_bucket(r.prompt_tokens)))
        if got is not None and len(got) >= self.min_samples:
            return got
        got = self._by_class.get(r.slo_class)
        return got if got is not None and len(got) >= self.min_samples else None

    def predict(self, r: Request, prior: int) -> int:
        """Planned output length of a request that has not started decoding."""
        s = self.samples(r)
        pred = prior if s is None else int(np.quantile(np.fromiter(s, dtype=np.int64), self.quantile, method="higher"))
        return self._clamp(r, pred)

    def extend(self, r: Request) -> int:
        """A longer plan for a request that reached its prediction and is still going."""
        done = r.num_output_tokens
        s = self.samples(r)
        longer = None if s is None else np.fromiter((x for x in s if x > done + 1), dtype=np.int64)
        if longer is not None and longer.size >= max(self.min_samples // 4, 1):
            pred = int(np.quantile(longer, self.quantile, method="higher"))
        else:
            pred = 2 * max(done, 1)
        return self._clamp(r, pred)

    @staticmethod
    def _clamp(r: Request, pred: int) -> int:
        if r.max_new_tokens is not None:
            pred = min(pred, r.max_new_tokens)
        return max(pred, r.num_output_tokens + 1)
